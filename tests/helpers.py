"""Helpers shared by the core tests: a plain-Python model of sessions and comparisons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import memseg


@dataclass
class ModelAction:
    kind: str
    ts_ns: int
    payload: Any
    result: Any


@dataclass
class ModelSession:
    name: str | None
    meta: dict[str, Any]
    actions: list[ModelAction] = field(default_factory=list)
    checkpoints: list[tuple[int, int, Any]] = field(default_factory=list)  # id, at_seq, value
    state: str = "active"
    status: str | None = None


def assert_session_matches(session: memseg.Session, model: ModelSession) -> None:
    """Every stored field of ``session`` equals the model's."""
    info = session.info
    assert info.name == model.name
    assert info.meta == model.meta
    assert info.state == model.state
    assert info.status == model.status
    assert info.action_count == len(model.actions)
    assert len(session.actions) == len(model.actions)
    assert list(session.actions.seq) == list(range(len(model.actions)))
    assert list(session.actions.ts_ns) == [a.ts_ns for a in model.actions]
    for seq, (got, want) in enumerate(zip(session.actions, model.actions, strict=True)):
        assert got.seq == seq
        assert got.kind == want.kind
        assert got.ts_ns == want.ts_ns
        assert got.value() == want.payload
        assert got.result_value() == want.result
        assert (got.result is None) == (want.result is None)
    got_ck = [(c.id, c.at_seq, c.value()) for c in session.checkpoints]
    assert got_ck == model.checkpoints
    counts: dict[str, int] = {}
    for a in model.actions:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    assert session.actions.kind_counts() == counts

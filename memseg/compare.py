"""Compare two sessions action by action: kinds, payloads, results (and checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import zip_longest

from memseg.model import Action, SessionInfo
from memseg.view import Session


@dataclass(frozen=True, slots=True)
class Difference:
    """One action that differs: which parts, and the two actions (None where one is missing)."""

    seq: int
    # Parts that differ: "kind", "payload", "result", "ts" (only when timestamps are compared),
    # or "missing" when one session has no action at this seq.
    parts: tuple[str, ...]
    a: Action | None
    b: Action | None


@dataclass(slots=True)
class DiffReport:
    """How two sessions compare."""

    a: SessionInfo
    b: SessionInfo
    compared: int = 0
    differing: int = 0
    # The first differences (up to the limit asked for).
    differences: list[Difference] = field(default_factory=list)
    checkpoints_differ: bool = False

    @property
    def same(self) -> bool:
        """True when no action and no checkpoint differs."""
        return not self.differing and not self.checkpoints_differ


def _parts(a: Action, b: Action, timestamps: bool) -> tuple[str, ...]:
    parts = []
    if a.kind != b.kind:
        parts.append("kind")
    if a.payload != b.payload or a.payload_type != b.payload_type:
        parts.append("payload")
    if a.result != b.result or (a.result is not None and a.result_type != b.result_type):
        parts.append("result")
    if timestamps and a.ts_ns != b.ts_ns:
        parts.append("ts")
    return tuple(parts)


def diff_sessions(a: Session, b: Session, *, limit: int | None = 100,
                  timestamps: bool = False) -> DiffReport:
    """Compare ``a`` and ``b`` in seq order; keeps the first ``limit`` differences (None: all)."""
    report = DiffReport(a.info, b.info)
    for seq, (x, y) in enumerate(zip_longest(a.actions, b.actions)):
        report.compared += 1
        parts = ("missing",) if x is None or y is None else _parts(x, y, timestamps)
        if parts:
            report.differing += 1
            if limit is None or len(report.differences) < limit:
                report.differences.append(Difference(seq, parts, x, y))
    ca = [(c.at_seq, c.snapshot_type, c.snapshot) for c in a.checkpoints]
    cb = [(c.at_seq, c.snapshot_type, c.snapshot) for c in b.checkpoints]
    report.checkpoints_differ = ca != cb
    return report

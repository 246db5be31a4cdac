"""Random sessions survive write, close and reopen exactly."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memseg
from tests.helpers import ModelAction, ModelSession, assert_session_matches

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
payloads = (
    st.binary(max_size=64)
    | st.text(max_size=64)
    | st.dictionaries(st.text(max_size=8), json_values, max_size=5)
    | st.lists(json_values, max_size=5)
    | st.binary(min_size=2000, max_size=5000)
)
results = st.none() | payloads
kinds = st.sampled_from(["think", "tool_call", "tool_output", "message", "diff", "ünïcode-kïnd"])

# One step of a recording: an action, a checkpoint, or a flush.
steps = st.one_of(
    st.tuples(st.just("act"), kinds, payloads, results),
    st.tuples(st.just("ckpt"), st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)),
    st.tuples(st.just("flush")),
)
sessions_strategy = st.lists(
    st.tuples(
        st.none() | st.text(min_size=1, max_size=30),
        st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
        st.lists(steps, max_size=40),
        st.booleans(),
    ),
    min_size=0,
    max_size=4,
)


def record_sessions(path: Path, plan: list[Any]) -> dict[uuid.UUID, ModelSession]:
    clock = itertools.count(1_000_000)
    models: dict[uuid.UUID, ModelSession] = {}
    with memseg.open(path, "a") as store:
        for name, meta, session_steps, end in plan:
            rec = store.start_session(name=name, meta=meta)
            model = ModelSession(name, meta)
            for step in session_steps:
                if step[0] == "act":
                    _, kind, payload, result = step
                    ts = next(clock)
                    assert rec.record(kind, payload, result=result, ts_ns=ts) == len(model.actions)
                    model.actions.append(ModelAction(kind, ts, payload, result))
                elif step[0] == "ckpt":
                    cid = rec.checkpoint(step[1], ts_ns=next(clock))
                    model.checkpoints.append((cid, len(model.actions), step[1]))
                else:
                    rec.flush()
            if end:
                rec.end(status="ok")
                model.state, model.status = "ended", "ok"
            models[rec.id] = model
    return models


@given(plan=sessions_strategy)
def test_random_sessions_round_trip(tmp_path_factory: pytest.TempPathFactory, plan: list[Any]) -> None:
    path = tmp_path_factory.mktemp("rt") / "s.mseg"
    models = record_sessions(path, plan)
    with memseg.open(path) as store:
        infos = store.sessions()
        assert [i.id for i in infos] == list(models)  # oldest first
        for sid, model in models.items():
            assert_session_matches(store.session(sid), model)


def test_empty_session_and_empty_payloads(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        with store.start_session(name="empty"):
            pass
        with store.start_session(name="blank") as rec:
            rec.record("k", b"")
            rec.record("k", "")
            rec.record("k", None)
    with memseg.open(store_path) as store:
        empty = store.session("empty")
        assert len(empty.actions) == 0 and empty.info.state == "ended"
        assert empty.actions.ts_ns.shape == (0,)
        blank = store.session("blank")
        assert [a.value() for a in blank.actions] == [b"", "", None]


def test_large_payload_spans_its_own_block(store_path: Path) -> None:
    big = np.random.default_rng(7).bytes(3 * 1024 * 1024)
    with memseg.open(store_path, "a") as store, store.start_session(name="big") as rec:
        rec.record("small", "before")
        rec.record("blob", big, result=big[:10])
        rec.record("small", "after")
    with memseg.open(store_path) as store:
        actions = store.session("big").actions
        assert actions[1].payload == big and actions[1].result == big[:10]
        assert [a.value() for a in actions[::2]] == ["before", "after"]


def test_many_blocks_slices_and_columns(store_path: Path) -> None:
    n = 30_000
    with memseg.open(store_path, "a", sync="none") as store, store.start_session(name="long") as rec:
        for i in range(n):
            rec.record(f"k{i % 7}", {"i": i, "pad": "x" * (i % 50)}, ts_ns=i * 10)
            if i % 997 == 0:
                rec.flush()
    with memseg.open(store_path) as store:
        actions = store.session("long").actions
        assert len(actions) == n
        assert len(actions.refs) > 4  # several blocks, so the slicing below crosses them
        window = actions[12_345:12_445]
        assert [a.value()["i"] for a in window] == list(range(12_345, 12_445))
        assert actions[-1].seq == n - 1
        assert np.array_equal(actions.ts_ns, np.arange(n) * 10)
        codes = actions.kind_codes
        assert [actions.kinds[c] for c in codes[:8]] == [f"k{i % 7}" for i in range(8)]
        assert actions.kind_counts() == {f"k{j}": len(range(j, n, 7)) for j in range(7)}
        with pytest.raises(IndexError):
            actions[n]
        for key in (1.0, "1"):  # as a list refuses them
            with pytest.raises(TypeError):
                actions[key]  # type: ignore[call-overload]
        assert [a.seq for a in actions[n - 1 : n - 20 : -7]] == list(range(n))[n - 1 : n - 20 : -7]


def test_session_lookup_by_uuid_string_and_name(store_path: Path) -> None:
    fixed = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with memseg.open(store_path, "a") as store:
        store.start_session(name="dup").end()
        store.start_session(name="dup").end()
        store.start_session(name="solo", session_id=fixed).end()
    with memseg.open(store_path) as store:
        assert store.session(fixed).info.name == "solo"
        assert store.session(str(fixed)).info.id == fixed
        assert store.session("solo").info.id == fixed
        with pytest.raises(KeyError):
            store.session("dup")  # ambiguous
        with pytest.raises(KeyError):
            store.session("missing")


def test_values_keep_their_types(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store, store.start_session() as rec:
        rec.record("k", b"raw", result="text")
        rec.record("k", "text", result=[1, 2])
        rec.record("k", {"a": [1, {"b": None}]}, result=b"")
    with memseg.open(store_path) as store:
        a = store.session(store.sessions()[0].id).actions
        assert (a[0].payload, a[0].value(), a[0].result_value()) == (b"raw", b"raw", "text")
        assert (a[1].payload, a[1].value(), a[1].result_value()) == (b"text", "text", [1, 2])
        assert a[2].value() == {"a": [1, {"b": None}]} and a[2].result == b""


def test_kind_counts_over_the_store(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        for s in range(3):
            with store.start_session(name=f"s{s}") as rec:
                for i in range(10 * (s + 1)):
                    rec.record("even" if i % 2 == 0 else f"odd{s}", b"x")
        assert store.kind_counts() == {"even": 30, "odd0": 5, "odd1": 10, "odd2": 15}
    with memseg.open(store_path) as store:
        assert store.kind_counts() == {"even": 30, "odd0": 5, "odd1": 10, "odd2": 15}
        assert store.session("s1").kind_counts() == {"even": 10, "odd1": 10}

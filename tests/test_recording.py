"""Recording behaviour: incremental flushes, threads, resume after a writer died, commit cost."""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import memseg
from memseg.format import BLOCK_MAX_ACTIONS, FILE_HEADER, MAX_META, MAX_VALUE


def _words(i: int) -> dict[str, object]:
    vocab = ["read", "write", "file", "test", "passed", "error", "diff", "src", "main", "ok"]
    return {"i": i, "text": " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(12 + i % 40))}


def _record(path: Path, flush_every: int | None, n: int) -> int:
    with memseg.open(path, "a", sync="none") as store, store.start_session(name="s") as rec:
        for i in range(n):
            rec.record("tool_output", _words(i), ts_ns=i)
            if flush_every and i % flush_every == flush_every - 1:
                rec.flush()
    return path.stat().st_size


def test_frequent_flushes_cost_at_most_a_fifth_more_space(tmp_path: Path) -> None:
    n = 100_000
    single = _record(tmp_path / "one.mseg", None, n)
    frequent = _record(tmp_path / "many.mseg", 100, n)
    assert frequent <= 1.2 * single, (frequent, single)
    with memseg.open(tmp_path / "many.mseg") as store:
        actions = store.session("s").actions
        assert len(actions) == n and actions[n - 1].value() == _words(n - 1)


def test_commit_cost_does_not_grow_with_session_count(tmp_path: Path) -> None:
    path = tmp_path / "wide.mseg"
    with memseg.open(path, "a", sync="none") as store:
        for i in range(3000):
            store.start_session(name=f"s{i}", meta={"i": i}).end()
        rec = store.start_session(name="busy")
        before = path.stat().st_size
        flushes = 200
        for i in range(flushes):
            rec.record("k", "x", ts_ns=i)
            rec.flush()
        per_flush = (path.stat().st_size - before) / flushes
    # A full TOC of 3000 entries is ~300 KB; each flush must write far less on average.
    assert per_flush < 4000, per_flush


def test_threads_record_sessions_concurrently(store_path: Path) -> None:
    errors: list[BaseException] = []

    def work(store: memseg.Store, t: int) -> None:
        try:
            with store.start_session(name=f"t{t}") as rec:
                for i in range(500):
                    rec.record("k", {"t": t, "i": i})
                    if i % 20 == 0:
                        rec.flush()
        except BaseException as exc:
            errors.append(exc)

    with memseg.open(store_path, "a") as store:
        threads = [threading.Thread(target=work, args=(store, t)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors
    with memseg.open(store_path) as store:
        for t in range(6):
            s = store.session(f"t{t}")
            assert s.info.state == "ended"
            assert [a.value() for a in s.actions] == [{"t": t, "i": i} for i in range(500)]


DIE_AFTER_FLUSH = textwrap.dedent("""
    import os, sys, memseg
    store = memseg.open(sys.argv[1], "a")
    rec = store.start_session(name="interrupted", meta={"run": 1})
    for i in range(250):
        rec.record("step", {"i": i}, ts_ns=i)
    rec.checkpoint({"frame": 250}, ts_ns=1000)
    for i in range(250, 300):
        rec.record("step", {"i": i}, ts_ns=i)   # never flushed
    print(rec.id, flush=True)
    os._exit(0)                                # the process dies without closing
""")


def test_resume_after_the_writer_died(store_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", DIE_AFTER_FLUSH, str(store_path)],
                         capture_output=True, text=True, check=True)
    sid = out.stdout.strip()
    with memseg.open(store_path, "a") as store:
        info = store.session(sid).info
        assert info.state == "active" and info.action_count == 250
        rec = store.resume(sid)
        assert rec.record("step", {"i": 250}, ts_ns=250) == 250
        rec.end(status="ok")
        with pytest.raises(memseg.StateError):
            store.resume(sid)
    with memseg.open(store_path) as store:
        s = store.session("interrupted")
        assert s.info.state == "ended" and s.info.meta == {"run": 1}
        assert [a.value()["i"] for a in s.actions] == list(range(251))
        assert [(c.id, c.at_seq, c.value()) for c in s.checkpoints] == [(0, 250, {"frame": 250})]


def test_bad_arguments_are_value_and_type_errors(store_path: Path) -> None:
    with pytest.raises(ValueError):
        memseg.open(store_path, "w")
    with pytest.raises(ValueError):
        memseg.open(store_path, "a", sync="sometimes")  # type: ignore[arg-type]
    with memseg.open(store_path, "a") as store:
        rec = store.start_session()
        with pytest.raises(TypeError):
            rec.record("k", object())
        with pytest.raises(TypeError):
            rec.record("", "v")
        with pytest.raises(TypeError):
            store.start_session(meta=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.start_session(session_id=rec.id)
    assert store_path.stat().st_size > FILE_HEADER.size


@pytest.mark.parametrize("ts", [2**63, -(2**63) - 1, 2**64])
def test_a_timestamp_outside_i64_is_refused_when_recorded(store_path: Path, ts: int) -> None:
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        rec.record("k", "kept", ts_ns=1)
        with pytest.raises(ValueError, match="ts_ns"):
            rec.record("k", "refused", ts_ns=ts)
        with pytest.raises(ValueError, match="ts_ns"):
            rec.checkpoint({"s": 1}, ts_ns=ts)
        with pytest.raises(TypeError, match="ts_ns"):
            rec.record("k", "refused", ts_ns=1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="ts_ns"):
            rec.record("k", "refused", ts_ns=True)
        rec.record("k", "edge", ts_ns=2**63 - 1)
        rec.record("k", "numpy", ts_ns=np.int64(5))  # integer types are ints here
        rec.end()  # nothing refused reached a block: the session commits
    with memseg.open(store_path) as store:
        actions = store.session("s").actions
        assert [a.value() for a in actions] == ["kept", "edge", "numpy"]
        assert actions.ts_ns.tolist() == [1, 2**63 - 1, 5] and store.session("s").checkpoints == []


def test_kind_counts_count_only_actions_in_blocks(store_path: Path) -> None:
    """A snapshot written while actions are buffered (a compaction does that) counts
    the actions its blocks hold, not those still in the recorder."""
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        for i in range(BLOCK_MAX_ACTIONS + 10):  # one block cut, 10 actions buffered
            rec.record("k", i, ts_ns=i)
        rec.record("new-kind", "buffered", ts_ns=0)
        store.compact()
        with memseg.open(store_path) as reader:
            committed = reader.session("s").actions
            assert len(committed) == BLOCK_MAX_ACTIONS
            assert committed.kind_counts() == {"k": BLOCK_MAX_ACTIONS}
            assert reader.kind_counts() == {"k": BLOCK_MAX_ACTIONS}
        rec.end()
    with memseg.open(store_path) as store:
        assert store.session("s").actions.kind_counts() == {"k": BLOCK_MAX_ACTIONS + 10,
                                                           "new-kind": 1}


def test_close_commits_other_recorders_when_one_fails(store_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = memseg.open(store_path, "a")
    broken, fine = store.start_session(name="broken"), store.start_session(name="fine")
    broken.record("k", "lost with its recorder")
    fine.record("k", "kept")

    def fail() -> None:
        raise RuntimeError("cannot cut")

    monkeypatch.setattr(broken, "_cut_block", fail)
    with pytest.raises(RuntimeError, match="cannot cut"):
        store.close()
    assert store.closed
    with memseg.open(store_path) as reader:
        assert [a.value() for a in reader.session("fine").actions] == ["kept"]
        assert len(reader.session("broken").actions) == 0


def test_a_checkpoint_without_flush_waits_for_the_next_commit(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        rec.record("step", 0, ts_ns=1)
        assert rec.checkpoint({"at": 1}, ts_ns=2) == 0  # durable at once
        rec.record("step", 1, ts_ns=3)
        assert rec.checkpoint({"at": 2}, ts_ns=4, flush=False) == 1
        rec.record("step", 2, ts_ns=5)
        with memseg.open(store_path) as reader:
            (cp,) = reader.session("s").checkpoints
            assert (cp.id, cp.at_seq, cp.value()) == (0, 1, {"at": 1})
            assert len(reader.session("s").actions) == 1
        assert rec.checkpoint({"at": 3}, flush=False) == 2
        rec.end()
    with memseg.open(store_path) as reader:
        session = reader.session("s")
        assert [(c.id, c.at_seq, c.value()) for c in session.checkpoints] == [
            (0, 1, {"at": 1}), (1, 2, {"at": 2}), (2, 3, {"at": 3})]
        assert [a.value() for a in session.actions] == [0, 1, 2]
        assert session.info.checkpoint_count == 3


def test_unflushed_checkpoints_are_bounded_like_actions(store_path: Path) -> None:
    state = {"blob": "x" * 300_000}
    with memseg.open(store_path, "a", sync="none") as store, store.start_session(name="s") as rec:
        for i in range(10):
            rec.record("step", i, ts_ns=i)
            rec.checkpoint(state | {"i": i}, flush=False)
    with memseg.open(store_path) as reader:
        session = reader.session("s")
        # About 3 MB of snapshots: cut into blocks of about 1 MiB, not held in one.
        assert len(session.actions.refs) >= 3
        assert [(c.at_seq, c.value()["i"]) for c in session.checkpoints] == [
            (i + 1, i) for i in range(10)]


def test_unflushed_checkpoints_are_bounded_in_count_too(store_path: Path) -> None:
    extra = 50
    with memseg.open(store_path, "a", sync="none") as store, store.start_session(name="s") as rec:
        rec.record("step", 0, ts_ns=0)
        for i in range(BLOCK_MAX_ACTIONS + extra):
            rec.checkpoint(b"", ts_ns=i, flush=False)  # no bytes, but an entry each
    with memseg.open(store_path) as reader:
        session = reader.session("s")
        counts = session.actions.refs["actions"] + session.actions.refs["checkpoints"]
        assert len(counts) == 2 and int(counts.max()) == BLOCK_MAX_ACTIONS
        assert len(session.checkpoints) == BLOCK_MAX_ACTIONS + extra


def test_an_end_that_fails_to_commit_stays_staged_and_the_next_commit_writes_it(
        store_path: Path) -> None:
    """The recorder used to be registered again when its end's commit failed, while the
    end stayed staged: the next commit wrote ENDED, then the recorder's next flush turned
    the session back into ACTIVE (and archive + compact met it with KeyError)."""
    with memseg.open(store_path, "a", sync="none") as store:
        rec = store.start_session(name="s")
        rec.record("k", 1, ts_ns=1)
        commit = store._commit_through

        def fail_once(ticket: int) -> None:
            store._commit_through = commit  # type: ignore[method-assign]
            raise memseg.CorruptError("injected", "a commit that fails")

        store._commit_through = fail_once  # type: ignore[method-assign]
        with pytest.raises(memseg.CorruptError):
            rec.end("done")
        assert rec.closed
        with pytest.raises(memseg.ClosedError):
            rec.record("k", 2)
        store.commit_staged()
        store.archive("s")
        store.compact()
        assert store.sessions() == []


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_refreshing_and_reading_while_writing_do_not_keep_a_map_each(store_path: Path) -> None:
    """Each refresh() of a reader, and each read by a writer after an append, mapped the
    file anew and kept every old map (and its file descriptor) until close()."""
    writer = memseg.open(store_path, "a", sync="none")
    rec = writer.start_session(name="s")
    reader = memseg.open(store_path)
    held = None
    baseline = _open_fds()
    for i in range(300):
        rec.record("k", i, ts_ns=i)
        rec.flush()
        assert len(writer.session(rec.id).actions) == i + 1
        reader.refresh()
        if i == 10:
            held = reader.session("s").actions.ts_ns  # an array on one map: that map stays
    assert _open_fds() <= baseline + 3
    assert held is not None and held.tolist() == list(range(11))
    rec.end()
    writer.close()
    reader.close()


def test_a_refused_record_adds_no_kind(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        with pytest.raises(ValueError):
            rec.record("too_big", b"x" * (MAX_VALUE + 1))
        with pytest.raises(ValueError):
            rec.record("bad_ts", "v", ts_ns=2**63)
        rec.record("real", "v", ts_ns=1)
        rec.end()
    with memseg.open(store_path) as store:
        assert store.session("s").actions.kinds == ("real",)


def test_last_activity_is_the_newest_time_not_the_last_recorded(store_path: Path) -> None:
    """Timestamps given out of order: last_activity_ns took the last one recorded, so a
    sweep could take a recent session for an old one."""
    hour = 3600 * 10**9
    later = time.time_ns() + 10 * hour  # after the session's start, which counts too
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        rec.record("k", 1, ts_ns=later)
        rec.record("k", 2, ts_ns=later - 5 * hour)
        rec.checkpoint({"c": 1}, ts_ns=later - 3 * hour)
        rec.flush()
        assert store.session("s").info.last_activity_ns == later
        rec.end()


def test_metadata_over_its_limit_is_refused_when_the_session_starts(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        with pytest.raises(ValueError, match="meta"):
            store.start_session(name="big", meta={"blob": "b" * MAX_META})
        with store.start_session(name="fine", meta={"blob": "b" * 1000}) as rec:
            rec.record("k", 1)
    with memseg.open(store_path) as store:
        assert [i.name for i in store.sessions()] == ["fine"]


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize("inner", [datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.date(2024, 1, 2),
                                   _Point(1)])
def test_objects_inside_a_json_value_that_json_refuses_are_refused(store_path: Path,
                                                                   inner: object) -> None:
    """orjson wrote a nested datetime or dataclass as a string or an object, so the value
    read back as something else than was recorded; json.dumps refuses them."""
    with memseg.open(store_path, "a") as store:
        with pytest.raises(TypeError):
            store.start_session(name="s", meta={"when": inner})
        rec = store.start_session(name="s")
        with pytest.raises(TypeError):
            rec.record("k", {"v": inner})
        with pytest.raises(TypeError):
            rec.record("k", result=[inner])
        with pytest.raises(TypeError):
            rec.checkpoint({"v": inner})
        rec.record("k", {"id": uuid.UUID(int=7)})  # documented: stored as its string
        rec.end()
    with memseg.open(store_path) as reader:
        [action] = reader.session("s").actions
        assert action.value() == {"id": str(uuid.UUID(int=7))}


class _Pair(NamedTuple):
    a: int
    b: object


def test_float_and_tuple_subclasses_are_stored_as_json_dumps_writes_them(store_path: Path) -> None:
    """numpy.float64 (a float subclass) and namedtuples were refused with TypeError,
    though json.dumps writes them as a number and an array."""
    values: list[object] = [np.float64(1.5), {"x": np.float64(-2.25)}, _Pair(1, "two"),
                            {"p": [_Pair(3, _Pair(4, 5.0))]}]
    with memseg.open(store_path, "a") as store, store.start_session(name="s") as rec:
        for v in values:
            rec.record("k", v, result=v)
        rec.checkpoint(values)
    with memseg.open(store_path) as reader:
        s = reader.session("s")
        got = [a.value() for a in s.actions]
        assert got == [a.result_value() for a in s.actions]
        assert got == [1.5, {"x": -2.25}, [1, "two"], {"p": [[3, [4, 5.0]]]}]
        assert s.checkpoints[0].value() == got


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1, {"n": 2**80}])
def test_integers_past_64_bits_are_refused(store_path: Path, big: object) -> None:
    """orjson would read such an integer back as a float: refused, not silently rounded."""
    with memseg.open(store_path, "a") as store, store.start_session(name="s") as rec:
        with pytest.raises(TypeError, match="64-bit"):
            rec.record("k", big)
        rec.record("k", 2**64 - 1)
    with memseg.open(store_path) as reader:
        assert [a.value() for a in reader.session("s").actions] == [2**64 - 1]


@pytest.mark.parametrize("status", ["x" * 1025, 7, "\ud800"])
def test_a_refused_end_writes_nothing_and_leaves_the_recorder_usable(store_path: Path,
                                                                     status: object) -> None:
    """end() with a bad status cut the buffered actions into a block before refusing."""
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        rec.record("k", 1)
        rec.flush()
        rec.record("k", 2)
        size = store_path.stat().st_size
        with pytest.raises(ValueError, match="status"):
            rec.end(status=status)  # type: ignore[arg-type]
        assert store_path.stat().st_size == size
        rec.record("k", 3)
        rec.end(status="ok")
    with memseg.open(store_path) as reader:
        s = reader.session("s")
        assert [a.value() for a in s.actions] == [1, 2, 3]
        assert s.info.status == "ok"

"""The compactor: what it keeps, drops and merges, determinism, crashes, readers and waiters."""

from __future__ import annotations

import gc
import itertools
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import memseg
from memseg.blockmerge import merge_records
from memseg.blocks import PendingCheckpoint, encode_block
from memseg.format import BLOCK_MAX_ACTIONS, COMPACT_SUFFIX, RESULT_SHIFT
from memseg.framing import parse_header
from tests.retention_support import (
    FaultMode,
    StepFaultFS,
    dump_path,
    dump_store,
    record_session,
)


def _build(path: Path) -> None:
    """Ended, archived and active sessions, recorded with many small flushes."""
    with memseg.open(path, "a", sync="none") as store:
        for i in range(4):
            record_session(store, f"s{i}", actions=30 + 7 * i, t0=1000 * i)
        record_session(store, "live", actions=25, end=False)
        store.archive(["s1", "s3"])


def test_compaction_keeps_live_sessions_exactly_and_drops_archived(store_path: Path) -> None:
    _build(store_path)
    before = dump_path(store_path)
    live = dump_path(store_path, live_only=True)
    archived = sorted(k for k, d in before.items() if d["state"] == "archived")
    report = memseg.compact(store_path)
    assert sorted(str(i) for i in report.dropped) == archived
    assert report.sessions_kept == len(live) == 3
    assert dump_path(store_path) == live
    assert report.bytes_after == store_path.stat().st_size < report.bytes_before
    with memseg.open(store_path) as store:
        assert store.session("live").info.state == "active"
        assert store.session("s0").info.stored_bytes > 0


def test_compaction_merges_the_blocks_of_frequent_flushes(store_path: Path) -> None:
    with memseg.open(store_path, "a", sync="none") as store, store.start_session(name="chatty") as rec:
        for i in range(1000):
            rec.record("line", f"output line {i}", ts_ns=i)
            rec.flush()
    before = dump_path(store_path)
    report = memseg.compact(store_path)
    assert dump_path(store_path) == before
    assert report.blocks_before == 1000
    assert report.blocks_after == 1
    assert report.bytes_merged > 0
    assert report.bytes_after < report.bytes_before / 5


def test_merged_blocks_count_checkpoints_toward_the_entry_bound(store_path: Path) -> None:
    """A merged block holds at most BLOCK_MAX_ACTIONS actions and checkpoints together,
    the bound a recorder cuts at: 2,100 flushes of 1 action and 3 checkpoints are 8,400
    entries, more than one block may hold."""
    with memseg.open(store_path, "a", sync="none") as store, store.start_session(name="s") as rec:
        for i in range(2100):
            rec.record("line", i, ts_ns=i)
            for j in range(3):
                rec.checkpoint({"j": j}, ts_ns=i, flush=False)
            rec.flush()
    before = dump_path(store_path)
    report = memseg.compact(store_path)
    assert dump_path(store_path) == before
    assert report.blocks_before == 2100 and report.blocks_after == 2
    with memseg.open(store_path) as store:
        refs = store.session("s").actions.refs
        entries = (refs["actions"] + refs["checkpoints"]).tolist()
        assert max(entries) <= BLOCK_MAX_ACTIONS and sum(entries) == 8400


def test_full_blocks_are_copied_not_recompressed(store_path: Path) -> None:
    with memseg.open(store_path, "a", sync="none") as store:
        record_session(store, "small", actions=30)
        with store.start_session(name="big") as rec:
            for i in range(50):  # 64 KiB each: the recorder cuts 1 MiB blocks
                rec.record("blob", random.Random(i).randbytes(64 * 1024), ts_ns=i)
        store.archive("small")  # so every block of "big" moves
    before = dump_path(store_path, live_only=True)
    report = memseg.compact(store_path)
    assert dump_path(store_path) == before
    assert report.bytes_merged == 0
    assert report.blocks_after == report.blocks_before == 4
    assert report.bytes_copied > 3 * 1024 * 1024


def test_compaction_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mseg", tmp_path / "b.mseg"
    _build(a)
    shutil.copyfile(a, b)
    memseg.compact(a)
    with memseg.open(b, "a") as store:
        store.compact()
    once = a.read_bytes()
    assert once == b.read_bytes()
    memseg.compact(a)
    assert a.read_bytes() == once


def test_merged_block_equals_one_flush_of_the_same_actions(store_path: Path) -> None:
    with memseg.open(store_path, "a", sync="none") as store:
        record_session(store, "s", actions=60, flush_every=2)
    with memseg.open(store_path) as store:
        session = store.session("s")
        actions = session.actions
        view = store._current()
        heads = [parse_header(view.buf, int(r["offset"]), view.limit, view.header.tag)
                 for r in actions.refs]
        assert len(heads) > 10
        merged = merge_records(view.buf, heads, 8)
        kinds = actions.kind_codes.tolist()
        flags = [a.payload_type | a.result_type << RESULT_SHIFT for a in actions]
        ckpts = [PendingCheckpoint(c.id, c.at_seq, c.ts_ns, memseg.format.ValueType(c.snapshot_type),
                                   c.snapshot) for c in session.checkpoints]
        one = encode_block(session.info.id, 0, 8, actions.ts_ns.tolist(), kinds, flags,
                           [a.payload for a in actions], [a.result or b"" for a in actions], ckpts)
    assert merged == one


def test_store_compact_keeps_recorders_and_lock(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        record_session(store, "old", actions=20)
        rec = record_session(store, "live", actions=20, end=False)
        rec.record("unflushed", "cut into no block yet", ts_ns=500)
        store.archive("old")
        old_ino = store_path.stat().st_ino
        held = store.session("live").actions  # arrays on the writer's map of the old file
        ts = held.ts_ns
        report = store.compact()
        assert ts.tolist() == list(range(20)) and held[19].value() is None
        assert store_path.stat().st_ino != old_ino
        assert [i.name for i in store.sessions()] == ["live"]
        assert store.tail_bytes == 0 and store.commit is not None
        del held, ts
        gc.collect()
        assert not _maps_of_deleted(store_path)  # the replaced file's space can be freed
        assert store.commit.end == store_path.stat().st_size == report.bytes_after
        with pytest.raises(memseg.LockedError):
            memseg.open(store_path, "a")
        for i in range(300):
            rec.record("after", {"i": i}, ts_ns=1000 + i)
            if i % 50 == 0:
                rec.flush()
        rec.end(status="fine")
        record_session(store, "new", actions=10)
        assert report.dropped and report.sessions_kept == 1
    with memseg.open(store_path) as store:
        live = store.session("live")
        assert len(live.actions) == 321 and live.info.status == "fine"
        assert live.actions[20].value() == "cut into no block yet"
        assert live.actions[-1].value() == {"i": 299}
        assert [c.at_seq for c in live.checkpoints] == [10, 20]
        assert len(store.session("new").actions) == 10


def _maps_of_deleted(path: Path) -> list[str]:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    return [line for line in maps.read_text().splitlines()
            if str(path) in line and "(deleted)" in line]


def test_resume_after_compaction(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        record_session(store, "live", actions=33, end=False)
    memseg.compact(store_path)
    with memseg.open(store_path, "a") as store:
        rec = store.resume("live")
        rec.record("more", b"x", ts_ns=99)
        rec.end()
    with memseg.open(store_path) as store:
        actions = store.session("live").actions
        assert len(actions) == 34 and actions[33].payload == b"x"


def test_progress_counts_up_to_the_total(store_path: Path) -> None:
    _build(store_path)
    calls: list[tuple[int, int]] = []
    memseg.compact(store_path, progress=lambda done, total: calls.append((done, total)))
    totals = {t for _, t in calls}
    assert len(totals) == 1 and calls[0][0] == 0 and calls[-1][0] == totals.pop()
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))


def test_compacting_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        memseg.compact(tmp_path / "nope.mseg")
    assert not (tmp_path / "nope.mseg").exists()


def test_compacting_needs_a_writable_store(store_path: Path) -> None:
    _build(store_path)
    with memseg.open(store_path) as store, pytest.raises(memseg.ReadOnlyError) as err:
        store.compact()
    assert err.value.reason == "read_only"


def test_empty_and_all_archived_files_compact(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mseg"
    memseg.open(empty, "a").close()
    memseg.compact(empty)
    assert dump_path(empty) == {}
    gone = tmp_path / "gone.mseg"
    with memseg.open(gone, "a") as store:
        record_session(store, "a", actions=5)
        store.archive("a")
    memseg.compact(gone)
    assert dump_path(gone) == {}
    with memseg.open(gone, "a") as store:
        record_session(store, "b", actions=5)
    assert list(dump_path(gone)) != []


# --- crashes and failures at every file operation ---------------------------


def _attempt(path: Path, fs: StepFaultFS, via_store: bool) -> BaseException | None:
    try:
        if via_store:
            with memseg.open(path, "a", fs=fs) as store:
                try:
                    store.compact()
                except memseg.WriteFailedError as exc:
                    if fs.mode != "die":
                        _check_store_after_failure(store, exc)
                    raise
        else:
            memseg.compact(path, fs=fs)
    except (OSError, memseg.MemsegError) as exc:
        return exc
    finally:
        fs.kill()
    return None


def _check_store_after_failure(store: memseg.Store, exc: memseg.WriteFailedError) -> None:
    """Before the rename the store goes on with the old file; after it, it refuses writes."""
    if exc.reason == "compact_failed":
        record_session(store, "after-failure", actions=3)
    else:
        assert exc.reason == "write_failed"
        with pytest.raises(memseg.WriteFailedError):
            store.start_session(name="refused")


@pytest.mark.parametrize("via_store", [False, True], ids=["compact", "store.compact"])
@pytest.mark.parametrize("mode", ["before", "after", "die"])
def test_a_failure_at_every_step_leaves_old_or_new_file(tmp_path: Path, mode: FaultMode,
                                                         via_store: bool) -> None:
    base = tmp_path / "base.mseg"
    _build(base)
    old, new = dump_path(base), dump_path(base, live_only=True)
    path = tmp_path / "s.mseg"
    k = 0
    outcomes: set[str] = set()
    while True:
        shutil.copyfile(base, path)
        fs = StepFaultFS(k, mode)
        exc = _attempt(path, fs, via_store)
        got = dump_path(path)
        got.pop(next((i for i, d in got.items() if d["info"][1] == "after-failure"), ""), None)
        assert got in (old, new), (k, exc)
        outcomes.add("old" if got == old else "new")
        with memseg.open(path, "a") as store:  # writable again; the stale temporary goes
            record_session(store, "later", actions=2)
        assert not Path(str(path) + COMPACT_SUFFIX).exists()
        if not fs.fired:
            assert exc is None
            break
        assert exc is not None, k
        k += 1
    assert outcomes == {"old", "new"} and k > 10


# --- readers and waiting writers ---------------------------------------------


def test_reader_keeps_its_snapshot_through_compaction(store_path: Path) -> None:
    _build(store_path)
    reader = memseg.open(store_path)
    before = dump_store(reader)
    ts = reader.session("s0").actions.ts_ns
    first = ts.tolist()
    memseg.compact(store_path)
    with memseg.open(store_path, "a") as store:
        record_session(store, "more", actions=5)
    assert dump_store(reader) == before
    assert ts.tolist() == first
    reader.refresh()
    after = dump_store(reader)
    assert {d["info"][1] for d in after.values()} == {"s0", "s2", "live", "more"}
    assert after[str(reader.session("s0").info.id)] == before[str(reader.session("s0").info.id)]
    reader.close()


_WAITER = textwrap.dedent("""
    import os, sys
    import memseg
    from memseg.fs import OS_FS

    path, marker = sys.argv[1], sys.argv[2]

    class Announcing:
        # Touches the marker when the writer starts waiting for its lock.
        def __init__(self, fh):
            self._fh = fh
        def lock(self, timeout):
            open(marker, "a").close()
            self._fh.lock(timeout)
        def __getattr__(self, name):
            return getattr(self._fh, name)

    class FS:
        def open(self, p, *, write, create):
            fh = OS_FS.open(p, write=write, create=create)
            return Announcing(fh) if write else fh
        def __getattr__(self, name):
            return getattr(OS_FS, name)

    with memseg.open(path, "a", lock_timeout=60, fs=FS()) as store:
        rec = store.start_session(name="waiter")
        rec.record("hello", "from the waiting writer", ts_ns=1)
        rec.end()
    print(os.stat(path).st_ino)
""")


def _start_waiter(path: Path, marker: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _WAITER, str(path), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the waiting writer never reached its lock"
        time.sleep(0.01)
    return proc


def _finish_waiter(proc: subprocess.Popen[str], path: Path, old_fd: int, old_size: int) -> None:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert int(out) == path.stat().st_ino
    # Nothing was written to the replaced inode.
    assert os.fstat(old_fd).st_size == old_size
    os.close(old_fd)
    with memseg.open(path) as store:
        assert store.session("waiter").actions[0].value() == "from the waiting writer"


def test_writer_waiting_during_store_compact_writes_to_the_new_file(tmp_path: Path) -> None:
    path, marker = tmp_path / "s.mseg", tmp_path / "waiting"
    with memseg.open(path, "a") as store:
        record_session(store, "old", actions=20)
        rec = record_session(store, "live", actions=20, end=False)
        store.archive("old")
        old_fd = os.open(path, os.O_RDONLY)
        old_size = os.fstat(old_fd).st_size
        proc = _start_waiter(path, marker)
        store.compact()
        rec.record("after", "compaction", ts_ns=99)
        rec.end()
        assert proc.poll() is None  # still waiting: the new file is locked too
    _finish_waiter(proc, path, old_fd, old_size)
    with memseg.open(path) as store:
        assert [i.name for i in store.sessions()] == ["live", "waiter"]
        assert store.session("live").actions[-1].value() == "compaction"


def test_writer_waiting_during_compact_writes_to_the_new_file(tmp_path: Path) -> None:
    path, marker = tmp_path / "s.mseg", tmp_path / "waiting"
    _build(path)
    live = dump_path(path, live_only=True)
    old_fd = os.open(path, os.O_RDONLY)
    old_size = os.fstat(old_fd).st_size
    waiters: list[subprocess.Popen[str]] = []

    def progress(done: int, total: int) -> None:
        if not waiters:  # the compaction holds the lock: start a writer that must wait
            waiters.append(_start_waiter(path, marker))

    memseg.compact(path, progress=progress)
    _finish_waiter(waiters[0], path, old_fd, old_size)
    after = dump_path(path)
    assert {k: v for k, v in after.items() if v["info"][1] != "waiter"} == live


# --- compaction racing other work on the same store ------------------------


def test_block_encoded_before_a_compaction_is_relinked(store_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A recorder encodes its block (linking it to its last block) outside the
    # store's lock; a compaction that moves the session before the block is
    # appended must not leave the link pointing into the old file.
    with memseg.open(store_path, "a") as store:
        record_session(store, "old", actions=10)
        rec = record_session(store, "live", actions=10, end=False)
        store.archive("old")
        append = store._append_block
        compacted: list[memseg.CompactReport] = []

        def compact_first(*args: object) -> None:
            if not compacted:
                compacted.append(store.compact())
            append(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "_append_block", compact_first)
        rec.record("late", "encoded before the compaction", ts_ns=50)
        rec.flush()
        rec.end()
        assert compacted and compacted[0].dropped
    with memseg.open(store_path) as store:
        actions = store.session("live").actions
        assert len(actions) == 11 and actions[10].value() == "encoded before the compaction"


def test_resume_racing_a_compaction_uses_the_new_file(store_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with memseg.open(store_path, "a") as store:
        record_session(store, "old", actions=10)
        record_session(store, "live", actions=12, end=False)
        store.archive("old")
    with memseg.open(store_path, "a") as store:
        check = store._check_writable
        compacted: list[bool] = []

        def compact_just_before_resume_looks() -> None:
            check()
            if not compacted:
                compacted.append(True)
                store.compact()  # as another thread could, right before resume takes the mutex

        monkeypatch.setattr(store, "_check_writable", compact_just_before_resume_looks)
        rec = store.resume("live")
        assert compacted
        rec.record("more", "after resume", ts_ns=60)
        rec.end()
    with memseg.open(store_path) as store:
        actions = store.session("live").actions
        assert len(actions) == 13 and actions[12].value() == "after resume"


def test_compacting_while_threads_record(store_path: Path) -> None:
    threads, rounds, per_round = 3, 6, 40
    errors: list[BaseException] = []
    with memseg.open(store_path, "a", sync="none") as store:

        def work(t: int) -> None:
            try:
                for r in range(rounds):
                    with store.start_session(name=f"t{t}r{r}") as rec:
                        for i in range(per_round):
                            rec.record("step", {"t": t, "r": r, "i": i}, ts_ns=i)
                            if i % 7 == 0:
                                rec.flush()
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        archived = 0
        while any(w.is_alive() for w in workers):
            ended = [i.id for i in store.sessions() if i.state == "ended"]
            archived += store.archive(ended[: len(ended) // 2])
            store.compact()
        for w in workers:
            w.join()
        assert not errors, errors
    with memseg.open(store_path) as store:
        infos = store.sessions()
        assert archived + len(infos) == threads * rounds
        for info in infos:
            t, r = (int(x) for x in (info.name or "")[1:].split("r"))
            values = [a.value() for a in store.session(info.id).actions]
            assert values == [{"t": t, "r": r, "i": i} for i in range(per_round)]


def test_a_session_archived_and_compacted_while_its_recorder_ends(store_path: Path) -> None:
    """Another thread can archive a session as soon as its end commits, and compact,
    before end() returns: the compactor then met a recorder whose session it had
    dropped (KeyError; seen in the threaded test above). Made deterministic here."""
    with memseg.open(store_path, "a", sync="none") as store:
        record_session(store, "other", actions=5)
        rec = store.start_session(name="s")
        rec.record("k", 1, ts_ns=1)
        commit = store._commit_through

        def commit_then_drop(ticket: int) -> None:
            commit(ticket)
            if any(i.name == "s" and i.state == "ended" for i in store.sessions()):
                store._commit_through = commit  # type: ignore[method-assign]
                store.archive("s")
                store.compact()

        store._commit_through = commit_then_drop  # type: ignore[method-assign]
        rec.end()
        assert rec.closed
        assert [i.name for i in store.sessions()] == ["other"]
    with memseg.open(store_path) as store:
        assert [i.name for i in store.sessions()] == ["other"]


@pytest.mark.parametrize("which", [0, -1], ids=["merged-run", "copied-block"])
def test_damaged_live_block_stops_compaction_and_changes_nothing(store_path: Path,
                                                                 which: int) -> None:
    with memseg.open(store_path, "a", sync="none") as store:
        record_session(store, "gone", actions=10)
        record_session(store, "small", actions=30, flush_every=2)
        with store.start_session(name="big") as rec:
            for i in range(20):
                rec.record("blob", random.Random(i).randbytes(64 * 1024), ts_ns=i)
        store.archive("gone")
    with memseg.open(store_path) as store:
        ref = store.session("small" if which == 0 else "big").actions.refs[which]
        target = int(ref["offset"]) + 32 + 80  # inside the block's payload, past its header
    data = bytearray(store_path.read_bytes())
    data[target] ^= 0x40
    store_path.write_bytes(bytes(data))
    with pytest.raises(memseg.CorruptError) as err:
        memseg.compact(store_path)
    assert err.value.reason in {"payload_crc", "columns_crc", "blob_crc"}
    assert store_path.read_bytes() == bytes(data)
    assert not Path(str(store_path) + COMPACT_SUFFIX).exists()


@pytest.mark.parametrize("sync", ["commit", "none"])
def test_compaction_drops_the_old_files_cache_only_for_a_store_that_syncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: str) -> None:
    from memseg.fs import OsFile

    dropped: list[tuple[int, int]] = []
    real = OsFile.drop_cache

    def recording(self: OsFile) -> None:
        dropped.append(os.fstat(self._fd)[1:3])  # (inode, device): which file
        real(self)

    monkeypatch.setattr(OsFile, "drop_cache", recording)
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a", sync=sync) as store:  # type: ignore[arg-type]
        for name in ("keep", "drop"):
            with store.start_session(name) as rec:
                rec.record("k", os.urandom(4096))
        store.archive("drop")
        old = os.stat(path)
        store.compact()
        # A store whose commits were synced has clean pages: they are dropped while the
        # new file syncs. Another's would first be written back, so they are left alone.
        assert dropped == ([(old.st_ino, old.st_dev)] if sync == "commit" else [])
        assert [i.name for i in store.sessions()] == ["keep"]
    with memseg.open(path) as reader:
        assert [i.name for i in reader.sessions()] == ["keep"]
        assert len(reader.session("keep").actions[0].payload) == 4096


class _HandleWithoutDropCache:
    """A caller's own file handle, written before handles could drop their cache."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "drop_cache":
            raise AttributeError(name)
        return getattr(self._inner, name)


class _FsWithoutDropCache:
    def __getattr__(self, name: str) -> object:
        from memseg.fs import OS_FS

        return getattr(OS_FS, name)

    def open(self, path: str, **how: object) -> object:
        from memseg.fs import OS_FS

        return _HandleWithoutDropCache(OS_FS.open(path, **how))  # type: ignore[arg-type]


def _archive_one_and_compact(store: memseg.Store) -> None:
    for name in ("keep", "drop"):
        with store.start_session(name) as rec:
            rec.record("k", b"x" * 100)
    store.archive("drop")
    store.compact()
    assert [i.name for i in store.sessions()] == ["keep"]


def test_compaction_works_with_a_callers_file_handles_that_cannot_drop_their_cache(
        tmp_path: Path) -> None:
    with memseg.open(tmp_path / "s.mseg", "a", fs=_FsWithoutDropCache()) as store:  # type: ignore[arg-type]
        _archive_one_and_compact(store)


def test_compaction_syncs_without_a_second_thread_when_none_can_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with memseg.open(tmp_path / "s.mseg", "a") as store:
        monkeypatch.setattr(threading.Thread, "start", refuse)
        _archive_one_and_compact(store)

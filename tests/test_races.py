"""One store shared by threads, and interruptions mid-commit: each scenario forces one
interleaving deterministically, by running the other thread's step at a chosen point."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import memseg
import memseg.blocks
import memseg.compactor
import memseg.retention
from memseg.fs import OS_FS
from tests.retention_support import DAY_NS, record_session


def _once(step: Callable[[], Any]) -> Callable[[], None]:
    """A hook that runs ``step`` the first time it is called, and nothing after."""
    done: list[bool] = []

    def hook() -> None:
        if not done:
            done.append(True)
            step()

    return hook


def _committed(path: Path, name: str) -> list[object]:
    with memseg.open(path) as reader:
        return [a.value() for a in reader.session(name).actions]


def test_an_end_interrupted_after_its_sync_leaves_the_store_refusing_writes(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end's commit reached the disk, then an interrupt arrived: the store's state no
    longer matched the file, and the recorder was registered again as if the end had
    failed (a later flush could turn the ENDED session back)."""
    store = memseg.open(store_path, "a")
    rec = store.start_session(name="s")
    rec.record("k", 1, ts_ns=1)
    assert store._fh is not None
    real_sync = store._fh.sync

    def sync_then_interrupt() -> None:
        real_sync()
        raise KeyboardInterrupt

    monkeypatch.setattr(store._fh, "sync", sync_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        rec.end("done")
    monkeypatch.setattr(store._fh, "sync", real_sync)
    assert rec.closed
    with pytest.raises(memseg.WriteFailedError, match="interrupted"):
        store.start_session(name="after")
    store.close()
    with memseg.open(store_path) as reader:
        info = reader.session("s").info
        assert (info.state, info.status, info.action_count) == ("ended", "done", 1)


def test_a_commit_interrupted_before_its_trailer_fails_the_flushes_waiting_on_it(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A's commit took B's staged flush into its TOC, then was interrupted before its
    trailer; B's next commit found nothing staged and acknowledged B's lost action."""
    store = memseg.open(store_path, "a")
    a, b = store.start_session(name="a"), store.start_session(name="b")
    a.record("k", "a1", ts_ns=1)
    b.record("k", "b1", ts_ns=1)
    b._cut_block()
    store._stage_snapshot(b._live, None, end=False)  # B staged, waiting to commit
    real_trailer = store._append_trailer

    def interrupt(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_append_trailer", interrupt)
    with pytest.raises(KeyboardInterrupt):
        a.flush()
    monkeypatch.setattr(store, "_append_trailer", real_trailer)
    with pytest.raises(memseg.WriteFailedError):
        store.commit_staged()  # B's commit: refused, so never acknowledged
    store.close()


def test_resume_rechecks_the_state_under_the_mutex(store_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread ended and archived the session between resume's check and its
    registration: resume handed out a live recorder for an archived session."""
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        rec.record("k", 1, ts_ns=1)
        rec.flush()
        check = store._check_writable

        def end_and_archive() -> None:
            rec.end("done")
            store.archive("s")

        hook = _once(end_and_archive)

        def check_then_race() -> None:
            check()
            hook()

        monkeypatch.setattr(store, "_check_writable", check_then_race)
        with pytest.raises(memseg.StateError, match="not_active"):
            store.resume("s")
        monkeypatch.setattr(store, "_check_writable", check)
        store.compact()
        assert store.sessions() == []


def test_export_copies_only_what_the_source_committed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread staged a flush between export's commit and its view: the copy held
    an action that the source, had it crashed then, would not."""
    src, dest = tmp_path / "src.mseg", tmp_path / "dest.mseg"
    store = memseg.open(src, "a")
    rec = store.start_session(name="s")
    rec.record("k", "committed", ts_ns=1)
    rec.flush()
    real_commit = store.commit_staged

    def stage_another_flush() -> None:
        rec.record("k", "staged meanwhile", ts_ns=2)
        rec._cut_block()
        store._stage_snapshot(rec._live, None, end=False)

    hook = _once(stage_another_flush)

    def commit_then_race() -> None:
        real_commit()
        hook()

    monkeypatch.setattr(store, "commit_staged", commit_then_race)
    store.export(["s"], dest)
    with memseg.open(dest) as copy:
        exported = [a.value() for a in copy.session("s").actions]
    # Whatever the copy holds, the source had committed before the copy was made.
    assert exported == _committed(src, "s")[: len(exported)]
    assert exported[0] == "committed"
    store.close()


def test_sweep_skips_a_due_session_archived_and_compacted_meanwhile(
        store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep looked its due sessions up again after exporting; one that another
    thread had archived and compacted away meanwhile raised KeyError, and none of the
    others was archived."""
    with memseg.open(store_path, "a") as store:
        for name in ("old-1", "old-2"):
            record_session(store, name, actions=5, t0=0)
        real_run = memseg.retention._run_archive

        def archive_and_compact_first(*args: Any, **kwargs: Any) -> Any:
            planned = real_run(*args, **kwargs)
            store.archive("old-1")
            store.compact()
            return planned

        monkeypatch.setattr(memseg.retention, "_run_archive", archive_and_compact_first)
        report = store.sweep(1, archive_to=tmp_path / "archive.mseg",
                             now_ns=time.time_ns() + 10 * DAY_NS)
        assert sorted(i.name or "" for i in report.archived) == ["old-1", "old-2"]
        assert [(i.name, i.state) for i in store.sessions()] == [("old-2", "archived")]
    with memseg.open(tmp_path / "archive.mseg") as archive:
        assert sorted(i.name or "" for i in archive.sessions()) == ["old-1", "old-2"]


def _store_with_a_recorder_and_an_archived_session(path: Path) -> tuple[memseg.Store, Any]:
    store = memseg.open(path, "a")
    record_session(store, "gone", actions=5)
    store.archive("gone")
    rec = store.start_session(name="live")
    rec.record("k", 0, ts_ns=0)
    rec.flush()
    return store, rec


def test_close_waits_for_a_compaction_in_another_thread(store_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """close() cleared the recorders and closed the handle without any lock, under a
    compaction that was moving them (RuntimeError: dictionary changed size)."""
    store, rec = _store_with_a_recorder_and_an_archived_session(store_path)
    writing, release = threading.Event(), threading.Event()
    real_write = memseg.compactor._write

    def paused_write(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        release.wait(10)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(memseg.compactor, "_write", paused_write)
    errors: list[BaseException] = []

    def run(fn: Callable[[], Any]) -> threading.Thread:
        def target() -> None:
            try:
                fn()
            except BaseException as exc:  # reported below
                errors.append(exc)
        t = threading.Thread(target=target)
        t.start()
        return t

    compacting = run(store.compact)
    assert writing.wait(10)
    closing = run(store.close)
    closing.join(0.3)
    assert closing.is_alive()  # waits for the compaction's locks
    assert list(store._recorders) == [rec.id]  # still there for the compaction to move
    release.set()
    compacting.join(10)
    closing.join(10)
    assert not errors and store.closed
    with memseg.open(store_path) as reader:
        assert [i.name for i in reader.sessions()] == ["live"]


class _CutAfterSize:
    """A reader's file handle during whose open a writer cuts the torn tail: the first
    size() measures the file, then the tail goes (as a writer opening it would do)."""

    def __init__(self, fh: Any, path: Path, keep: int, readers: list[Any], regrow: int) -> None:
        self._fh, self._path, self._keep, self._readers = fh, path, keep, readers
        self._regrow = regrow

    def size(self) -> int:
        if len(self._readers) == 1 and self._regrow:
            # The writer went on appending before the reader looked again: the file
            # is now longer than it first measured.
            with open(self._path, "ab") as f:
                f.write(b"\0" * self._regrow)
        n = int(self._fh.size())
        self._readers.append(n)
        if len(self._readers) == 1:
            with open(self._path, "r+b") as f:
                f.truncate(self._keep)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@pytest.mark.parametrize("regrow", [0, 200_000])
@pytest.mark.parametrize("opener", ["store", "scan"])
def test_a_reader_maps_the_file_after_a_writer_cut_its_torn_tail(
        store_path: Path, opener: str, regrow: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader measured the file, a writer cut its torn tail, then the reader mapped the
    measured length: mmap refused it with a bare ValueError. The first fix retried only
    if the file was still shorter, not if the writer had appended past it meanwhile."""
    with memseg.open(store_path, "a") as store:
        store.start_session(name="s").end()
    committed = store_path.stat().st_size
    with open(store_path, "ab") as f:
        f.write(b"\0" * 100_000)  # what a killed writer appended and never committed
    measured: list[Any] = []

    class CutFs:
        def open(self, path: str, *, write: bool, create: bool, mode: int = 0o666,
                 exclusive: bool = False) -> Any:
            fh = OS_FS.open(path, write=write, create=create, mode=mode, exclusive=exclusive)
            return _CutAfterSize(fh, store_path, committed, measured, regrow)

        def __getattr__(self, name: str) -> Any:
            return getattr(OS_FS, name)

    if opener == "store":
        with memseg.open(store_path, fs=CutFs()) as reader:
            assert [i.name for i in reader.sessions()] == ["s"]
    else:
        # The forensic map goes through the real file system; cut it the same way.
        monkeypatch.setattr(sys.modules["memseg.scan"], "OS_FS", CutFs())
        records = memseg.scan(store_path)
        assert [r.end for r in records if r.kind == "TRAILER"][-1] == committed
        assert records[-1].end == committed + regrow
    assert measured[0] == committed + 100_000 and measured[-1] == committed + regrow


def test_a_large_commit_whose_trailer_follows_other_threads_blocks_is_the_newest(
        store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During a large commit's first fsync another thread appends a block, so the trailer
    does not follow its TOC directly (SPEC section 10). Requiring it to made readers skip
    that acknowledged commit, and the next writer cut it as a torn tail."""
    rng = random.Random(3)
    store = memseg.open(store_path, "a")
    a, b = store.start_session(name="A"), store.start_session(name="B")
    a.flush()
    a.record("big", rng.randbytes(2 << 20))  # over SINGLE_SYNC_MAX_REGION: a large commit
    assert store._fh is not None
    real_sync = store._fh.sync
    other = _once(lambda: _in_thread(lambda: b.record("blk", rng.randbytes(1 << 20))))

    def sync_after_another_threads_block() -> None:
        other()
        real_sync()

    monkeypatch.setattr(store._fh, "sync", sync_after_another_threads_block)
    a.record("small", "acknowledged")
    a.flush()
    commit = store.commit
    assert commit is not None and commit.flags == 0
    toc_end = [r.end for r in memseg.scan(store_path) if r.offset == commit.toc_offset]
    assert toc_end and toc_end[0] < commit.trailer_offset  # a block stands between
    with memseg.open(store_path) as reader:
        assert reader.session("A").info.action_count == 2
    crashed = tmp_path / "crashed.mseg"
    crashed.write_bytes(store_path.read_bytes())  # the writer dies here
    with memseg.open(crashed, "a") as writer:
        assert writer.session("A").info.action_count == 2
    assert not memseg.verify(crashed).problems
    store.close()


def _in_thread(step: Callable[[], Any]) -> None:
    thread = threading.Thread(target=step)
    thread.start()
    thread.join()


def test_close_waits_for_a_recorder_cutting_a_block_in_another_thread(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() staged every recorder's buffer from its own thread while the recorder's
    thread was encoding the same buffer: both appended it, and the session then read as
    corrupt (block_mismatch)."""
    store = memseg.open(store_path, "a")
    rec = store.start_session(name="s")
    for i in range(10):
        rec.record("k", i, ts_ns=i)
    closer = threading.Thread(target=store.close)
    real_encode = memseg.blocks.encode_block

    def encode_while_closing(*args: Any) -> bytes:
        if not closer.is_alive() and closer.ident is None:
            closer.start()
            closer.join(0.2)  # close() runs now, unless it waits for the recorder
        return real_encode(*args)

    monkeypatch.setattr("memseg.recorder.encode_block", encode_while_closing)
    rec.flush()
    closer.join()
    assert store.closed
    assert not memseg.verify(store_path).problems
    with memseg.open(store_path) as reader:
        assert [a.value() for a in reader.session("s").actions] == list(range(10))


def test_an_interrupt_inside_a_recorder_block_reaches_the_caller_as_itself(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt during a flush fails the store; leaving the ``with`` block then tried
    to end the session, and the store's WriteFailedError replaced the KeyboardInterrupt."""
    store = memseg.open(store_path, "a")
    assert store._fh is not None

    def interrupted_sync() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info, store, store.start_session(name="s") as rec:
        rec.record("k", 1)
        monkeypatch.setattr(store._fh, "sync", interrupted_sync)
        rec.flush()
    notes = getattr(info.value, "__notes__", [])
    assert any("ending session" in n and "WriteFailedError" in n for n in notes)
    assert store.closed


def test_no_recorder_starts_while_close_is_closing_them(store_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorder started (or resumed) while close() was closing the others was dropped
    from the store's list unclosed: a compaction then left it pointing into the replaced
    file, and its next flush, acknowledged, committed a damaged TOC entry."""
    with memseg.open(store_path, "a") as store:
        store.start_session(name="idle")  # active, resumable
    store = memseg.open(store_path, "a")
    first = store.start_session(name="first")
    first.record("k", 1)
    refused: list[BaseException] = []

    def start_others() -> None:
        try:
            store.start_session(name="late")
        except memseg.ClosedError as exc:
            refused.append(exc)
        try:
            store.resume("idle")
        except memseg.ClosedError as exc:
            refused.append(exc)

    real_close_for_store = first._close_for_store

    def close_then_start_others() -> None:
        real_close_for_store()
        start_others()  # another thread, while close() goes through its recorders

    monkeypatch.setattr(first, "_close_for_store", close_then_start_others)
    store.close()
    assert len(refused) == 2
    assert not memseg.verify(store_path).problems
    with memseg.open(store_path) as reader:
        assert sorted(str(i.name) for i in reader.sessions()) == ["first", "idle"]
        assert [a.value() for a in reader.session("first").actions] == [1]


def test_an_interrupt_between_a_blocks_append_and_the_buffer_reset_stores_nothing_twice(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block was appended (the session's counts include it), then an interrupt arrived
    before the buffer was reset: the next cut stored the same actions again, and the
    session read as corrupt (block_mismatch)."""
    real_reset = memseg.Recorder._reset_pending
    armed: list[bool] = []

    def interrupted_reset(rec: memseg.Recorder) -> None:
        if armed:
            armed.clear()
            raise KeyboardInterrupt
        real_reset(rec)

    monkeypatch.setattr(memseg.Recorder, "_reset_pending", interrupted_reset)
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        for i in range(10):
            rec.record("k", i, ts_ns=i)
        rec.checkpoint({"at": 10}, flush=False)
        armed.append(True)
        with pytest.raises(KeyboardInterrupt):
            rec.flush()
        for i in range(10, 15):  # the caller carries on recording
            rec.record("k", i, ts_ns=i)
        # Its id counts on from the stored checkpoint, not from the stale buffer.
        assert rec.checkpoint({"at": 15}) == 1
        rec.end()
    assert not memseg.verify(store_path).problems
    with memseg.open(store_path) as reader:
        session = reader.session("s")
        assert [a.value() for a in session.actions] == list(range(15))
        assert [(c.id, c.value()) for c in session.checkpoints] == [(0, {"at": 10}), (1, {"at": 15})]


def test_an_interrupt_after_a_blocks_bytes_fails_the_store(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt between a block's append and the session's bookkeeping left the block
    referenced but not counted (or counted without its kinds): the next flush stored the
    actions twice (count_mismatch) or committed wrong kind counts."""
    with memseg.open(store_path, "a") as store:
        rec = store.start_session(name="s")
        rec.record("k", 0, ts_ns=0)
        rec.flush()
        real_append = store._append
        armed: list[bool] = [True]

        def append_then_interrupt(record: Any) -> int:
            offset = real_append(record)
            if armed and bytes(record[8:9]) == bytes([2]):  # a BLOCK record
                armed.clear()
                raise KeyboardInterrupt
            return offset

        monkeypatch.setattr(store, "_append", append_then_interrupt)
        for i in range(1, 5):
            rec.record("k", i, ts_ns=i)
        with pytest.raises(KeyboardInterrupt):
            rec.flush()
        with pytest.raises(memseg.WriteFailedError):
            rec.flush()
    assert not memseg.verify(store_path).problems
    with memseg.open(store_path) as reader:
        assert [a.value() for a in reader.session("s").actions] == [0]
        assert reader.session("s").actions.kind_counts() == {"k": 1}


def test_two_threads_closing_a_store_both_return(store_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A second close() in another thread ran while the first was closing recorders; it
    closed the file, and the first then failed its commit with ClosedError."""
    store = memseg.open(store_path, "a")
    rec = store.start_session(name="s")
    rec.record("k", 1)
    errors: list[BaseException] = []

    def close_and_keep(errors: list[BaseException]) -> None:
        try:
            store.close()
        except BaseException as exc:  # any failure, reported below
            errors.append(exc)

    second = threading.Thread(target=close_and_keep, args=(errors,))
    real_close_for_store = rec._close_for_store

    def close_for_store_while_another_closes() -> None:
        real_close_for_store()
        second.start()
        second.join(0.2)  # it runs now, unless it waits for this close to finish

    monkeypatch.setattr(rec, "_close_for_store", close_for_store_while_another_closes)
    close_and_keep(errors)
    second.join()
    assert errors == [] and store.closed
    with memseg.open(store_path) as reader:
        assert [a.value() for a in reader.session("s").actions] == [1]


@pytest.mark.parametrize("where", ["rename", "switch"])
def test_a_compaction_interrupted_around_its_rename_fails_the_store(
        store_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """An interrupt between the new file's rename and the store's move onto it let later
    flushes write to the replaced inode (acknowledged, then gone), or left a recorder
    pointing into the old file (a corrupt session); the new file's lock leaked too."""
    store, rec = _store_with_a_recorder_and_an_archived_session(store_path)
    target = "rename" if where == "rename" else "_switch"
    module = store._fs if where == "rename" else memseg.compactor
    real = getattr(module, target)

    def interrupted(*args: Any) -> Any:
        if where == "rename":
            real(*args)  # the new file is in place, the store not yet moved onto it
        raise KeyboardInterrupt

    monkeypatch.setattr(module, target, interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.compact()
    monkeypatch.setattr(module, target, real)
    with pytest.raises(memseg.WriteFailedError):
        rec.flush()
    store.close()
    assert not memseg.verify(store_path).problems
    with memseg.open(store_path, "a") as writer:  # no lock left behind
        assert [a.value() for a in writer.session("live").actions] == [0]


def test_a_close_interrupted_while_closing_the_file_can_be_called_again(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() marked the store closed before closing its file: interrupted between the
    two, it left the descriptor open and locked, and a second close() did nothing."""
    store, _ = _store_with_a_recorder_and_an_archived_session(store_path)
    assert store._fh is not None
    fh = store._fh
    real_close = fh.close
    calls: list[bool] = []

    def interrupted_close() -> None:
        if not calls:
            calls.append(True)
            raise KeyboardInterrupt
        real_close()

    monkeypatch.setattr(fh, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt):
        store.close()
    store.close()
    assert store.closed
    memseg.open(store_path, "a").close()  # the lock was released


def test_a_compaction_interrupted_while_taking_its_locks_releases_them(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compaction took the commit lock and the mutex with bare acquire() calls: an
    interrupt before its try block left the commit lock held, and every later flush
    and close() waited forever."""
    store, rec = _store_with_a_recorder_and_an_archived_session(store_path)
    real_behind = memseg.compactor._behind

    def interrupted_behind(s: memseg.Store) -> Any:
        if s._commit_lock.locked():
            raise KeyboardInterrupt
        return real_behind(s)

    monkeypatch.setattr(memseg.compactor, "_behind", interrupted_behind)
    with pytest.raises(KeyboardInterrupt):
        store.compact()
    monkeypatch.setattr(memseg.compactor, "_behind", real_behind)
    flushed = threading.Thread(target=rec.flush, daemon=True)  # daemon: a hang fails, not blocks
    flushed.start()
    flushed.join(10)
    assert not flushed.is_alive()
    store.close()


def test_closing_a_store_from_its_own_compactions_progress_callback_is_refused(
        store_path: Path) -> None:
    """close() from inside the compaction's progress callback waited for the commit lock
    the compaction held: the thread hung for good."""
    store, _ = _store_with_a_recorder_and_an_archived_session(store_path)
    refused: list[BaseException] = []

    def progress(done: int, total: int) -> None:
        if not refused:
            try:
                store.close()
            except memseg.StateError as exc:
                refused.append(exc)

    compaction = threading.Thread(target=store.compact, kwargs={"progress": progress},
                                  daemon=True)  # daemon: a hang fails the test, not the run
    compaction.start()
    compaction.join(20)
    assert not compaction.is_alive()
    assert [e.reason for e in refused] == ["reentrant"]  # type: ignore[attr-defined]
    store.close()
    assert not memseg.verify(store_path).problems

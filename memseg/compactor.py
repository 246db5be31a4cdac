"""The compactor: rewrite a store without what is no longer reachable.

The new file is written beside the old one (path + COMPACT_SUFFIX), synced,
locked, and renamed over the path, so the path always names one complete file
(SPEC.md "Archive and compaction"). The old inode is never modified, so
readers that mapped it keep their snapshot; the writer lock is held on the old
file until the locked new file has replaced it, so a writer waiting for the
lock ends up on the new file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from memseg.container import Commit, encode_file_header, encode_trailer_payload
from memseg.errors import CorruptError, MemsegError, WriteFailedError
from memseg.format import COMPACT_SUFFIX, TRAILER, Codec, Kind, State
from memseg.framing import encode_record, frame
from memseg.fs import OS_FS, Buffer, FileHandle, FileSystem
from memseg.recorder import LiveSession
from memseg.toc import RunGroup, TocState, toc_records
from memseg.transfer import Copied, FileRecords, SessionPlan, copy_session, plan_session
from memseg.view import View

if TYPE_CHECKING:
    from memseg.store import PathLike, Store

Progress = Callable[[int, int], None]
# Small records are buffered and written in pieces of about this size; records
# of _DIRECT bytes or more are written as they are (joining would copy them again).
_CHUNK = 4 << 20
_DIRECT = 64 << 10


@dataclass(frozen=True, slots=True)
class CompactReport:
    """What a compaction did."""

    path: str
    bytes_before: int
    bytes_after: int
    sessions_kept: int
    dropped: tuple[uuid.UUID, ...]  # archived sessions removed
    blocks_before: int  # blocks of the kept sessions
    blocks_after: int
    bytes_copied: int  # source bytes copied as stored
    bytes_merged: int  # source bytes of small blocks merged into full-size ones
    seconds: float


class _FileSink:
    """Appends records to the new file, writing them in large pieces."""

    def __init__(self, fh: FileHandle) -> None:
        self._fh = fh
        self.end = 0
        self._parts: list[bytes] = []
        self._pending = 0

    def append(self, record: bytes | memoryview) -> int:
        offset = self.end
        if len(record) >= _DIRECT:
            self.flush()
            self._fh.write(offset, record)
            self.end += len(record)
            return offset
        # Kept for a later write, so copied: a memoryview may be of a reused buffer.
        self._parts.append(bytes(record))
        self.end += len(record)
        self._pending += len(record)
        if self._pending >= _CHUNK:
            self.flush()
        return offset

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            self._pending = 0
            self._fh.write(self.end - len(data), data)


@dataclass(frozen=True, slots=True)
class _NewFile:
    fh: FileHandle
    end: int
    commit: Commit | None
    toc: TocState
    copies: tuple[Copied, ...]


def compact(path: PathLike, *, progress: Progress | None = None, fs: FileSystem | None = None,
            lock_timeout: float = 0.0) -> CompactReport:
    """Rewrite the memseg file at ``path`` without archived sessions or unreachable records."""
    from memseg.store import Store

    fsys = fs or OS_FS
    name = os.fspath(path)
    if not fsys.exists(name):
        # Opening for writing would create it; compacting nothing is a mistake.
        raise FileNotFoundError(errno.ENOENT, "no such memseg file", name)
    with Store(name, "a", fs=fsys, lock_timeout=lock_timeout) as store:
        return compact_store(store, progress)


def refuse_kept_commit(store: Store) -> None:
    """CorruptError kept_commit if the store kept a possibly acknowledged commit for
    salvage when it opened the file: compacting would drop it."""
    if store.kept_from is not None:
        raise CorruptError(
            "kept_commit", "this file holds an unverified or damaged commit, kept for "
            "salvage when it was opened; compacting would drop it: salvage the file "
            "(memseg salvage) and use the salvaged file", offset=store.kept_from)


def compact_store(store: Store, progress: Progress | None = None) -> CompactReport:
    """Compact a store open for writing; it goes on writing to the new file, lock held."""
    refuse_kept_commit(store)
    started = time.perf_counter()
    while True:
        _cover_behind(store)
        store.commit_staged()
        # Both locks, with nothing staged: the new file's single commit is then the old
        # file's last one. ``with`` blocks: an interrupt cannot leave a lock held.
        with store._committing(), store._mutex:
            if not store._dirty and not _behind(store):
                return _rewrite(store, progress, started)


def _rewrite(store: Store, progress: Progress | None, started: float) -> CompactReport:
    """Write the new file and move the store onto it; the caller holds both locks."""
    view = store._current()
    old_maps = list(store._buffers)  # every map so far is of the file being replaced
    before = store._end
    kept = sorted((e for e in view.entries.values() if e.state != State.ARCHIVED),
                  key=lambda e: e.session_offset)
    dropped = tuple(sorted((e.session_id for e in view.entries.values()
                            if e.state == State.ARCHIVED), key=lambda i: i.bytes))
    plans = [plan_session(view, e, merge=True) for e in kept]
    tmp = store.path + COMPACT_SUFFIX
    try:
        assert store._fh is not None
        new = _write(store._fs, store._fh, tmp, view, plans, progress,
                     drop_source_cache=store.sync == "commit")
    except OSError as exc:
        raise WriteFailedError("compact_failed", f"{exc.strerror or exc}; the file is "
                               "unchanged and the store still writes to it") from exc
    try:
        _install(store, tmp, new)
    except MemsegError:
        raise
    except BaseException as exc:
        # Interrupted around the rename or the move onto the new file: which file the
        # store would write to, and whether its recorders point into it, is unknown.
        if store._fh is not new.fh:
            with contextlib.suppress(OSError):
                new.fh.close()
        store._mark_interrupted("a compaction", exc)
        raise
    del view
    _unmap(store, old_maps)
    return CompactReport(
        store.path, before, new.end, len(kept), dropped,
        sum(c.blocks_in for c in new.copies), sum(c.block_count for c in new.copies),
        sum(c.copied for c in new.copies), sum(c.merged for c in new.copies),
        time.perf_counter() - started,
    )


def _unmap(store: Store, maps: list[Buffer]) -> None:
    """Let go of the store's maps of the replaced file, so its disk space can be freed.

    A map still viewed by arrays a caller holds cannot close now; dropping it
    from the store lets it close when the last of them goes.
    """
    old = {id(m) for m in maps}
    store._buffers[:] = [b for b in store._buffers if id(b) not in old]
    for m in maps:
        close = getattr(m, "close", None)
        if close is not None:
            with contextlib.suppress(BufferError):
                close()


def _behind(store: Store) -> list[LiveSession]:
    """Open recorders with blocks no committed snapshot covers yet."""
    out: list[LiveSession] = []
    for rec in store._recorders.values():
        live = rec._live
        entry = store._toc.entries.get(live.session_id)
        if entry is None or (entry.action_count, entry.checkpoint_count) != (
                live.action_count, live.checkpoint_count):
            out.append(live)
    return out


def _cover_behind(store: Store) -> None:
    """Stage a snapshot for each open recorder with blocks no snapshot covers yet.

    The compaction would drop such blocks as unreachable; committed before the
    rewrite, they are the old file's last commit and the new file's single one.
    """
    with store._mutex:
        store._check_writable()
        for live in _behind(store):
            store._stage_snapshot(live, None, end=False)


def _write(fs: FileSystem, src: FileHandle, tmp: str, view: View, plans: Sequence[SessionPlan],
           progress: Progress | None, *, drop_source_cache: bool = False) -> _NewFile:
    """Write, sync and lock the new file at ``tmp``, copying from ``src``, the file ``view``
    shows; on failure remove it. With ``drop_source_cache``, the old file's cached pages
    are dropped while the new file syncs (see _sync_dropping)."""
    # Never truncate a file in place: someone may have it mapped. Removed whatever it
    # is (a dangling symlink too), then made anew: a link there must not be followed.
    if fs.lexists(tmp):
        fs.remove(tmp)
    # Private until it is the old file's: another user must not open it meanwhile and
    # keep a descriptor that reads the whole store later.
    fh = fs.open(tmp, write=True, create=True, mode=0o600, exclusive=True)
    owner = os.getpid()
    try:
        # Locked before it is renamed into place, so no writer can slip in.
        fh.lock(0.0)
        fh.set_access(src.access())
        header, tag = view.header, view.header.tag
        total = sum(p.source_bytes for p in plans)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        if progress is not None:
            progress(0, total)
        sink = _FileSink(fh)
        sink.append(encode_file_header(header.file_id, header.created_ns))
        # Copied records are read with pread, not through the view's map (FileRecords).
        source = FileRecords(src)
        copies = tuple(copy_session(view, p, sink, tag, advance=advance, source=source)
                       for p in plans)
        entries = sorted((c.entry for c in copies), key=lambda e: e.session_id.bytes)
        commit: Commit | None = None
        groups: list[RunGroup] = []
        if view.commit is not None:
            # Uncompressed, so sizes never depend on offsets (SweepReport
            # predicts compacted sizes exactly).
            tocs, group = toc_records(sink.end, [], entries,
                                      partial(encode_record, tag, Kind.TOC, allow_compress=False))
            for toc in tocs:
                sink.append(toc)
            groups = [group]
            toc_offset = group.runs[0].offset  # the last record, which the trailer names
            # The old file's last commit seq and time: the output depends on
            # the live content only, so compaction is deterministic.
            commit = Commit(sink.end, toc_offset, view.commit.seq, 0, view.commit.time_ns)
            sink.append(frame(tag, Kind.TRAILER, Codec.NONE, encode_trailer_payload(commit),
                              TRAILER.size))
        sink.flush()
        if drop_source_cache:
            _sync_dropping(fh, src)
        else:
            fh.sync()
    except BaseException:
        fh.close()
        # Not in a child forked from a progress callback, unwinding through these frames:
        # the file is its parent's, which is still writing it.
        if os.getpid() == owner:
            with contextlib.suppress(OSError):
                fs.remove(tmp)
        raise
    return _NewFile(fh, sink.end, commit, TocState({e.session_id: e for e in entries}, groups),
                    copies)


def _sync_dropping(new: FileHandle, old: FileHandle) -> None:
    """Sync ``new`` while another thread drops ``old``'s cached pages.

    The kernel frees a replaced file's pages when its last user lets go, a quarter of a
    compaction's time; dropping them while this thread waits for the disk overlaps the
    two (about 8% off compacting 620 MB here). Only for a store that syncs its commits:
    its file's pages are clean, and dropping dirty ones would first write back a file
    that is about to be deleted. Dropping is advice: the old file still reads the same
    if the compaction fails (other readers of it, or of a hard link to it, read its pages
    from disk again). A file handle without ``drop_cache`` (one a caller's ``fs`` made), or
    a thread that cannot start, leaves the pages to the kernel as before.
    """
    drop = getattr(old, "drop_cache", None)
    dropper = None
    if drop is not None:
        dropper = threading.Thread(target=drop, name="memseg-drop-cache", daemon=True)
        try:
            dropper.start()
        except RuntimeError:  # no thread to be had (a thread limit, interpreter shutdown)
            dropper = None
    try:
        new.sync()
    finally:
        if dropper is not None:
            dropper.join()


def _renamed(fs: FileSystem, path: str, fh: FileHandle) -> bool | None:
    """Whether ``path`` names the new file (None if that cannot be told)."""
    try:
        return fs.identity(path) == fh.identity()
    except OSError:
        return None


def _install(store: Store, tmp: str, new: _NewFile) -> None:
    """Rename the new file over the old and move the store onto it."""
    fs = store._fs
    try:
        fs.rename(tmp, store.path)
    except OSError as exc:
        if _renamed(fs, store.path, new.fh) is False:
            new.fh.close()
            with contextlib.suppress(OSError):
                fs.remove(tmp)
            raise WriteFailedError("compact_failed", f"{exc.strerror or exc}; the file is "
                                   "unchanged and the store still writes to it") from exc
        # Renamed, or unknown: never write to a replaced inode; refuse writes.
        _switch(store, new)
        raise store._fail(exc) from exc
    _switch(store, new)
    try:
        fs.sync_dir(os.path.dirname(os.path.abspath(store.path)))
    except OSError as exc:
        # The rename may not survive a power cut: stop until reopened.
        raise store._fail(exc) from exc


def _switch(store: Store, new: _NewFile) -> None:
    """Point the store, and its open recorders, at the new file; release the old lock."""
    old = store._switch_file(new.fh, new.end, new.commit, new.toc)
    if old is not None:
        with contextlib.suppress(OSError):
            old.close()
    where = {c.entry.session_id: c for c in new.copies}
    for rec in store._recorders.values():
        live, c = rec._live, where[rec._live.session_id]
        live.session_offset = c.entry.session_offset
        live.index_offset = c.index_offset
        live.index_block_count = c.block_count
        live.last_block_offset = c.last_block_offset
        live.recent = []
        live.stored_bytes = c.bytes

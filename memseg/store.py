"""The Store: open a file for reading (a fixed snapshot) or for appending (one writer)."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from memseg.codec import crc32c, json_bytes
from memseg.container import (
    Commit,
    FileHeader,
    Located,
    encode_file_header,
    encode_trailer_payload,
    kept_tail_start,
    parse_file_header,
    refuse_damaged_commits,
)
from memseg.errors import (
    ClosedError,
    CorruptError,
    MemsegError,
    ReadOnlyError,
    StateError,
    WriteFailedError,
)
from memseg.format import (
    BLOCK_REF,
    COMMIT_SEQ_LIMIT,
    COMPACT_SUFFIX,
    CREATE_SUFFIX,
    FILE_HEADER,
    MAGIC,
    MAX_META,
    MAX_NAME,
    RECENT_BLOCKS_MAX,
    SINGLE_SYNC_MAX_REGION,
    TRAILER,
    TRAILER_REGION_CHECKED,
    Codec,
    Kind,
    State,
)
from memseg.framing import encode_record, frame
from memseg.fs import OS_FS, Buffer, FileHandle, FileSystem, map_whole, resolve_path
from memseg.model import SessionInfo
from memseg.recorder import LiveSession, Recorder
from memseg.records import (
    SessionRecord,
    Snapshot,
    encode_index,
    encode_session,
    encode_snapshot,
)
from memseg.toc import DecodedTocs, TocEntry, TocState, plan_commit, toc_records
from memseg.transfer import block_link, relink_payload
from memseg.view import (
    Session,
    View,
    load_block_refs,
    locate_view,
    read_snapshot,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from memseg.compactor import CompactReport, Progress
    from memseg.retention import SessionKeys, SweepReport

    EntryChange = Callable[[Mapping[uuid.UUID, TocEntry]], Iterable[TocEntry]]

SyncMode = Literal["commit", "none"]
PathLike = str | os.PathLike[str]


def _close_buffer(buf: Buffer) -> None:
    """Close a map unless the caller still holds arrays on it (then GC closes it later)."""
    close = getattr(buf, "close", None)
    if close is not None:
        with contextlib.suppress(BufferError):
            close()


def _still_mapped(buffers: list[Buffer]) -> list[Buffer]:
    """Close the maps nobody holds anything on any more (each keeps a file descriptor);
    return the others, which the garbage collector closes once their arrays are gone."""
    kept = []
    for buf in buffers:
        _close_buffer(buf)
        if getattr(buf, "closed", True) is False:
            kept.append(buf)
    return kept


# Errors about the folder a new file goes in, whatever the file's name.
_FOLDER_ERRORS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                            errno.ELOOP})

def read_view(fs: FileSystem, path: str,
              decoded: DecodedTocs | None = None) -> tuple[View, Located, Buffer]:
    """Map ``path`` read-only and locate its newest intact commit (reusing what
    ``decoded`` holds of the TOC records it reads)."""
    fh = fs.open(path, write=False, create=False)
    try:
        header = parse_file_header(fh.read(0, FILE_HEADER.size))
        size, buf = map_whole(fh)
        view, located, _ = locate_view(fh.read, memoryview(buf), size, header, decoded)
        return view, located, buf
    finally:
        fh.close()


class Store:
    """A memseg file opened for reading (mode "r") or appending (mode "a")."""

    def __init__(self, path: PathLike, mode: str = "r", *, sync: SyncMode = "commit",
                 lock_timeout: float = 0.0, fs: FileSystem | None = None) -> None:
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        if sync not in ("commit", "none"):
            raise ValueError(f"sync must be 'commit' or 'none', not {sync!r}")
        if not lock_timeout >= 0:  # refuses NaN too
            raise ValueError(f"lock_timeout must be a number of seconds >= 0, not {lock_timeout!r}")
        # Absolute and with symlinks resolved, once: a compaction renames its new file
        # over this path, which must still name the same file after the process
        # changes directory, and must replace the file a symlink points to, not the link.
        self.path = resolve_path(os.fspath(path))
        self.mode = mode
        self._pid = os.getpid()  # a forked child may read through this store, not write
        self.sync = sync
        self._fs = fs or OS_FS
        self._buffers: list[Buffer] = []
        self._closed = False
        # Set by close() before it closes the recorders: no new one may start after.
        self._closing = False
        self._fh: FileHandle | None = None
        self._located: Located
        self._mutex = threading.RLock()
        self._commit_lock = threading.Lock()
        # The thread holding the commit lock, so that a call from inside a commit or a
        # compaction (a progress callback, a signal handler) fails instead of waiting for
        # itself.
        self._commit_owner: int | None = None
        self._close_lock = threading.Lock()
        self._failed: WriteFailedError | None = None
        self._recorders: dict[uuid.UUID, Recorder] = {}
        # Where the bytes of a possibly acknowledged commit that this writer kept for
        # salvage begin (SPEC section 11); compaction would drop them, so it refuses.
        self.kept_from: int | None = None
        # Whether this open made the file (an export that fails removes only such a file).
        self.created_file = False
        # A reader's decoded TOC records, so that a refresh decodes only new ones; one
        # refresh at a time uses them. (A writer keeps its TOC state itself.)
        self._decoded = DecodedTocs() if mode == "r" else None
        self._refresh_lock = threading.Lock()
        if mode == "r":
            self._view, self._located, buf = read_view(self._fs, self.path, self._decoded)
            self._buffers.append(buf)
        else:
            self._open_writer(lock_timeout)

    # --- opening for writing ----------------------------------------------

    def _create(self) -> None:
        """Create the file with its header whole and durable before its name exists.

        The header goes to a temporary name, is synced, and is then linked to
        the path (link never replaces: a writer that created the file first
        wins). A crash leaves either no file or a complete header, never a
        garbled one; at worst a 64-byte temporary file stays behind.
        """
        tmp = f"{self.path}.{uuid.uuid4().hex[:12]}{CREATE_SUFFIX}"
        try:
            fh = self._fs.open(tmp, write=True, create=True)
        except OSError as exc:
            # A missing or unwritable folder is the same for the temporary name and the
            # path the caller gave: name theirs. Other errors (a name too long once the
            # suffix is added, say) keep the name that failed.
            if exc.errno not in _FOLDER_ERRORS:
                raise
            raise type(exc)(exc.errno, exc.strerror, self.path) from None
        try:
            fh.write(0, encode_file_header(uuid.uuid4(), time.time_ns()))
            fh.sync()
        except BaseException:
            fh.close()
            with contextlib.suppress(OSError):
                self._fs.remove(tmp)
            raise
        fh.close()
        # FileExistsError: another writer created it meanwhile; its header stands.
        with contextlib.suppress(FileExistsError):
            self._fs.link(tmp, self.path)
            self.created_file = True
        self._fs.remove(tmp)
        self._fs.sync_dir(os.path.dirname(os.path.abspath(self.path)))

    def _open_writer(self, lock_timeout: float) -> None:
        if not self._fs.exists(self.path):
            self._create()
        fh = self._lock(lock_timeout)
        try:
            size = fh.size()
            if size < FILE_HEADER.size and fh.read(0, size)[: len(MAGIC)] == MAGIC[:size]:
                # New, or a creation that died before its header was whole
                # (a header cut anywhere, even after the magic, holds no commit).
                fh.truncate(0)
                header = FileHeader(uuid.uuid4(), 1, 0, time.time_ns())
                fh.write(0, encode_file_header(header.file_id, header.created_ns))
                fh.sync()
                self._fs.sync_dir(os.path.dirname(os.path.abspath(self.path)))
                size = FILE_HEADER.size
            header = parse_file_header(fh.read(0, FILE_HEADER.size))
            buf = fh.map(size)
            view, located, toc = locate_view(fh.read, memoryview(buf), size, header)
            del view  # the writer goes on from the TOC state; let go of the map
            _close_buffer(buf)
            refuse_damaged_commits(located)
            if located.commit is not None and located.commit.seq + 1 >= COMMIT_SEQ_LIMIT:
                # Only damage gets here (2**63 commits are out of reach). A commit
                # numbered 2**63 would be refused by every reader: acknowledged, then lost.
                raise CorruptError(
                    "bad_commit_seq", "the newest commit leaves no sequence number for another; "
                    "read it with mode 'r' or salvage it", offset=located.commit.trailer_offset,
                    expected=f"< {COMMIT_SEQ_LIMIT - 1}", actual=located.commit.seq)
            committed = located.commit.end if located.commit else FILE_HEADER.size
            region_crc = 0
            kept_from = kept_tail_start(fh.read, located, size, header.tag)
            if kept_from is not None:
                # An intact trailer whose commit failed its region CRC, or an intact
                # TOC followed by a trailer that fails its checks: a crash mid-commit,
                # or damage to an acknowledged commit; which, nobody can tell. Keep
                # those bytes for salvage and append after them. Zero padding keeps
                # the next record 8-aligned after an odd-sized tail.
                pad = bytes(-size % 8)
                if pad:
                    fh.write(size, pad)
                region_crc = crc32c(fh.read(committed, size - committed) + pad)
                committed = size + len(pad)
            elif committed < size:
                fh.truncate(committed)  # the torn tail of a writer that died
                fh.sync()
            stale = self.path + COMPACT_SUFFIX
            if self._fs.lexists(stale):  # a dangling symlink too
                self._fs.remove(stale)
        except BaseException:
            fh.close()
            raise
        self._fh = fh
        self._header = header
        self._tag = header.tag
        self._located = located
        self._commit = located.commit
        self._end = committed
        self._toc = toc
        self._dirty: set[uuid.UUID] = set()
        self._ticket = 0
        self._durable_ticket = 0
        # CRC32C of every byte appended since the last commit's trailer.
        self._region_crc = region_crc
        self.kept_from = kept_from
        self._view_cache: View | None = None

    def _lock(self, timeout: float) -> FileHandle:
        """Open and lock the file, retrying if the path was renamed over meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            fh = self._fs.open(self.path, write=True, create=True)
            try:
                fh.lock(max(0.0, deadline - time.monotonic()))
            except BaseException:
                fh.close()
                raise
            # A lock on an inode that a rename has since replaced protects nothing.
            if self._fs.identity(self.path) == fh.identity():
                return fh
            fh.close()

    # --- reading ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("closed", "store is closed")

    def _refuse_if_closing(self) -> None:
        """No recorder may start once close() has begun closing them; caller holds the mutex."""
        if self._closing:
            raise ClosedError("closed", "store is closing")

    def _current(self) -> View:
        self._check_open()
        if self.mode == "r":
            return self._view
        with self._mutex:
            self._check_open()  # again: close() may have run since, and it takes the mutex
            cached = self._view_cache
            if cached is None or cached.limit != self._end:
                assert self._fh is not None
                buf = self._fh.map(self._end)
                cached = View(memoryview(buf)[: self._end], self._header, self._commit,
                              dict(self._toc.entries), self._end)
                self._view_cache = cached
                # Every read after an append maps the file anew: let go of older maps.
                self._buffers = [*_still_mapped(self._buffers), buf]
            return cached

    def sessions(self) -> list[SessionInfo]:
        """Every session, oldest first (reads only the table of contents)."""
        return self._current().infos()

    def session(self, key: uuid.UUID | str) -> Session:
        """One session by UUID, UUID string or unique name; KeyError if none."""
        return self._current().session(key)

    def kind_counts(self) -> dict[str, int]:
        """Actions per kind over every session, from their snapshots (no block is read)."""
        view = self._current()
        total: dict[str, int] = {}
        for entry in view.entries.values():
            snap = read_snapshot(view, entry)
            for kind, count in zip(snap.kinds, snap.kind_counts, strict=True):
                if count:
                    total[kind] = total.get(kind, 0) + count
        return total

    def refresh(self) -> None:
        """See the newest commit (readers see a fixed snapshot until they call this)."""
        self._check_open()
        if self.mode == "r":
            with self._refresh_lock:
                self._view, self._located, buf = read_view(self._fs, self.path, self._decoded)
                self._buffers = [*_still_mapped(self._buffers), buf]

    @property
    def file_id(self) -> uuid.UUID:
        return self._current().header.file_id

    @property
    def commit(self) -> Commit | None:
        """The commit this store shows (None for a file with no commit yet)."""
        return self._current().commit

    @property
    def tail_bytes(self) -> int:
        """Bytes after the shown commit when it was opened: a torn tail or damaged commits."""
        return self._located.tail_bytes

    @property
    def located(self) -> Located:
        """How the shown commit was found (tail bytes, damaged later commits)."""
        return self._located

    # --- writing ----------------------------------------------------------

    def _check_writable(self) -> None:
        self._check_open()
        if self.mode != "a":
            raise ReadOnlyError("read_only", "store was opened read-only (mode 'r')")
        if os.getpid() != self._pid:
            # Its state is a copy of the parent's, which goes on writing the same file.
            raise WriteFailedError("forked", "a forked process cannot write through a store "
                                   "it inherited; open the store again there")
        if self._failed is not None:
            raise WriteFailedError("write_failed",
                                   f"an earlier write failed ({self._failed.detail}); reopen")

    def _fail(self, exc: OSError) -> WriteFailedError:
        """Refuse all further writes. What the failed commit left is not cut here: a
        reader may already map a trailer whose fsync then failed, and cutting mapped
        bytes would fault it. The next writer's open sorts the tail out."""
        self._failed = WriteFailedError("write_failed", f"{exc.strerror or exc}")
        return self._failed

    @contextlib.contextmanager
    def _appends_undone_on(self, *errors: type[BaseException]) -> Iterator[None]:
        """Cut what the block appends, if it raises one of ``errors``; the caller holds the
        mutex and stages nothing meanwhile. Those bytes follow the last commit, so no reader
        maps them; cutting them leaves the file as it was."""
        end, region_crc = self._end, self._region_crc
        try:
            yield
        except errors:
            assert self._fh is not None
            if self._end != end and self._failed is None:
                try:
                    self._fh.truncate(end)
                except OSError as exc:
                    raise self._fail(exc) from exc
                self._end, self._region_crc = end, region_crc
            raise

    def _append(self, record: bytes | memoryview) -> int:
        """Append one framed record; caller holds the mutex."""
        assert self._fh is not None
        offset = self._end
        try:
            self._fh.write(offset, record)
        except OSError as exc:
            raise self._fail(exc) from exc
        crc = crc32c(record, self._region_crc)
        # One statement: an interrupt between the two would leave the region CRC
        # behind the end, and the next commit unverifiable.
        self._end, self._region_crc = offset + len(record), crc
        return offset

    @contextlib.contextmanager
    def _interrupt_fails_store(self) -> Iterator[None]:
        """Around an append and the bookkeeping after it; caller holds the mutex.

        An interrupt (KeyboardInterrupt, a signal handler that raised) between them
        leaves the file holding bytes that the writer's state counts only in part,
        and a later commit would describe them wrongly. As after a failed fsync, the
        store then refuses further writes; reopening finds what the file holds.
        """
        start = self._end
        try:
            yield
        except MemsegError:
            raise
        except BaseException as exc:
            if self._end != start:
                self._mark_interrupted("a write", exc)
            raise

    def _mark_interrupted(self, what: str, exc: BaseException) -> None:
        """Refuse further writes after an interrupt left the file and the writer's state
        out of step; reopening finds what the file holds."""
        with self._mutex:
            if self._failed is None:
                self._failed = WriteFailedError(
                    "write_failed", f"{what} was interrupted ({type(exc).__name__})")

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        """Hold the commit lock, refusing a call from inside this thread's own commit or
        compaction (it would wait for itself forever)."""
        me = threading.get_ident()
        if self._commit_owner == me:
            raise StateError("reentrant", "called from inside this store's own commit or "
                             "compaction (a progress callback, a signal handler)")
        with self._commit_lock:
            self._commit_owner = me
            try:
                yield
            finally:
                self._commit_owner = None

    def start_session(self, name: str | None = None, meta: dict[str, Any] | None = None,
                      session_id: uuid.UUID | str | None = None) -> Recorder:
        """Begin recording a new session; returns its Recorder."""
        if name is not None and (not isinstance(name, str) or len(name.encode()) > MAX_NAME):
            raise ValueError(f"name must be a str of at most {MAX_NAME} bytes")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError("meta must be a dict (a JSON object)")
        sid = uuid.UUID(str(session_id)) if session_id is not None else uuid.uuid4()
        meta_bytes = json_bytes(meta or {})
        if len(meta_bytes) > MAX_META:
            # Refused now: a TOC too large to write would fail every later commit.
            raise ValueError(f"meta is {len(meta_bytes)} bytes as JSON; at most {MAX_META}")
        created = time.time_ns()
        with self._mutex:
            self._check_writable()
            self._refuse_if_closing()
            if sid in self._toc.entries:
                raise ValueError(f"session {sid} already exists")
            record = encode_record(self._tag, Kind.SESSION,
                                   encode_session(SessionRecord(sid, created, name, meta_bytes)))
            with self._interrupt_fails_store():
                offset = self._append(record)
                live = LiveSession(sid, name, meta_bytes, created, offset,
                                   last_activity_ns=created, stored_bytes=len(record))
                self._stage_snapshot(live, None, end=False)
                rec = Recorder(self, live)
                self._recorders[sid] = rec
        return rec

    def resume(self, key: uuid.UUID | str) -> Recorder:
        """Continue recording an active session (one whose writer died, or was closed)."""
        self._check_writable()
        with self._mutex:
            # Under the mutex: no end, archive or compaction can change the entry between
            # this check and the recorder's registration.
            self._refuse_if_closing()
            view = self._current()
            entry = view.find(key)
            if entry.state != State.ACTIVE:
                raise StateError("not_active", f"session {entry.session_id} is "
                                 f"{State(entry.state).name.lower()}, only active sessions resume")
            if entry.session_id in self._recorders:
                raise StateError("busy", f"session {entry.session_id} is being recorded")
            snap, refs = load_block_refs(view, entry)
            as_tuples = [(int(r["offset"]), int(r["actions"]), int(r["checkpoints"])) for r in refs]
            live = LiveSession(
                entry.session_id, entry.name, entry.meta, entry.created_ns, entry.session_offset,
                action_count=snap.action_count, checkpoint_count=snap.checkpoint_count,
                last_activity_ns=snap.last_activity_ns, stored_bytes=entry.stored_bytes,
                index_offset=snap.index_offset, index_block_count=snap.index_block_count,
                last_block_offset=snap.last_block_offset,
                recent=as_tuples[snap.index_block_count :],
                kinds={k: i for i, k in enumerate(snap.kinds)},
                kind_counts=list(snap.kind_counts),
            )
            rec = Recorder(self, live)
            self._recorders[entry.session_id] = rec
        return rec

    def _append_block(self, live: LiveSession, data: bytes, actions: int, checkpoints: int,
                      last_ts: int, kind_tally: Mapping[int, int]) -> None:
        record = frame(self._tag, Kind.BLOCK, Codec.NONE, data, len(data))
        with self._mutex:
            self._check_writable()
            if block_link(data) != live.last_block_offset:
                # A compaction moved the session while the block was encoded.
                data = relink_payload(data, live.last_block_offset, self._end)
                record = frame(self._tag, Kind.BLOCK, Codec.NONE, data, len(data))
            with self._interrupt_fails_store():
                offset = self._append(record)
                live.recent.append((offset, actions, checkpoints))
                live.last_block_offset = offset
                live.unsnapshotted = True
                live.action_count += actions
                live.checkpoint_count += checkpoints
                counts = live.kind_counts
                for code, n in kind_tally.items():
                    if code >= len(counts):
                        counts += [0] * (code + 1 - len(counts))
                    counts[code] += n
                live.stored_bytes += len(record)
                live.last_activity_ns = max(live.last_activity_ns, last_ts)

    def _stage_snapshot(self, live: LiveSession, status: str | None, *, end: bool) -> int:
        """Write the session's snapshot and stage its TOC entry; returns the commit ticket.
        ``status`` was checked by ``Recorder.end``, the only caller that passes one."""
        with self._mutex:
            self._check_writable()
            with self._interrupt_fails_store():
                if (end or len(live.recent) >= RECENT_BLOCKS_MAX) and live.recent:
                    refs = np.array(live.recent, dtype=BLOCK_REF)
                    record = encode_record(self._tag, Kind.INDEX,
                                           encode_index(live.session_id, refs, live.index_offset))
                    live.index_offset = self._append(record)
                    live.stored_bytes += len(record)
                    live.index_block_count += len(live.recent)
                    live.recent = []
                ended_ns = time.time_ns() if end else None
                if ended_ns is not None:
                    live.last_activity_ns = max(live.last_activity_ns, ended_ns)
                state = State.ENDED if end else State.ACTIVE
                kinds = tuple(live.kinds)
                # Kinds recorded but not yet in a block count 0 (the recorder adds a
                # kind to the dictionary before any block holds it).
                counts = (*live.kind_counts, *[0] * (len(kinds) - len(live.kind_counts)))
                snap = Snapshot(
                    live.session_id, live.session_offset, state, status, live.action_count,
                    live.checkpoint_count, live.created_ns, live.last_activity_ns, ended_ns,
                    live.index_offset, live.index_block_count, 0, live.last_block_offset,
                    len(live.recent), kinds, counts,
                )
                payload = encode_snapshot(snap)
                # stored_bytes counts the snapshot itself, so compute its size first.
                record = encode_record(self._tag, Kind.SNAPSHOT, payload)
                offset = self._append(record)
                live.stored_bytes += len(record)
                self._toc.entries[live.session_id] = TocEntry(
                    live.session_id, offset, live.session_offset, live.created_ns,
                    live.last_activity_ns, ended_ns, live.action_count, live.checkpoint_count,
                    live.stored_bytes, state, live.name, status, live.meta,
                )
                self._dirty.add(live.session_id)
                live.unsnapshotted = False
                if end:
                    # Once its end is staged the session may be archived and compacted away
                    # before the recorder returns: it must not be a live recorder by then.
                    self._recorders.pop(live.session_id, None)
                self._ticket += 1
                return self._ticket

    def _flush_session(self, live: LiveSession, status: str | None, *, end: bool) -> None:
        self._commit_through(self._stage_snapshot(live, status, end=end))

    def _commit_through(self, ticket: int) -> None:
        """Commit everything staged up to ``ticket``; concurrent callers share one commit."""
        with self._committing():
            if self._durable_ticket >= ticket:
                return  # a commit that started after our staging covered us
            if self._fh is None:
                # Staged after close()'s own commit: never committed.
                raise ClosedError("closed", "store is closed")
            seq = (self._commit.seq if self._commit else 0) + 1
            if seq >= COMMIT_SEQ_LIMIT:
                # Nothing is written: readers would refuse this trailer.
                raise CorruptError("bad_commit_seq", "no sequence number left for a commit",
                                   expected=f"< {COMMIT_SEQ_LIMIT}", actual=seq)
            prev = self._commit.trailer_offset if self._commit else 0
            with self._mutex:
                self._check_writable()
            appended: list[bool] = []
            try:
                self._write_commit(seq, prev, appended)
            except BaseException as exc:
                if appended and not isinstance(exc, MemsegError):
                    # Interrupted mid-commit (KeyboardInterrupt, a signal handler that
                    # raised): whether the commit reached the disk, and which staged
                    # changes it holds, nobody knows here. As after a failed fsync,
                    # refuse further writes. (A TOC too large to encode fails before:
                    # nothing written, store usable.)
                    self._mark_interrupted("a commit", exc)
                raise

    def _write_commit(self, seq: int, prev: int, appended: list[bool]) -> None:
        """Append the TOC and trailer of the next commit and sync; the caller holds the
        commit lock and has checked that the store can write. ``appended`` gets an item
        once the commit's first byte is written: an error before that changed nothing."""
        assert self._fh is not None
        with self._mutex:
            covered = self._ticket
            kept, ids = plan_commit(self._toc, self._dirty)
            # Encoded before anything is written: a TOC that cannot be encoded fails
            # with the store unchanged.
            tocs, written = toc_records(self._end, kept, [self._toc.entries[i] for i in ids],
                                        partial(encode_record, self._tag, Kind.TOC))
            region_start = self._commit.end if self._commit else FILE_HEADER.size
            # A small commit is written whole and synced once; the trailer's
            # region CRC lets a reader reject it if the disk kept only part.
            single = self._end + sum(map(len, tocs)) - region_start <= SINGLE_SYNC_MAX_REGION
            appended.append(True)
            for toc in tocs:
                self._append(toc)
            toc_offset = written.runs[0].offset  # the last record, which the trailer names
            self._dirty.clear()
            if single:
                commit = self._append_trailer(toc_offset, seq, prev, TRAILER_REGION_CHECKED)
        try:
            if self.sync == "commit":
                self._fh.sync()
            if not single:
                # A large commit: its records and TOC are durable (synced
                # above) before the trailer that makes them visible is written.
                with self._mutex:
                    commit = self._append_trailer(toc_offset, seq, prev, 0)
                if self.sync == "commit":
                    self._fh.sync()
        except OSError as exc:
            with self._mutex:
                raise self._fail(exc) from exc
        with self._mutex:
            self._toc.groups = [written, *kept]
            self._commit = commit
            self._durable_ticket = covered

    def _append_trailer(self, toc_offset: int, seq: int, prev: int, flags: int) -> Commit:
        """Append the trailer closing the current region; caller holds the mutex."""
        commit = Commit(self._end, toc_offset, seq, prev, time.time_ns(), self._region_crc, flags)
        self._append(frame(self._tag, Kind.TRAILER, Codec.NONE, encode_trailer_payload(commit),
                           TRAILER.size))
        self._region_crc = 0
        return commit

    def commit_staged(self) -> None:
        """Commit whatever is staged (flushes commit on their own; this is rarely needed)."""
        self._check_writable()
        with self._mutex:
            ticket = self._ticket
        self._commit_through(ticket)

    def _committed_view(self) -> View:
        """The newest commit, with nothing another thread staged and has not committed:
        the writer's own view shows staged entries, which a crash would still lose."""
        while True:
            self.commit_staged()
            with self._mutex:
                if self._durable_ticket >= self._ticket:
                    return self._current()

    # --- retention and compaction (memseg/retention.py, memseg/compactor.py) ---

    def archive(self, keys: SessionKeys) -> int:
        """Mark ended sessions archived (dropped by the next compaction); returns how many changed."""
        from memseg.retention import archive
        return archive(self, keys)

    def unarchive(self, keys: SessionKeys) -> int:
        """Bring archived sessions back to ended; returns how many changed."""
        from memseg.retention import unarchive
        return unarchive(self, keys)

    def export(self, keys: SessionKeys, dest_path: PathLike, *, lock_timeout: float = 0.0) -> int:
        """Copy sessions' stored records into another memseg file; returns how many were copied."""
        from memseg.retention import export
        return export(self, keys, dest_path, lock_timeout=lock_timeout)

    def sweep(self, inactive_days: float, *, archive_to: PathLike | None = None,
              max_archive_bytes: int | None = None, dry_run: bool = False,
              now_ns: int | None = None, lock_timeout: float = 0.0) -> SweepReport:
        """Archive ended sessions inactive for ``inactive_days`` (see memseg.retention.sweep)."""
        from memseg.retention import sweep
        return sweep(self, inactive_days, archive_to=archive_to,
                     max_archive_bytes=max_archive_bytes, dry_run=dry_run, now_ns=now_ns,
                     lock_timeout=lock_timeout)

    def compact(self, progress: Progress | None = None) -> CompactReport:
        """Rewrite the file without what is unreachable; the store goes on writing to the new file."""
        from memseg.compactor import compact_store
        return compact_store(self, progress)

    def _commit_entries(self, change: EntryChange) -> int:
        """Stage the TOC entries ``change`` derives from the current ones, and commit them.

        ``change`` runs under the mutex, so no compaction moves the entries it
        reads before they are staged (archive, unarchive, export). Returns how
        many entries were staged.
        """
        with self._mutex:
            self._check_writable()
            entries = list(change(self._toc.entries))
            if not entries:
                return 0
            for e in entries:
                self._toc.entries[e.session_id] = e
                self._dirty.add(e.session_id)
            self._ticket += 1
            ticket = self._ticket
        self._commit_through(ticket)
        return len(entries)

    def _switch_file(self, fh: FileHandle, end: int, commit: Commit | None,
                     toc: TocState) -> FileHandle | None:
        """Go on with a compacted file; the caller holds both locks. Returns the old handle."""
        old, self._fh = self._fh, fh
        self._end = end
        self._commit = commit
        self._toc = toc
        self._dirty.clear()
        self._durable_ticket = self._ticket
        self._region_crc = 0
        self._located = Located(commit, 0, ())
        self._view_cache = None
        return old

    # --- closing ----------------------------------------------------------

    def close(self) -> None:
        """Flush open recorders (their sessions stay active), commit, unlock, unmap."""
        # One close at a time: a second caller waits for the first, then finds it done.
        with self._close_lock:
            if not self._closed:
                self._close()

    def _close(self) -> None:
        try:
            # A forked child's copy writes nothing: what its recorders buffered before the
            # fork is the parent's to write, and the child's own writes are refused.
            if self.mode == "a" and self._failed is None and os.getpid() == self._pid:
                failure: Exception | None = None
                with self._mutex:
                    # Under the mutex: a recorder started after this list was taken would
                    # be dropped below unclosed, and a compaction would not move it.
                    self._closing = True
                    recorders = list(self._recorders.values())
                for rec in recorders:
                    try:
                        rec._close_for_store()
                    except Exception as exc:
                        if self._failed is not None:
                            raise  # the file takes no more writes: nothing else can be saved
                        failure = failure or exc  # one recorder's failure must not cost the others
                with self._mutex:
                    self._recorders.clear()
                self.commit_staged()
                if failure is not None:
                    raise failure
        finally:
            # Both locks: a commit or compaction in another thread finishes first, and
            # no reader thread finds the handle gone without seeing the store closed.
            # Closed is set last: a close interrupted before then can be called again
            # and releases the file's lock.
            with self._committing(), self._mutex:
                if self._fh is not None:
                    self._fh.close()
                    self._fh = None
                for buf in self._buffers:
                    _close_buffer(buf)
                self._buffers.clear()
                self._closed = True

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has run (it closes the file even when its commit fails)."""
        return self._closed

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as failure:
            # The block's own exception is what the caller must see; the failed close
            # goes along with it as a note.
            exc.add_note(f"memseg: closing {self.path} failed too: {failure!r}")

    def __repr__(self) -> str:
        return f"<memseg.Store {self.path!r} mode={self.mode!r}>"


def open(path: PathLike, mode: str = "r", *, sync: SyncMode = "commit",
         lock_timeout: float = 0.0, fs: FileSystem | None = None) -> Store:
    """Open a memseg file: "r" for a read-only snapshot, "a" to append (creating it if missing)."""
    return Store(path, mode, sync=sync, lock_timeout=lock_timeout, fs=fs)

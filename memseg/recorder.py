"""Recording one session: buffer actions, cut blocks, flush, end."""

from __future__ import annotations

import operator
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, SupportsIndex

from memseg.blocks import PendingCheckpoint, encode_block
from memseg.codec import encode_value
from memseg.errors import ClosedError
from memseg.format import (
    BLOCK_MAX_ACTIONS,
    BLOCK_MAX_RAW,
    CHECKPOINT_ENTRY,
    MAX_KIND,
    MAX_KINDS,
    MAX_STATUS,
    MAX_VALUE,
    RESULT_SHIFT,
    ValueType,
)

_NO_RESULT = (int(ValueType.NONE), b"")
_TS_MIN, _TS_LIMIT = -(1 << 63), 1 << 63


def _check_status(status: object) -> None:
    """ValueError unless ``status`` is None or a str a snapshot can hold; checked before
    anything is written, so a refused ``end()`` leaves the recorder as it was."""
    if status is None:
        return
    try:
        fits = isinstance(status, str) and len(status.encode()) <= MAX_STATUS
    except UnicodeEncodeError:  # a lone surrogate
        fits = False
    if not fits:
        raise ValueError(f"status must be a str of at most {MAX_STATUS} bytes of UTF-8")


def checked_ts(ts_ns: object) -> int:
    """A caller's timestamp as the i64 a block stores, or TypeError/ValueError now.

    Checked when recorded: a value that fails only when its block is encoded
    would make every later flush of the session fail.
    """
    if type(ts_ns) is not int:
        if isinstance(ts_ns, bool):
            raise TypeError("ts_ns must be an int (nanoseconds), not bool")
        if not isinstance(ts_ns, SupportsIndex):
            raise TypeError(f"ts_ns must be an int (nanoseconds), not {type(ts_ns).__name__}")
        ts_ns = operator.index(ts_ns)  # ints and integer types such as numpy's
    if not _TS_MIN <= ts_ns < _TS_LIMIT:
        raise ValueError(f"ts_ns {ts_ns} is outside the signed 64-bit range")
    return ts_ns

if TYPE_CHECKING:
    from memseg.store import Store


@dataclass(slots=True)
class LiveSession:
    """A session's durable position: what its next snapshot will say."""

    session_id: uuid.UUID
    name: str | None
    meta: bytes
    created_ns: int
    session_offset: int
    action_count: int = 0
    checkpoint_count: int = 0
    last_activity_ns: int = 0
    stored_bytes: int = 0
    index_offset: int = 0
    index_block_count: int = 0
    last_block_offset: int = 0
    # Blocks written since the last INDEX chunk: (offset, actions, checkpoints).
    recent: list[tuple[int, int, int]] = field(default_factory=list)
    # True when blocks were written since the last snapshot, which must then be renewed.
    unsnapshotted: bool = False
    kinds: dict[str, int] = field(default_factory=dict)
    kind_counts: list[int] = field(default_factory=list)


class Recorder:
    """Records actions and checkpoints into one session of a writable store.

    A recorder is meant for one thread at a time; several recorders of one
    store may be used from several threads at once.
    """

    def __init__(self, store: Store, live: LiveSession) -> None:
        self._store = store
        self._live = live
        self._closed = False
        # Guards what is buffered: ``Store.close()`` stages every recorder's buffer from
        # its own thread while the recorder's thread may still be recording into it.
        # Taken before the store's locks, never after.
        self._lock = threading.Lock()
        self._next_seq = live.action_count
        self._reset_pending()

    def _reset_pending(self) -> None:
        self._first_seq = self._next_seq
        self._ts: list[int] = []
        self._codes: list[int] = []
        self._flags: list[int] = []
        self._payloads: list[bytes] = []
        self._results: list[bytes] = []
        self._checkpoints: list[PendingCheckpoint] = []
        self._pending_raw = 0

    @property
    def id(self) -> uuid.UUID:
        return self._live.session_id

    @property
    def name(self) -> str | None:
        return self._live.name

    @property
    def action_count(self) -> int:
        """Actions recorded so far, flushed or not."""
        return self._next_seq

    def _kind_code(self, kind: str) -> int:
        code = self._live.kinds.get(kind)
        if code is None:
            if not isinstance(kind, str) or not kind:
                raise TypeError("kind must be a non-empty str")
            if len(kind.encode()) > MAX_KIND:
                raise ValueError(f"kind is longer than {MAX_KIND} bytes")
            if len(self._live.kinds) >= MAX_KINDS:
                raise ValueError(f"a session holds at most {MAX_KINDS} kinds")
            code = len(self._live.kinds)
            self._live.kinds[kind] = code
        return code

    def record(
        self, kind: str, payload: object = None, *, result: object = None,
        ts_ns: SupportsIndex | None = None,
    ) -> int:
        """Append one action; returns its seq. Durable after the next flush."""
        ptype, pdata = encode_value(payload)
        if result is None:
            rtype, rdata = _NO_RESULT
        else:
            rtype, rdata = encode_value(result)
        return self._record_stored(kind, ptype, pdata, rtype, rdata, ts_ns)

    def _record_stored(self, kind: str, ptype: int, pdata: bytes, rtype: int, rdata: bytes,
                       ts_ns: SupportsIndex | None) -> int:
        """Append one action given as stored (value types and bytes); salvage copies
        actions this way, so no value goes through a decode and encode."""
        size = len(pdata) + len(rdata)
        if size > MAX_VALUE:
            raise ValueError(f"payload and result exceed {MAX_VALUE} bytes")
        ts = time.time_ns() if ts_ns is None else checked_ts(ts_ns)
        # ``with``, not acquire() then try: an interrupt checked for just after
        # acquire() returns would leave the lock held and every later call waiting.
        with self._lock:
            if self._closed:
                raise ClosedError("closed", "recorder has ended")
            # Last: a call refused above must not add its kind to the session's dictionary.
            code = self._live.kinds.get(kind)
            if code is None:
                code = self._kind_code(kind)
            self._ts.append(ts)
            self._codes.append(code)
            self._flags.append(ptype | rtype << RESULT_SHIFT)
            self._payloads.append(pdata)
            self._results.append(rdata)
            self._pending_raw += size
            seq = self._next_seq
            self._next_seq = seq + 1
            if (self._pending_raw >= BLOCK_MAX_RAW
                    or len(self._ts) + len(self._checkpoints) >= BLOCK_MAX_ACTIONS):
                self._cut_block()
            return seq

    def checkpoint(self, snapshot: object, *, ts_ns: SupportsIndex | None = None,
                   flush: bool = True) -> int:
        """Record a checkpoint of state after the actions so far; returns its id.

        By default a checkpoint is a durable point: it and everything recorded before it
        are committed before this returns. With ``flush=False`` it is buffered like an
        action, and is committed by the next ``flush()``, ``checkpoint()`` or ``end()``.
        """
        # A snapshot of None is stored as JSON null (a checkpoint always holds a value,
        # SPEC), and reads back as None all the same.
        vtype, data = encode_value(snapshot) if snapshot is not None else (ValueType.JSON, b"null")
        return self._checkpoint_stored(vtype, data, ts_ns, flush)

    def _checkpoint_stored(self, vtype: int, data: bytes, ts_ns: SupportsIndex | None,
                           flush: bool) -> int:
        """Record a checkpoint given as stored (value type and bytes), as salvage copies it."""
        if vtype == ValueType.NONE:
            raise ValueError("a checkpoint needs a snapshot")
        if len(data) > MAX_VALUE:
            raise ValueError(f"snapshot exceeds {MAX_VALUE} bytes")
        ts = time.time_ns() if ts_ns is None else checked_ts(ts_ns)
        with self._lock:
            if self._closed:
                raise ClosedError("closed", "recorder has ended")
            self._drop_appended()  # its id counts on from what is stored
            cid = self._live.checkpoint_count + len(self._checkpoints)
            self._checkpoints.append(PendingCheckpoint(cid, self._next_seq, ts, vtype, data))
            if flush:
                self._flush_locked()
            else:
                # A buffered checkpoint counts toward the block's bounds as an action does,
                # with its table entry: an empty snapshot still takes CHECKPOINT_ENTRY bytes.
                self._pending_raw += CHECKPOINT_ENTRY.size + len(data)
                if (self._pending_raw >= BLOCK_MAX_RAW
                        or len(self._ts) + len(self._checkpoints) >= BLOCK_MAX_ACTIONS):
                    self._cut_block()
            return cid

    def _cut_block(self) -> None:
        """Encode what is buffered into a block record (appended, not yet committed)."""
        self._drop_appended()
        if not self._ts and not self._checkpoints:
            return
        data = encode_block(self._live.session_id, self._first_seq, self._live.last_block_offset,
                            self._ts, self._codes,
                            self._flags, self._payloads, self._results, self._checkpoints)
        # The newest time, not the last recorded: callers may pass timestamps out of order.
        last_ts = max(max(self._ts, default=0),
                      max((c.ts_ns for c in self._checkpoints), default=0))
        # Kinds are counted per block, not per action: a snapshot staged meanwhile (by
        # a compaction, say) must count only the actions its blocks hold.
        tally = Counter(self._codes)
        self._store._append_block(self._live, data, len(self._ts), len(self._checkpoints),
                                  last_ts, tally)
        self._reset_pending()

    def _drop_appended(self) -> None:
        """Forget the buffered actions and checkpoints a block already holds.

        An interrupt (KeyboardInterrupt, a signal handler that raised) between a
        block's append and the reset of the buffer leaves the buffer holding what
        the block holds; cutting it again would store those actions twice. The
        session's counts say how far its blocks go, so the next cut trims first.
        """
        done = self._live.action_count - self._first_seq
        if done <= 0 and not (self._checkpoints
                              and self._checkpoints[0].id < self._live.checkpoint_count):
            return  # the usual case: nothing buffered is stored yet
        if done > 0:
            for column in (self._ts, self._codes, self._flags, self._payloads, self._results):
                del column[:done]
            self._first_seq += done
        self._checkpoints = [c for c in self._checkpoints if c.id >= self._live.checkpoint_count]
        self._pending_raw = (sum(map(len, self._payloads)) + sum(map(len, self._results))
                             + sum(CHECKPOINT_ENTRY.size + len(c.data) for c in self._checkpoints))

    def flush(self) -> None:
        """Make everything recorded so far durable; returns after the commit."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._closed:
            raise ClosedError("closed", "recorder has ended")
        self._cut_block()
        if self._live.unsnapshotted:
            self._store._flush_session(self._live, status=None, end=False)
        else:
            self._store.commit_staged()  # nothing new here; commit what others staged

    def end(self, status: str | None = "ok") -> None:
        """Seal the session: flush, mark it ended, commit. The recorder is closed after."""
        _check_status(status)
        with self._lock:
            if self._closed:
                raise ClosedError("closed", "recorder has ended")
            self._cut_block()
            ticket = self._store._stage_snapshot(self._live, status, end=True)
            # Once staged, the end belongs to the store: the next commit writes it, whoever
            # makes it, even if this one fails. The recorder is done either way; were it live
            # again, a later flush would turn the ended session back into an active one.
            self._closed = True
        self._store._commit_through(ticket)

    def _close_for_store(self) -> None:
        """The store is closing: stage buffered actions (the store commits them all at
        once), leaving the session active."""
        with self._lock:
            if not self._closed:
                self._cut_block()
                if self._live.unsnapshotted:
                    self._store._stage_snapshot(self._live, None, end=False)
                self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        if exc is None:
            self.end(status="ok")
            return
        try:
            self.end(status="error")
        except Exception as failure:
            # The block's own exception (an interrupt, say) is what the caller must see;
            # that the end could not be committed too goes along with it as a note.
            exc.add_note(f"memseg: ending session {self.id} failed too: {failure!r}")

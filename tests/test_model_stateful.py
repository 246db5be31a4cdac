"""A state machine that compares memseg with a plain-Python model after every step.

Where test_stateful.py checks recording and reopening, this machine covers the whole
API: values of every type, explicit ids and names, checkpoints, automatic block cuts,
flush, end, resume, archive / unarchive, compaction (with a crash copy taken in the
middle), sweeps (dry and real, with an archive file and a size cap), export / import,
close and reopen, readers and refresh(), search, stores reached through symlinks, and
copies of the file as a crash would leave it.

The model follows README.md: a flush, a flushing checkpoint or an end returns after a
commit that holds everything staged; start_session only stages; a reader sees the
commit it opened (or refreshed) at; a crash copy shows the last commit that returned,
or, if taken during a write, possibly the commit that write belonged to.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import memseg
from memseg.format import (
    BLOCK_MAX_ACTIONS,
    BLOCK_MAX_RAW,
    CHECKPOINT_ENTRY,
    COMPACT_SUFFIX,
    CREATE_SUFFIX,
)
from memseg.fs import OS_FS, Access, Buffer, Data, FileHandle, OsFileSystem
from memseg.store import SyncMode
from tests.retention_support import DAY_NS

ACTIVE, ENDED, ARCHIVED = memseg.SessionState.ACTIVE, memseg.SessionState.ENDED, memseg.SessionState.ARCHIVED
# Sessions record real creation times: the sweep's cutoffs are placed around this.
T0 = time.time_ns()
FUTURE = T0 + 10 * DAY_NS
MAX_SESSIONS = 12


class Color(enum.Enum):
    RED = "red"
    ONE = 1


# --- values: what is recorded and what must read back -------------------------------


def normalized(value: Any) -> Any:
    """A JSON value as it reads back (README: NaN/inf -> null, UUID -> str, Enum -> value,
    tuple -> list)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return normalized(value.value)
    if isinstance(value, list | tuple):
        return [normalized(x) for x in value]
    if isinstance(value, dict):
        return {k: normalized(x) for k, x in value.items()}
    raise AssertionError(f"not a value the strategies make: {type(value)}")


def read_back(value: Any) -> Any:
    """What ``value()`` / ``result_value()`` must return for a recorded value."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return normalized(value)


def stored_bytes(value: Any) -> bytes:
    """The bytes memseg stores and search runs on (README: JSON as orjson writes it)."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps bool, int and float apart (``1 == 1.0 == True`` in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return bool(a == b)


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, list | tuple):
        for x in value:
            yield from _leaves(x)
    elif isinstance(value, dict):
        for x in value.values():
            yield from _leaves(x)
    else:
        yield value


def has_out_of_range_int(value: Any) -> bool:
    """Whether a JSON value holds an int outside -2^63 .. 2^64-1 (README: TypeError)."""
    return any(isinstance(x, int) and not isinstance(x, bool) and not -(2**63) <= x < 2**64
               for x in _leaves(value))


keys = st.text(alphabet="abk01é", max_size=4)
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.integers(2**64, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(alphabet="ab01 \"\\é\x00", max_size=8) | st.uuids() | st.sampled_from(list(Color)))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
top_json = (st.dictionaries(keys, json_values, max_size=3) | st.lists(json_values, max_size=3)
            | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.booleans())
payloads = (st.none() | st.binary(max_size=40) | st.binary(max_size=8).map(bytearray)
            | st.text(alphabet="ab01 xé\n", max_size=40) | top_json
            | st.binary(min_size=60, max_size=300).map(lambda b: b * 3))  # compressible
timestamps = (st.none() | st.integers(0, 10**6) | st.integers(-(2**63), 2**63 - 1)
              | st.sampled_from([FUTURE, 2**62, 2**62 - 1, 2**63 - 1, -(2**63), 0]))
kinds = st.sampled_from(["a", "b", "tool_call", "é" * 127, "k" * 255]) | st.text(min_size=1, max_size=6)
names = st.none() | st.sampled_from(["", "run", "run-42", "x", "é" * 512]) | st.text(max_size=12)
metas = st.none() | st.dictionaries(keys, json_values, max_size=3)
statuses = st.none() | st.sampled_from(["ok", "error", "", "é" * 512]) | st.text(max_size=8)
# (pattern, regex, ignore_case)
SEARCHES = [
    ("a", False, False), ("ab", False, False), ("A", False, True), ("a.", True, False),
    ("^a", True, False), ("b$", True, False), ("[0-9]{2}", True, False), ("a+b", True, False),
    ("null", False, False), ('"', False, False), ("é", False, False), ("(?:ab|x)", True, False),
    ("É", False, True), ("x\n", False, False), ("(a|b)\\1", True, False), ("\\bab", True, False),
]
# (kind, payload, result, ts_ns, the error record() must raise)
BAD_RECORDS: list[tuple[str, Any, Any, Any, type[Exception]]] = [
    ("", "x", None, None, TypeError), ("k" * 256, "x", None, None, ValueError),
    ("é" * 128, "x", None, None, ValueError), ("a", object(), None, None, TypeError),
    ("a", {"d": object()}, None, None, TypeError), ("a", "x", None, True, TypeError),
    ("a", "x", None, 2**63, ValueError), ("a", "x", None, -(2**63) - 1, ValueError),
    ("a", "x", None, 1.5, TypeError), ("a", "x", object(), None, TypeError),
    ("fresh-kind", {1: 2}, None, None, TypeError),
]

# --- the model ------------------------------------------------------------------------

# An exact timestamp, or the (low, high) clock readings around a call that took "now".
Ts = int | tuple[int, int]


def ts_low(ts: Ts) -> int:
    return ts[0] if isinstance(ts, tuple) else ts


def ts_high(ts: Ts) -> int:
    return ts[1] if isinstance(ts, tuple) else ts


def ts_matches(got: int, want: Ts) -> bool:
    return want[0] <= got <= want[1] if isinstance(want, tuple) else got == want


@dataclass
class ModelAction:
    kind: str
    ts: Ts
    payload: Any
    result: Any
    # What reads back, worked out once: sessions are compared after every step.
    payload_value: Any = field(init=False)
    payload_bytes: bytes = field(init=False)
    result_value: Any = field(init=False)

    def __post_init__(self) -> None:
        self.payload_value = read_back(self.payload)
        self.payload_bytes = stored_bytes(self.payload)
        self.result_value = read_back(self.result)


@dataclass
class ModelCheckpoint:
    cid: int
    at_seq: int
    ts: Ts
    value: Any


@dataclass(eq=False)  # hashed by identity: entries that share a history share its checks
class History:
    """Everything recorded in one session, flushed or not (append-only: resuming from an
    older commit starts a new History). ``cut_*`` count what is in blocks already written
    (a snapshot may cover those); ``pending_raw`` is the recorder's buffered raw size,
    which decides when it cuts a block on its own."""

    sid: uuid.UUID
    order: int  # creation order: the store lists sessions in it
    name: str | None
    meta: dict[str, Any]
    actions: list[ModelAction] = field(default_factory=list, repr=False)
    checkpoints: list[ModelCheckpoint] = field(default_factory=list, repr=False)
    cut_actions: int = 0
    cut_checkpoints: int = 0
    pending_raw: int = 0

    def prefix(self, actions: int, checkpoints: int) -> History:
        return History(self.sid, self.order, self.name, self.meta, self.actions[:actions],
                       self.checkpoints[:checkpoints], actions, checkpoints)

    def cut(self) -> None:
        """The recorder wrote its buffer as a block."""
        self.cut_actions, self.cut_checkpoints, self.pending_raw = (
            len(self.actions), len(self.checkpoints), 0)

    def cut_if_full(self) -> None:
        """The recorder cuts a block once its buffer reaches a block's limits."""
        buffered = (len(self.actions) - self.cut_actions
                    + len(self.checkpoints) - self.cut_checkpoints)
        if self.pending_raw >= BLOCK_MAX_RAW or buffered >= BLOCK_MAX_ACTIONS:
            self.cut()


@dataclass(frozen=True)
class Entry:
    """What a table-of-contents entry shows: a prefix of a history, a state, a status."""

    history: History
    actions: int
    checkpoints: int
    state: memseg.SessionState
    status: str | None

    def same_session_as(self, other: Entry) -> bool:
        """Whether an export may treat the two as copies of one session (an archived
        session is an ended one)."""
        def key(e: Entry) -> tuple[Any, ...]:
            return (e.history.order, e.actions, e.checkpoints,
                    ENDED if e.state == ARCHIVED else e.state, e.status)
        return key(self) == key(other)

    def activity_times(self) -> list[Ts]:
        return ([a.ts for a in self.history.actions[: self.actions]]
                + [c.ts for c in self.history.checkpoints[: self.checkpoints]])

    def last_activity_bounds(self) -> tuple[int, int]:
        """Bounds for last_activity_ns: creation and end lie between T0 and now."""
        times = self.activity_times()
        return (max([T0, *map(ts_low, times)]),
                max([time.time_ns(), *map(ts_high, times)]))


Listing = dict[uuid.UUID, Entry]


def in_order(ids: Iterable[uuid.UUID], listing: Listing) -> list[uuid.UUID]:
    """Ids in creation order. Draws must not depend on the order of random UUIDs (nor
    of a set of them), or a derandomised run would not repeat."""
    return sorted(ids, key=lambda k: listing[k].history.order)


def with_state(entry: Entry, state: memseg.SessionState) -> Entry:
    return replace(entry, state=state)


# --- comparing a store with the model ----------------------------------------------------


def check_listing(store: memseg.Store, want: Listing, where: str) -> None:
    """sessions() lists exactly the model's sessions, in creation order, with their
    fields; times within what the clock allows."""
    infos = store.sessions()
    entries = sorted(want.values(), key=lambda e: e.history.order)
    assert [i.id for i in infos] == [e.history.sid for e in entries], (where, "ids or order")
    for info, e in zip(infos, entries, strict=True):
        got = (info.name, info.state, info.status, info.action_count, info.checkpoint_count)
        assert got == (e.history.name, e.state, e.status, e.actions, e.checkpoints), (where, got, e)
        assert same_value(info.meta, e.history.meta), (where, info.meta, e.history.meta)
        assert (info.ended_ns is None) == (e.state == ACTIVE), (where, info)
        assert T0 <= info.created_ns <= time.time_ns(), (where, info)
        times = e.activity_times()
        floor = [info.created_ns, info.ended_ns or 0]
        low, high = max(floor + [ts_low(t) for t in times]), max(floor + [ts_high(t) for t in times])
        assert low <= info.last_activity_ns <= high, (where, info, low, high)


# How much of each action check_session compares with the model: "counts" (only
# counts, kinds and checkpoints), "sample" (every column; values of the first and last
# actions and of some between), "all" (every value too).
Depth = Literal["counts", "sample", "all"]
SAMPLE_EDGE = 200  # actions at each end of a session a sample compares
SAMPLE_MIDDLE = 50


def sample_ranges(n: int) -> list[range]:
    """The seqs a sample compares: all of a small session, else both ends and a spread
    between (blocks are cut at the ends: the middle of a large session is old news)."""
    if n <= 2 * SAMPLE_EDGE + SAMPLE_MIDDLE:
        return [range(n)]
    step = (n - 2 * SAMPLE_EDGE) // SAMPLE_MIDDLE
    return [range(SAMPLE_EDGE), range(SAMPLE_EDGE, n - SAMPLE_EDGE, step), range(n - SAMPLE_EDGE, n)]


def check_session(session: memseg.Session, e: Entry, where: str, depth: Depth = "sample") -> None:
    """A session's actions and checkpoints are the entry's prefix of its history."""
    actions = session.actions
    want = e.history.actions[: e.actions]
    assert session.info.action_count == len(actions) == e.actions, (where, len(actions), e.actions)
    counts: dict[str, int] = {}
    for a in want:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    assert actions.kind_counts() == counts, (where, actions.kind_counts(), counts)
    assert session.kind_counts() == counts, where
    checkpoints = session.checkpoints
    want_checkpoints = e.history.checkpoints[: e.checkpoints]
    assert len(checkpoints) == len(want_checkpoints), (where, len(checkpoints), len(want_checkpoints))
    for got_ck, want_ck in zip(checkpoints, want_checkpoints, strict=True):
        assert (got_ck.id, got_ck.at_seq) == (want_ck.cid, want_ck.at_seq), (where, got_ck, want_ck)
        assert ts_matches(got_ck.ts_ns, want_ck.ts), (where, got_ck.ts_ns, want_ck.ts)
        assert same_value(got_ck.value(), read_back(want_ck.value)), (where, got_ck, want_ck)
    if depth == "counts":
        return
    n = e.actions
    assert actions.seq.tolist() == list(range(n)), where
    ts_column = actions.ts_ns.tolist()
    assert all(ts_matches(got, w.ts) for got, w in zip(ts_column, want, strict=True)), where
    names = actions.kinds
    assert [names[code] for code in actions.kind_codes.tolist()] == [w.kind for w in want], where
    for seqs in [range(n)] if depth == "all" else sample_ranges(n):
        got_actions = (actions[seqs.start: seqs.stop] if seqs.step == 1
                       else actions[seqs.start: seqs.stop: seqs.step])
        assert len(got_actions) == len(seqs), (where, seqs)
        for seq, got in zip(seqs, got_actions, strict=True):
            w = want[seq]
            assert (got.seq, got.kind, got.ts_ns) == (seq, w.kind, ts_column[seq]), (where, seq, got)
            assert got.payload == w.payload_bytes, (where, seq)
            assert same_value(got.value(), w.payload_value), (where, seq, got.value(), w.payload)
            assert (got.result is None) == (w.result is None), (where, seq, got.result, w.result)
            assert same_value(got.result_value(), w.result_value), (where, seq)
    if n:
        assert actions[-1].seq == n - 1, where
        stride = max(3, n // 100)
        assert [a.seq for a in actions[::stride]] == list(range(0, n, stride)), where


def check_store(store: memseg.Store, want: Listing, where: str,
                seen_in_full: set[Entry] | None = None) -> None:
    """The listing, store-wide kind counts, every session (a sample of its actions), and
    lookups by name. The writer, checked after every step, passes ``seen_in_full``: each
    entry is then checked in full once and afterwards by its counts only (what a store
    showed of an entry does not change until a compaction or reopen clears the set)."""
    check_listing(store, want, where)
    total: dict[str, int] = {}
    for e in want.values():
        for a in e.history.actions[: e.actions]:
            total[a.kind] = total.get(a.kind, 0) + 1
    assert store.kind_counts() == total, (where, store.kind_counts(), total)
    for e in want.values():
        depth: Depth = ("sample" if seen_in_full is None
                        else "counts" if e in seen_in_full else "all")
        check_session(store.session(e.history.sid), e, where, depth)
        if seen_in_full is not None:
            seen_in_full.add(e)
    by_name: dict[str, list[uuid.UUID]] = {}
    for e in sorted(want.values(), key=lambda e: e.history.order):
        if e.history.name is not None and not reads_as_uuid(e.history.name):
            by_name.setdefault(e.history.name, []).append(e.history.sid)
    for name, ids in list(by_name.items())[:4]:
        if len(ids) == 1:
            assert store.session(name).info.id == ids[0], (where, name)
        else:
            try:
                store.session(name)
            except KeyError:
                continue
            raise AssertionError((where, "an ambiguous name was resolved", name))


def reads_as_uuid(key: str) -> bool:
    """README: a key that reads as a UUID is looked up as an id first."""
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


def expected_hits(want: Listing, rx: re.Pattern[bytes], results: bool,
                  kinds: set[str] | None) -> list[tuple[Any, ...]]:
    """What search must find: per session in creation order, per action, payload first."""
    hits: list[tuple[Any, ...]] = []
    for e in sorted(want.values(), key=lambda e: e.history.order):
        for seq, a in enumerate(e.history.actions[: e.actions]):
            if kinds is not None and a.kind not in kinds:
                continue
            parts = [("payload", a.payload)] + ([("result", a.result)] if results and a.result is not None
                                                else [])
            for part, value in parts:
                m = rx.search(stored_bytes(value))
                if m:
                    hits.append((e.history.sid, seq, part, m.start(), m.end()))
    return hits


# --- crash copies taken right after a write ---------------------------------------------


@dataclass
class WriteCopy:
    """A copy of the store's file taken right after a write to it, with the listings it
    may show: the last acknowledged commit, or the one the write belonged to (known once
    that commit returns)."""

    path: str
    offset: int
    length: int
    acknowledged: Listing
    in_flight: Listing | None = None


class _CopyingFile:
    """A file handle that tells its file system about each write."""

    def __init__(self, inner: FileHandle, fs: CrashCopyFS) -> None:
        self._inner = inner
        self._fs = fs

    def write(self, offset: int, data: Data) -> None:
        self._inner.write(offset, data)
        self._fs.written(self._inner, offset, len(data))

    def size(self) -> int:
        return self._inner.size()

    def read(self, offset: int, length: int) -> bytes:
        return self._inner.read(offset, length)

    def read_into(self, offset: int, buf: memoryview) -> int:
        return self._inner.read_into(offset, buf)

    def sync(self) -> None:
        self._inner.sync()

    def truncate(self, length: int) -> None:
        self._inner.truncate(length)

    def map(self, length: int) -> Buffer:
        return self._inner.map(length)

    def lock(self, timeout: float) -> None:
        self._inner.lock(timeout)

    def identity(self) -> tuple[int, int]:
        return self._inner.identity()

    def access(self) -> Access:
        return self._inner.access()

    def set_access(self, access: Access) -> None:
        self._inner.set_access(access)

    def close(self) -> None:
        self._inner.close()


class CrashCopyFS(OsFileSystem):
    """The real file system; while armed, it copies the watched file after some writes to
    it (at most four between checks), as a crash right then would leave it."""

    def __init__(self, watch: str, directory: Path, rng: random.Random,
                 acknowledged: Callable[[], Listing]) -> None:
        self.watch = watch
        self.directory = directory
        self.rng = rng
        self.acknowledged = acknowledged
        self.armed = False
        self.copies: list[WriteCopy] = []
        self._made = 0

    def open(self, path: str, **how: Any) -> FileHandle:
        return _CopyingFile(super().open(path, **how), self)

    def written(self, fh: FileHandle, offset: int, length: int) -> None:
        if not (self.armed and self.rng.random() < 0.3 and len(self.copies) < 4):
            return
        if fh.identity() != OS_FS.identity(self.watch):
            return
        self._made += 1
        copy = str(self.directory / f"write-copy{self._made}.mseg")
        shutil.copyfile(self.watch, copy)
        self.copies.append(WriteCopy(copy, offset, length, self.acknowledged()))


# --- the machine ---------------------------------------------------------------------------


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


class ModelMachine(RuleBasedStateMachine):
    """One writer on one store, an export destination, up to two readers.

    ``staged`` is what the writer shows (and the next commit will hold), ``committed``
    what the last commit that returned holds, ``dest`` what the export destination holds.
    """

    @initialize(sync=st.sampled_from(["none", "none", "commit"]), through_symlink=st.booleans(),
                dest_through_symlink=st.booleans(), copy_seed=st.integers(0, 2**32 - 1),
                first_records=st.lists(st.tuples(kinds, payloads, st.none() | payloads, timestamps),
                                       max_size=12),
                data=st.data())
    def setup(self, sync: SyncMode, through_symlink: bool, dest_through_symlink: bool,
              copy_seed: int, first_records: list[tuple[str, Any, Any, int | None]],
              data: st.DataObject) -> None:
        """A new store; either file may be reached through a symlink that dangles until
        the store creates the file it names. A few actions are recorded at once, so that
        the first steps (search, sweep, export) have data to work on."""
        self.dir = Path(tempfile.mkdtemp(prefix="memseg-model-"))
        self.path = str(self.dir / "s.mseg")
        self.dest_path = str(self.dir / "dest.mseg")
        (self.dir / "real").mkdir()
        if through_symlink:
            os.symlink(self.dir / "real" / "s.mseg", self.path)
        if dest_through_symlink:
            os.symlink(self.dir / "real" / "dest.mseg", self.dest_path)
        self.through_symlink = through_symlink
        self.sync = sync
        self.staged: Listing = {}
        self.committed: Listing = {}
        self.dest: Listing = {}
        self.histories: dict[uuid.UUID, History] = {}  # the current history per session
        # Which writes get copied, and where copies are cut, depends on the sizes of the
        # writes, which vary from run to run (ids, clock): so a Random of its own, not
        # hypothesis's, whose draws must repeat exactly.
        self.fs = CrashCopyFS(os.path.realpath(self.path), self.dir, random.Random(copy_seed),
                              lambda: dict(self.committed))
        self.store = memseg.open(self.path, "a", sync=self.sync, fs=self.fs)
        self.recorders: dict[uuid.UUID, memseg.Recorder] = {}
        self.closed_recorders: list[memseg.Recorder] = []
        self.readers: list[tuple[memseg.Store, Listing]] = []
        self.held: list[tuple[memseg.Session, npt.NDArray[np.int64], Entry]] = []
        self.seen_in_full: set[Entry] = set()
        self.created = 0
        self.copies_made = 0
        self.acknowledged_size = os.path.getsize(self.path)
        for kind, payload, result, ts in first_records:
            self.record(data, kind, payload, result, ts)

    def teardown(self) -> None:
        for reader, _ in self.readers:
            reader.close()
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- model bookkeeping

    def _committed(self) -> None:
        """A commit returned: it holds everything staged."""
        self.committed = dict(self.staged)
        for copy in self.fs.copies:
            if copy.in_flight is None:
                copy.in_flight = self.committed
        self.acknowledged_size = os.path.getsize(self.path)

    def _stage(self, sid: uuid.UUID, state: memseg.SessionState | None = None,
               status: str | None = None) -> None:
        """A snapshot of the session's written blocks is staged (state and status kept
        unless given)."""
        h, old = self.histories[sid], self.staged[sid]
        self.staged[sid] = Entry(h, h.cut_actions, h.cut_checkpoints, state or old.state,
                                 status if state else old.status)

    def _session_for(self, data: st.DataObject, *, with_recorder: bool = True) -> uuid.UUID | None:
        """A session to work on (one with an open recorder unless told otherwise); now and
        then a new one, so rules need not wait for ``start``."""
        pool = in_order(self.recorders if with_recorder else self.staged, self.staged)
        if len(self.staged) < MAX_SESSIONS and (not pool or data.draw(st.integers(0, 5)) == 0):
            before = set(self.recorders)
            self.start(data.draw(names), data.draw(metas), None, as_str=False)
            new = set(self.recorders) - before
            if new:
                return new.pop()
        if not pool:
            return None
        return data.draw(st.sampled_from(pool))

    def _resumed(self, sid: uuid.UUID, rec: memseg.Recorder) -> None:
        """A recorder continues the session from its staged entry: anything recorded after
        that is gone, so the history goes on from the entry's prefix."""
        e, h = self.staged[sid], self.histories[sid]
        if (len(h.actions), len(h.checkpoints)) != (e.actions, e.checkpoints):
            h = h.prefix(e.actions, e.checkpoints)
            self.histories[sid] = h
            self.staged[sid] = replace(e, history=h)
        h.cut()
        assert rec.action_count == e.actions, (rec.action_count, e.actions)
        self.recorders[sid] = rec

    def _compacted(self, dropped: Iterable[uuid.UUID]) -> None:
        """A compaction dropped exactly the archived sessions and committed."""
        archived = {k for k, e in self.staged.items() if e.state == ARCHIVED}
        assert set(dropped) == archived, (dropped, archived)
        for k in archived:
            del self.staged[k]
            del self.histories[k]
        self._committed()
        self.seen_in_full.clear()

    def _close_writer(self) -> None:
        """Closing stages every recorder's buffer (sessions stay active) and commits."""
        for sid in self.recorders:
            self.histories[sid].cut()
            self._stage(sid)
        self.store.close()
        self._committed()
        self.closed_recorders.extend(self.recorders.values())
        self.recorders.clear()
        self.seen_in_full.clear()

    def _open_writer(self) -> None:
        self.store = memseg.open(self.path, "a", sync=self.sync, fs=self.fs)
        self.acknowledged_size = os.path.getsize(self.path)

    # --- recording

    @precondition(lambda self: len(self.staged) < MAX_SESSIONS)
    @rule(name=names, meta=metas, explicit_id=st.none() | st.uuids() | st.just("existing"),
          as_str=st.booleans())
    def start(self, name: str | None, meta: dict[str, Any] | None, explicit_id: Any,
              as_str: bool) -> None:
        """start_session stages a session; it refuses an id in use and ints out of range
        in meta, and takes an explicit id as a UUID or its string."""
        self.fs.armed = True
        if explicit_id == "existing":
            if not self.staged:
                return
            explicit_id = in_order(self.staged, self.staged)[0]
        session_id = None if explicit_id is None else str(explicit_id) if as_str else explicit_id
        if meta is not None and has_out_of_range_int(meta):
            try:
                self.store.start_session(name=name, meta=meta, session_id=session_id)
            except TypeError:
                return
            raise AssertionError("an out-of-range int in meta was accepted")
        if explicit_id is not None and explicit_id in self.staged:
            try:
                self.store.start_session(name=name, meta=meta, session_id=session_id)
            except ValueError:
                return
            raise AssertionError("a duplicate session id was accepted")
        rec = self.store.start_session(name=name, meta=meta, session_id=session_id)
        if explicit_id is not None:
            assert rec.id == explicit_id
        assert (rec.name, rec.action_count) == (name, 0)
        self.created += 1
        h = History(rec.id, self.created, name, normalized(meta or {}))
        self.histories[rec.id] = h
        self.recorders[rec.id] = rec
        self.staged[rec.id] = Entry(h, 0, 0, ACTIVE, None)

    @rule(data=st.data(), kind=kinds, payload=payloads, result=st.none() | payloads, ts=timestamps)
    def record(self, data: st.DataObject, kind: str, payload: Any, result: Any, ts: int | None) -> None:
        """record() returns the next seq, takes "now" when no timestamp is given, and
        refuses (TypeError) exactly the values holding ints out of range."""
        sid = self._session_for(data)
        if sid is None:
            return
        rec, h = self.recorders[sid], self.histories[sid]
        out_of_range = has_out_of_range_int(payload) or has_out_of_range_int(result)
        before = time.time_ns()
        try:
            seq = rec.record(kind, payload, result=result, ts_ns=ts)
        except TypeError:
            assert out_of_range, "TypeError for a valid JSON value"
            return
        assert not out_of_range, "an out-of-range int was accepted"
        after = time.time_ns()
        assert seq == len(h.actions)
        h.actions.append(ModelAction(kind, (before, after) if ts is None else ts, payload, result))
        h.pending_raw += len(stored_bytes(payload)) + len(stored_bytes(result))
        h.cut_if_full()
        assert rec.action_count == len(h.actions)

    @rule(data=st.data(), n=st.integers(1, 60) | st.sampled_from([BLOCK_MAX_ACTIONS - 1, 8200]),
          kind_count=st.integers(1, 400), flush_each=st.booleans())
    def record_many(self, data: st.DataObject, n: int, kind_count: int, flush_each: bool) -> None:
        """Many actions: past a block's action limit, many kinds, or (flushing each) many
        small blocks, which takes the block index past its recent-blocks chunk."""
        self.fs.armed = True
        sid = self._session_for(data)
        if sid is None:
            return
        rec, h = self.recorders[sid], self.histories[sid]
        if flush_each:
            n = min(n, 140)
        for i in range(n):
            kind = f"k{i % kind_count}"
            payload: Any = f"a{i}b" if i % 2 else {"i": i}  # text that searches find
            rec.record(kind, payload, ts_ns=i)
            h.actions.append(ModelAction(kind, i, payload, None))
            h.pending_raw += len(stored_bytes(payload))
            h.cut_if_full()
            if flush_each:
                rec.flush()
                h.cut()
                self._stage(sid)
                self._committed()

    @rule(data=st.data(), size=st.sampled_from([BLOCK_MAX_RAW - 10, BLOCK_MAX_RAW, 600_000]),
          as_result=st.booleans())
    def record_big(self, data: st.DataObject, size: int, as_result: bool) -> None:
        """A value around a block's raw-size limit, as payload or result."""
        self.fs.armed = True
        sid = self._session_for(data)
        if sid is None:
            return
        rec, h = self.recorders[sid], self.histories[sid]
        blob = (b"big-a" * (size // 5 + 1))[:size]
        payload, result = ("small", blob) if as_result else (blob, None)
        rec.record("big", payload, result=result, ts_ns=7)
        h.actions.append(ModelAction("big", 7, payload, result))
        h.pending_raw += len(stored_bytes(payload)) + len(stored_bytes(result))
        h.cut_if_full()

    @rule(data=st.data(), value=payloads, flush=st.booleans(), ts=timestamps)
    def checkpoint(self, data: st.DataObject, value: Any, flush: bool, ts: int | None) -> None:
        """checkpoint() returns the next id (a None snapshot is stored as JSON null); with
        flush it commits, without it the snapshot waits in the buffer like an action."""
        self.fs.armed = True
        sid = self._session_for(data)
        if sid is None or has_out_of_range_int(value):
            return
        rec, h = self.recorders[sid], self.histories[sid]
        before = time.time_ns()
        cid = rec.checkpoint(value, ts_ns=ts, flush=flush)
        after = time.time_ns()
        assert cid == len(h.checkpoints), (cid, len(h.checkpoints))
        h.checkpoints.append(ModelCheckpoint(cid, len(h.actions), (before, after) if ts is None else ts,
                                             value))
        if flush:
            h.cut()
            self._stage(sid)
            self._committed()
        else:
            stored = b"null" if value is None else stored_bytes(value)
            h.pending_raw += CHECKPOINT_ENTRY.size + len(stored)
            h.cut_if_full()

    @rule(data=st.data())
    def flush(self, data: st.DataObject) -> None:
        """flush() commits the session with everything recorded (and all else staged)."""
        self.fs.armed = True
        sid = self._session_for(data)
        if sid is None:
            return
        self.recorders[sid].flush()
        self.histories[sid].cut()
        self._stage(sid)
        self._committed()

    @rule(data=st.data(), status=statuses, via_context=st.booleans())
    def end(self, data: st.DataObject, status: str | None, via_context: bool) -> None:
        """end() seals and commits; leaving a recorder's ``with`` block ends it with "ok",
        or "error" when an exception leaves it. A session without a recorder is resumed
        first."""
        self.fs.armed = True
        sid = self._session_for(data, with_recorder=False)
        if sid is None or self.staged[sid].state != ACTIVE:
            return
        if sid not in self.recorders:
            self._resumed(sid, self.store.resume(sid))
        rec = self.recorders.pop(sid)
        if via_context:
            raised = data.draw(st.booleans())
            try:
                with rec:
                    if raised:
                        raise KeyError("boom")
            except KeyError:
                pass
            status = "error" if raised else "ok"
        else:
            rec.end(status=status)
        self.histories[sid].cut()
        self._stage(sid, ENDED, status)
        self._committed()
        self.closed_recorders.append(rec)

    @rule(data=st.data(), status=st.sampled_from([1, "x" * 1025]))
    def end_with_bad_status(self, data: st.DataObject, status: Any) -> None:
        """end() refuses a status that is not a short str before writing anything: the
        recorder stays open and unchanged (the invariants check the latter)."""
        sid = self._session_for(data)
        if sid is None:
            return
        rec = self.recorders[sid]
        try:
            rec.end(status=status)
        except ValueError:
            assert not rec.closed
            return
        raise AssertionError("a bad status was accepted")

    @rule(data=st.data(), by_name=st.booleans())
    def resume(self, data: st.DataObject, by_name: bool) -> None:
        """resume() (by id, or by a unique name) continues an active session without a
        recorder from its last commit; it refuses ended ones and ones being recorded."""
        sid = self._session_for(data, with_recorder=False)
        if sid is None:
            return
        e = self.staged[sid]
        key: uuid.UUID | str = sid
        name = e.history.name
        if (by_name and name is not None and not reads_as_uuid(name)
                and sum(x.history.name == name for x in self.staged.values()) == 1):
            key = name
        if e.state != ACTIVE or sid in self.recorders:
            try:
                self.store.resume(key)
            except memseg.StateError:
                return
            raise AssertionError(f"resume of a {e.state} or busy session was accepted")
        self._resumed(sid, self.store.resume(key))

    @rule(data=st.data())
    def use_closed_recorder(self, data: st.DataObject) -> None:
        """A recorder that ended, or whose store closed, refuses every call."""
        if not self.closed_recorders:
            return
        rec = data.draw(st.sampled_from(self.closed_recorders))
        calls: list[Callable[[], object]] = [
            lambda: rec.record("a", "x"), rec.flush, lambda: rec.checkpoint({"x": 1}), rec.end]
        for call in calls:
            try:
                call()
            except memseg.ClosedError:
                continue
            raise AssertionError("a closed recorder accepted a call")

    @rule(data=st.data(), bad=st.sampled_from(BAD_RECORDS))
    def record_bad_input(self, data: st.DataObject, bad: tuple[str, Any, Any, Any, type[Exception]]) -> None:
        """record() refuses bad kinds, values and timestamps with the documented error,
        leaving the session as it was (the invariants check that)."""
        sid = self._session_for(data)
        if sid is None:
            return
        kind, payload, result, ts, error = bad
        try:
            self.recorders[sid].record(kind, payload, result=result, ts_ns=ts)
        except error:
            return
        raise AssertionError(f"record() accepted {bad}")

    @rule()
    def start_bad_input(self) -> None:
        """start_session refuses a long name, meta that is not a dict or not JSON."""
        bad: list[tuple[dict[str, Any], type[Exception]]] = [
            ({"name": "n" * 1025}, ValueError), ({"meta": [1]}, TypeError),
            ({"meta": {"x": object()}}, TypeError)]
        for kwargs, error in bad:
            try:
                self.store.start_session(**kwargs)
            except error:
                continue
            raise AssertionError(f"start_session accepted {kwargs}")

    # --- retention

    @rule(data=st.data(), n=st.integers(1, 3), include_active=st.booleans())
    def archive(self, data: st.DataObject, n: int, include_active: bool) -> None:
        """archive() marks ended sessions archived and counts them (archived ones count
        no more); a list with an active session is refused as a whole."""
        self.fs.armed = True
        pool = in_order((k for k, e in self.staged.items() if include_active or e.state != ACTIVE),
                        self.staged)
        if not pool:
            return
        ids = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=n))
        if any(self.staged[i].state == ACTIVE for i in ids):
            try:
                self.store.archive(ids)
            except memseg.StateError:
                return
            raise AssertionError("an active session was archived")
        changed = self.store.archive(ids)
        ended = {i for i in ids if self.staged[i].state == ENDED}
        assert changed == len(ended), (changed, len(ended))
        for i in ended:
            self.staged[i] = with_state(self.staged[i], ARCHIVED)
        if ended:
            self._committed()

    @rule(data=st.data())
    def unarchive(self, data: st.DataObject) -> None:
        """unarchive() brings archived sessions back to ended."""
        self.fs.armed = True
        pool = in_order((k for k, e in self.staged.items() if e.state == ARCHIVED), self.staged)
        if not pool:
            return
        ids = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))
        assert self.store.unarchive(ids) == len(ids)
        for i in ids:
            self.staged[i] = with_state(self.staged[i], ENDED)
        self._committed()

    @rule(crash_at_call=st.integers(0, 3), use_progress=st.booleans())
    def compact(self, crash_at_call: int, use_progress: bool) -> None:
        """The writer's compaction drops exactly the archived sessions and keeps what open
        recorders wrote. Progress is reported up to done == total, never backwards; a copy
        of the file (and the temporary one) taken during it, as a crash would leave them,
        shows the commit before it, and the next writer removes the temporary file."""
        for sid in self.recorders:
            h, e = self.histories[sid], self.staged[sid]
            if (h.cut_actions, h.cut_checkpoints) != (e.actions, e.checkpoints):
                self._stage(sid)  # written blocks get a snapshot rather than be dropped
        calls: list[tuple[int, int]] = []
        crash_copies: list[str] = []

        def progress(done: int, total: int) -> None:
            calls.append((done, total))
            if len(calls) - 1 == crash_at_call:
                self.copies_made += 1
                copy = str(self.dir / f"mid-compact{self.copies_made}.mseg")
                shutil.copyfile(self.path, copy)
                tmp = os.path.realpath(self.path) + COMPACT_SUFFIX
                if os.path.exists(tmp):
                    shutil.copyfile(tmp, copy + COMPACT_SUFFIX)
                crash_copies.append(copy)

        before = dict(self.staged)  # the compaction commits what is staged first
        report = self.store.compact(progress=progress if use_progress else None)
        if use_progress:
            assert calls, "no progress reported"
            assert calls[-1][0] == calls[-1][1], calls
            assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls)), calls
            for copy in crash_copies:
                with memseg.open(copy) as reader:
                    check_store(reader, before, "mid-compaction crash copy")
                memseg.open(copy, "a").close()
                assert not os.path.exists(copy + COMPACT_SUFFIX), "a stale compaction file was kept"
                with memseg.open(copy) as reader:
                    check_store(reader, before, "mid-compaction crash copy, after a writer")
                os.remove(copy)
        self._compacted(report.dropped)

    @rule(cutoff_at=st.sampled_from(["future", "zero", "huge"]), days=st.sampled_from([0, 1, 0.5]),
          dry_run=st.booleans(), then_real=st.booleans(), to_dest=st.booleans(),
          cap=st.sampled_from([None, 1 << 40, 0]) | st.integers(0, 60_000))
    def sweep(self, cutoff_at: str, days: float, dry_run: bool, then_real: bool, to_dest: bool,
              cap: int | None) -> None:
        """sweep() archives the ended sessions inactive before the cutoff, reports active
        ones past it, exports what the archive file lacks and, over the cap, drops its
        oldest ended sessions (all of them for a cap of 0). A dry run changes nothing and
        reports what the real run then does. Exporting over a different session of the
        same id is refused."""
        cutoff = {"future": T0 + DAY_NS, "zero": 0, "huge": 2**62}[cutoff_at]
        now_ns = cutoff + round(days * DAY_NS)
        view = dict(self.staged)
        bounds = {k: e.last_activity_bounds() for k, e in view.items()}
        if any(bounds[k][0] < cutoff <= bounds[k][1] for k, e in view.items() if e.state != ARCHIVED):
            return  # a "now" timestamp lies too near the cutoff to tell
        due = {k for k, e in view.items() if e.state == ENDED and bounds[k][1] < cutoff}
        still_active = {k for k, e in view.items() if e.state == ACTIVE and bounds[k][1] < cutoff}
        kwargs: dict[str, Any] = {}
        if to_dest:
            kwargs["archive_to"] = self.dest_path
            if cap is not None:
                kwargs["max_archive_bytes"] = cap
            if any(k in self.dest and not self.dest[k].same_session_as(view[k]) for k in due):
                try:
                    self.store.sweep(days, now_ns=now_ns, dry_run=dry_run, **kwargs)
                except memseg.StateError:
                    if not dry_run:
                        self._committed()  # the sweep committed what was staged first
                    return
                raise AssertionError("the sweep exported over a different session")
        dest_before = _size(self.dest_path)
        report = self.store.sweep(days, now_ns=now_ns, dry_run=dry_run, **kwargs)
        if not dry_run:
            self._committed()
        assert (report.dry_run, report.cutoff_ns) == (dry_run, cutoff), report
        assert {i.id for i in report.archived} == due, (report.archived, due)
        assert {i.id for i in report.still_active} == still_active, report.still_active
        exported = {k for k in due if k not in self.dest} if to_dest else set()
        assert {i.id for i in report.exported} == exported, (report.exported, exported)
        dest_after = {**self.dest, **{k: with_state(view[k], ENDED) for k in exported}}
        dest_ended = {k for k, e in dest_after.items() if e.state == ENDED}
        dropped = {i.id for i in report.dropped}
        if to_dest and cap == 0 and (due or dest_before):
            assert dropped == dest_ended, (dropped, dest_ended)
        elif to_dest and cap is not None and 0 < cap < 1 << 40:
            # Which ones depends on their sizes: only ended ones, and all of them if the
            # archive file still ends up over the cap.
            assert dropped <= dest_ended, (dropped, dest_ended)
            if report.archive_bytes_after is not None and report.archive_bytes_after > cap:
                assert dropped == dest_ended, ("over the cap with ended sessions left", report)
        else:
            assert not dropped, report.dropped
        if to_dest:
            assert report.archive_bytes_before == dest_before, (report.archive_bytes_before, dest_before)
        if dry_run:
            assert _size(self.dest_path) == dest_before, "a dry run changed the archive file"
            if not then_real:
                return
            real = self.store.sweep(days, now_ns=now_ns, dry_run=False, **kwargs)
            self._committed()
            assert replace(real, dry_run=True) == report, ("the dry run differs from the real run",
                                                           report, real)
        elif to_dest and cap is not None and report.archive_bytes_after is not None:
            assert _size(self.dest_path) == report.archive_bytes_after, report
        for k in dropped:
            del dest_after[k]
        if to_dest:
            self.dest = dest_after
        for k in due:
            self.staged[k] = with_state(self.staged[k], ARCHIVED)
        if due:
            self._committed()

    @rule(data=st.data(), n=st.integers(1, 3))
    def export(self, data: st.DataObject, n: int) -> None:
        """export() commits what is staged, copies the sessions the destination lacks
        (archived ones arrive ended) and counts them; it refuses to export over a
        different session of the same id."""
        self.fs.armed = True
        if not self.staged:
            return
        ids = data.draw(st.lists(st.sampled_from(in_order(self.staged, self.staged)), min_size=1,
                                 max_size=n))
        entries = {k: self.staged[k] for k in ids}
        if any(k in self.dest and not self.dest[k].same_session_as(e) for k, e in entries.items()):
            try:
                self.store.export(ids, self.dest_path)
            except memseg.StateError:
                self._committed()
                return
            raise AssertionError("an export over a different session was accepted")
        copied = self.store.export(ids, self.dest_path)
        self._committed()
        new = {k for k in entries if k not in self.dest}
        assert copied == len(new), (copied, len(new))
        for k in new:
            self.dest[k] = with_state(entries[k], ENDED) if entries[k].state == ARCHIVED else entries[k]

    @rule()
    def check_dest(self) -> None:
        """The export destination holds exactly what was exported, minus what sweeps
        dropped from it."""
        if not os.path.exists(self.dest_path):
            assert not self.dest, "the export destination is missing"
            return
        with memseg.open(self.dest_path) as dest:
            check_store(dest, self.dest, "destination")

    @rule(data=st.data(), n=st.integers(1, 3), compact_after=st.booleans())
    def import_back(self, data: st.DataObject, n: int, compact_after: bool) -> None:
        """Exporting from the destination into the store (its writer closed) adds the
        sessions it lacks and refuses different ones of the same id; then, maybe, the
        module-level compact() on the path."""
        if not self.dest:
            return
        ids = set(data.draw(st.lists(st.sampled_from(in_order(self.dest, self.dest)), min_size=1,
                                     max_size=n)))
        self._close_writer()
        with memseg.open(self.dest_path) as dest:
            if any(k in self.staged and not self.staged[k].same_session_as(self.dest[k]) for k in ids):
                try:
                    dest.export(in_order(ids, self.dest), self.path)
                except memseg.StateError:
                    pass
                else:
                    raise AssertionError("an import over a different session was accepted")
            else:
                copied = dest.export(in_order(ids, self.dest), self.path)
                new = {k for k in ids if k not in self.staged}
                assert copied == len(new), (copied, len(new))
                for k in new:
                    self.histories[k] = self.dest[k].history
                    self.staged[k] = self.dest[k]
                if new:
                    self._committed()
        if compact_after:
            self._compacted(memseg.compact(self.path).dropped)
        self._open_writer()

    # --- readers, reopening, crashes

    @rule(data=st.data(), from_reader=st.booleans())
    def hold_session(self, data: st.DataObject, from_reader: bool) -> None:
        """Keep a Session and its ts_ns array: they must stay valid across later writes,
        compactions, refreshes and closes (a Session keeps its file's map alive)."""
        source: memseg.Store
        if from_reader and self.readers:
            source, listing = self.readers[data.draw(st.integers(0, len(self.readers) - 1))]
        else:
            source, listing = self.store, self.staged
        if not listing:
            return
        sid = data.draw(st.sampled_from(in_order(listing, listing)))
        session = source.session(sid)
        self.held = [*self.held[-2:], (session, session.actions.ts_ns, listing[sid])]

    @rule(compact_first=st.booleans(), read_between=st.booleans())
    def reopen(self, compact_first: bool, read_between: bool) -> None:
        """Close the writer (its recorders' sessions stay active) and open it again,
        maybe after the module-level compact() and a reader."""
        self._close_writer()
        if compact_first:
            self._compacted(memseg.compact(self.path).dropped)
        if read_between:
            with memseg.open(self.path) as reader:
                check_store(reader, self.committed, "reader between writers")
        self._open_writer()

    @rule()
    def second_writer_locked(self) -> None:
        """A second writer is refused while one is open."""
        try:
            memseg.open(self.path, "a").close()
        except memseg.LockedError:
            return
        raise AssertionError("a second writer was not refused")

    @precondition(lambda self: len(self.readers) < 2)
    @rule()
    def open_reader(self) -> None:
        self.readers.append((memseg.open(self.path), dict(self.committed)))

    @rule(data=st.data())
    def refresh_reader(self, data: st.DataObject) -> None:
        """refresh() moves a reader to the last commit."""
        if not self.readers:
            return
        i = data.draw(st.integers(0, len(self.readers) - 1))
        reader, _ = self.readers[i]
        reader.refresh()
        self.readers[i] = (reader, dict(self.committed))

    @rule(data=st.data())
    def close_reader(self, data: st.DataObject) -> None:
        """A reader shows its snapshot in full up to its close."""
        if not self.readers:
            return
        reader, listing = self.readers.pop(data.draw(st.integers(0, len(self.readers) - 1)))
        check_store(reader, listing, "reader before its close")
        reader.close()

    @rule(search=st.sampled_from(SEARCHES), results=st.booleans(), kind_filter=st.booleans(),
          on_writer=st.booleans())
    def search(self, search: tuple[str, bool, bool], results: bool, kind_filter: bool,
               on_writer: bool) -> None:
        """memseg.search finds exactly the matches in the stored bytes, in order: on the
        writer what is staged, on the path what is committed."""
        pattern, regex, ignore_case = search
        kinds = {"a", "b", "k1"} if kind_filter else None
        source: memseg.Store | str = self.store if on_writer else self.path
        hits = memseg.search(source, pattern, regex=regex, ignore_case=ignore_case,
                             results=results, kinds=kinds)
        got = [(h.session_id, h.seq, h.part, h.start, h.end) for h in hits]
        rx = re.compile(pattern.encode() if regex else re.escape(pattern.encode()),
                        re.IGNORECASE if ignore_case else 0)
        want = expected_hits(self.staged if on_writer else self.committed, rx, results, kinds)
        assert got == want, (search, got[:5], want[:5], len(got), len(want))

    @rule(cut=st.floats(0, 1), adopt=st.booleans(), writer_first=st.booleans())
    def crash(self, cut: float, adopt: bool, writer_first: bool) -> None:
        """Copy the file now (the writer still open) and cut the copy somewhere in what was
        written since the last commit returned: it shows exactly that commit, also after a
        writer opened it. Maybe go on with the copy, as after a crash: what was not
        committed is gone."""
        self.copies_made += 1
        copy = str(self.dir / f"crash{self.copies_made}.mseg")
        shutil.copyfile(self.path, copy)
        size = os.path.getsize(copy)
        assert size >= self.acknowledged_size, (size, self.acknowledged_size)
        point = self.acknowledged_size + int((size - self.acknowledged_size) * cut)
        os.truncate(copy, point)
        with memseg.open(copy) as reader:
            check_store(reader, self.committed, f"crash copy cut at {point} of {size}")
        if writer_first:
            memseg.open(copy, "a").close()
            with memseg.open(copy) as reader:
                check_store(reader, self.committed, "crash copy after a writer")
        if not adopt:
            os.remove(copy)
            return
        for reader, _ in self.readers:
            reader.close()
        self.readers.clear()
        self.store.close()
        os.remove(self.path)
        self.path = copy
        self.through_symlink = False
        self.closed_recorders.extend(self.recorders.values())
        self.recorders.clear()
        self.histories = {}
        self.staged = {}
        for k, e in self.committed.items():
            h = e.history.prefix(e.actions, e.checkpoints)
            self.histories[k] = h
            self.staged[k] = replace(e, history=h)
        self.committed = dict(self.staged)
        self.seen_in_full.clear()
        self.fs.watch = os.path.realpath(self.path)
        self._open_writer()

    # --- invariants

    @invariant()
    def write_copies_show_a_commit(self) -> None:
        """A copy taken right after a write to the store (cut, half the time, inside a
        write that ended the file) shows the last acknowledged commit or the one that
        write belonged to, in full; a writer opening it keeps its sessions."""
        self.fs.armed = False
        rng = self.fs.rng
        for copy in self.fs.copies:
            if copy.offset + copy.length == os.path.getsize(copy.path) and rng.random() < 0.5:
                os.truncate(copy.path, copy.offset + rng.randint(0, copy.length))
            candidates = [copy.acknowledged, copy.in_flight or copy.acknowledged]

            def summary(listing: Listing) -> dict[uuid.UUID, tuple[Any, ...]]:
                return {k: (e.state, e.actions, e.checkpoints, e.status) for k, e in listing.items()}

            with memseg.open(copy.path) as reader:
                got = {i.id: (i.state, i.action_count, i.checkpoint_count, i.status)
                       for i in reader.sessions()}
                shown = next((c for c in candidates if summary(c) == got), None)
                assert shown is not None, ("a write copy shows neither commit", copy.path, got,
                                           [summary(c) for c in candidates])
                check_store(reader, shown, f"write copy {copy.path}")
            memseg.open(copy.path, "a").close()
            with memseg.open(copy.path) as reader:
                assert {i.id for i in reader.sessions()} == set(got), "a writer changed a crash copy"
            os.remove(copy.path)
        self.fs.copies.clear()

    @invariant()
    def symlinks_kept_and_no_temporary_files(self) -> None:
        """Writing and compacting through a symlink keep the link; no temporary file
        (creation or compaction) is left behind."""
        if self.through_symlink:
            assert os.path.islink(self.path), "the symlink was replaced"
        for name in os.listdir(self.dir) + os.listdir(self.dir / "real"):
            assert not name.endswith((COMPACT_SUFFIX, CREATE_SUFFIX)), name

    @invariant()
    def writer_matches_model(self) -> None:
        """The writer shows everything staged."""
        check_store(self.store, self.staged, "writer", self.seen_in_full)

    @invariant()
    def readers_keep_their_snapshot(self) -> None:
        """A reader shows the commit it opened or refreshed at, whatever the writer did
        since (the listing, and the first sessions' checkpoints and counts)."""
        for reader, listing in self.readers:
            check_listing(reader, listing, "reader")
            for e in list(listing.values())[:3]:
                check_session(reader.session(e.history.sid), e, "reader", "counts")

    @invariant()
    def held_sessions_stay_valid(self) -> None:
        """Held sessions and ts_ns arrays still show what they showed when taken."""
        for session, ts_column, e in self.held:
            assert len(ts_column) == e.actions
            assert all(ts_matches(int(got), want.ts)
                       for got, want in zip(ts_column, e.history.actions[: e.actions], strict=True))
            check_session(session, e, "held session")

    @invariant()
    def recorders_count_their_actions(self) -> None:
        """Each open recorder's action_count is what it recorded."""
        for sid, rec in self.recorders.items():
            assert rec.action_count == len(self.histories[sid].actions), sid


# Examples come from the profile (conftest.py); each is a long run of steps, so the
# nightly profile's count is capped to keep this file to a few minutes.
ModelMachine.TestCase.settings = settings(
    max_examples=min(settings().max_examples, 1000), stateful_step_count=50, deadline=None,
)
TestModelMachine = ModelMachine.TestCase

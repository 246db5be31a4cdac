"""The table of contents: one entry per session, stored as a log of runs.

Each commit writes a TOC record holding the entries changed since the last
commit plus the offsets of older TOC records ("runs") that, together, hold the
current state. Runs are merged like a binary counter (SPEC.md "TOC"), so a
commit rewrites O(log n) entries on average and open reads O(log n) records.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from memseg.codec import utf8
from memseg.errors import CorruptError
from memseg.format import (
    FILE_HEADER,
    FLAG_HAS_ENDED,
    MAX_NAME,
    MAX_PAYLOAD,
    MAX_STATUS,
    STATE_OF_CODE,
    TOC_ENTRY,
    TOC_HEADER,
    TOC_RUN,
    Kind,
    State,
    record_size,
)
from memseg.framing import read_record

FLAG_HAS_NAME = 0x02
FLAG_HAS_STATUS = 0x04
_KNOWN_FLAGS = FLAG_HAS_ENDED | FLAG_HAS_NAME | FLAG_HAS_STATUS

# Entry bytes (fixed part and strings) one TOC record holds at most. A commit whose
# entries need more writes them across several records, the earlier ones named as
# runs by the last (SPEC section 4, "Large TOCs"): every record stays far below
# MAX_PAYLOAD, leaving room for the header and the run list.
TOC_RECORD_BUDGET = MAX_PAYLOAD // 2


# Not frozen: opening a store builds one per session per run, and a frozen
# dataclass's __init__ costs several times more. Treat entries as immutable.
@dataclass(slots=True)
class TocEntry:
    """The current state of one session, as the TOC records it."""

    session_id: uuid.UUID
    snapshot_offset: int
    session_offset: int
    created_ns: int
    last_activity_ns: int
    ended_ns: int | None
    action_count: int
    checkpoint_count: int
    stored_bytes: int
    state: State
    name: str | None
    status: str | None
    meta: bytes


@dataclass(frozen=True, slots=True)
class Run:
    """An older TOC record whose inline entries are part of the current state."""

    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class RunGroup:
    """The TOC records one commit wrote (one, or several when its entries were split),
    newest first, and the ids they hold. The merge policy folds a group whole: split
    records are each far smaller than their group, and folding them one by one would
    cascade into rewriting every group at once."""

    runs: tuple[Run, ...]
    ids: frozenset[uuid.UUID]

    @property
    def count(self) -> int:
        return sum(r.count for r in self.runs)


def encode_toc(runs: Sequence[Run], entries: Iterable[TocEntry]) -> bytes:
    """TOC payload: header, runs (newest first), fixed entries, then the string heap."""
    fixed: list[bytes] = []
    heap: list[bytes] = []
    for e in entries:
        name = e.name.encode() if e.name is not None else b""
        status = e.status.encode() if e.status is not None else b""
        flags = (
            (FLAG_HAS_ENDED if e.ended_ns is not None else 0)
            | (FLAG_HAS_NAME if e.name is not None else 0)
            | (FLAG_HAS_STATUS if e.status is not None else 0)
        )
        fixed.append(TOC_ENTRY.pack(
            e.session_id.bytes, e.snapshot_offset, e.session_offset, e.created_ns,
            e.last_activity_ns, e.ended_ns or 0, e.action_count, e.checkpoint_count,
            e.stored_bytes, e.state, flags, len(name), len(status), 0, len(e.meta), 0,
        ))
        heap += (name, status, e.meta)
    heap_bytes = b"".join(heap)
    head = TOC_HEADER.pack(len(runs), len(fixed), len(heap_bytes), 0)
    run_bytes = b"".join(TOC_RUN.pack(r.offset, r.count) for r in runs)
    return head + run_bytes + b"".join(fixed) + heap_bytes


def entry_size(e: TocEntry) -> int:
    """Bytes ``e`` takes in a TOC payload: its fixed part and its strings."""
    name = len(e.name.encode()) if e.name is not None else 0
    status = len(e.status.encode()) if e.status is not None else 0
    return TOC_ENTRY.size + name + status + len(e.meta)


def fits_one_record(entry_bytes: int) -> bool:
    """Whether entries taking ``entry_bytes`` in all go to a single TOC record."""
    return entry_bytes <= TOC_RECORD_BUDGET


def split_entries(sizes: Sequence[int], budget: int) -> list[int]:
    """How many entries each TOC record takes, in order: each as many as fit ``budget``
    bytes (at least one). One record, possibly empty, when all fit."""
    counts: list[int] = []
    count = total = 0
    for n in sizes:
        if count and total + n > budget:
            counts.append(count)
            count = total = 0
        count += 1
        total += n
    counts.append(count)
    return counts


def uncompressed_toc_size(sizes: Sequence[int]) -> int:
    """File bytes of the uncompressed TOC records ``toc_records`` writes, with no older
    runs, for entries of these ``entry_size``s in this order (as a compaction writes)."""
    counts = split_entries(sizes, TOC_RECORD_BUDGET)
    total = start = 0
    for count in counts:
        payload = TOC_HEADER.size + sum(sizes[start : start + count])
        total += record_size(payload)
        start += count
    # The last record also names the others as runs.
    return total - record_size(payload) + record_size(payload + (len(counts) - 1) * TOC_RUN.size)


def toc_records(at: int, kept: Sequence[RunGroup], entries: Sequence[TocEntry],
                frame_toc: Callable[[bytes], bytes]) -> tuple[list[bytes], RunGroup]:
    """The framed TOC records of one commit, to be appended in order at offset ``at``.

    ``entries`` are written inline; when they outgrow one record the earlier parts go to
    records of their own, each a run of the last (newest first, before the runs of
    ``kept``). Returns the records and the group they make; the group's first run is the
    last record, which the trailer names.
    """
    counts = split_entries([entry_size(e) for e in entries], TOC_RECORD_BUDGET)
    records: list[bytes] = []
    parts: list[Run] = []
    start = 0
    for count in counts[:-1]:
        record = frame_toc(encode_toc([], entries[start : start + count]))
        parts.insert(0, Run(at, count))
        records.append(record)
        at += len(record)
        start += count
    older = [r for g in kept for r in g.runs]
    records.append(frame_toc(encode_toc(parts + older, entries[start:])))
    group = RunGroup((Run(at, len(entries) - start), *parts),
                     frozenset(e.session_id for e in entries))
    return records, group


def decode_toc(payload: bytes, offset: int) -> tuple[list[Run], list[TocEntry]]:
    """Parse and check a TOC payload; ``offset`` is the TOC record's offset."""
    if len(payload) < TOC_HEADER.size:
        raise CorruptError("toc_layout", "TOC shorter than its header", offset=offset)
    run_count, entry_count, heap_len, reserved = TOC_HEADER.unpack_from(payload)
    expected = TOC_HEADER.size + run_count * TOC_RUN.size + entry_count * TOC_ENTRY.size + heap_len
    if reserved or expected != len(payload):
        raise CorruptError("toc_layout", "TOC counts do not add up to its length", offset=offset,
                           expected=expected, actual=len(payload))
    pos = TOC_HEADER.size
    runs: list[Run] = []
    previous = offset
    for run_off, count in TOC_RUN.iter_unpack(payload[pos : pos + run_count * TOC_RUN.size]):
        # Strictly decreasing offsets: no run repeats, and none points forward or at itself.
        if not FILE_HEADER.size <= run_off < previous or run_off % 8:
            raise CorruptError("bad_reference", "TOC run offset", offset=offset,
                               expected=f"aligned, in [{FILE_HEADER.size}, {previous})",
                               actual=run_off)
        runs.append(Run(run_off, count))
        previous = run_off
    pos += run_count * TOC_RUN.size
    heap_pos = pos + entry_count * TOC_ENTRY.size
    entries: list[TocEntry] = []
    new_id, from_bytes = uuid.UUID, int.from_bytes  # hoisted: this loop runs per session
    for fields in TOC_ENTRY.iter_unpack(payload[pos:heap_pos]):
        (sid, snap, sess, created, last, ended, actions, ckpts, stored, state, flags,
         name_len, status_len, res1, meta_len, res2) = fields
        if state not in STATE_OF_CODE or flags & ~_KNOWN_FLAGS or res1 or res2:
            raise CorruptError("toc_entry", "bad state, flags or reserved field", offset=offset)
        if not FILE_HEADER.size <= sess <= snap < offset:
            raise CorruptError("bad_reference", "TOC entry's record offsets", offset=offset,
                               expected=f"session <= snapshot < {offset}", actual=(sess, snap))
        if name_len > MAX_NAME or status_len > MAX_STATUS:
            raise CorruptError("toc_entry", "name or status too long", offset=offset)
        end = heap_pos + name_len + status_len + meta_len
        if end > len(payload):
            raise CorruptError("toc_layout", "entry strings past the heap", offset=offset)
        name_end = heap_pos + name_len
        status_end = name_end + status_len
        try:
            name = payload[heap_pos:name_end].decode()
            status = payload[name_end:status_end].decode()
        except UnicodeDecodeError:
            # Again, to report which string (a clean path costs no extra calls).
            utf8(payload[heap_pos:name_end], offset, "name")
            utf8(payload[name_end:status_end], offset, "status")
            raise
        meta = payload[status_end:end]
        heap_pos = end
        entries.append(TocEntry(
            new_id(int=from_bytes(sid)), snap, sess, created, last,
            ended if flags & FLAG_HAS_ENDED else None, actions, ckpts, stored, STATE_OF_CODE[state],
            name if flags & FLAG_HAS_NAME else None,
            status if flags & FLAG_HAS_STATUS else None, meta,
        ))
    if heap_pos != len(payload):
        raise CorruptError("toc_layout", "heap length does not match its strings", offset=offset)
    return runs, entries


@dataclass(slots=True)
class TocState:
    """Every session's entry, and the runs the newest TOC is made of."""

    entries: dict[uuid.UUID, TocEntry]
    # The newest TOC and its runs, grouped by the commit that wrote them, newest first
    # (the writer needs them to merge).
    groups: list[RunGroup]


class DecodedTocs:
    """The TOC records a reader decoded, by offset, kept from one refresh to the next.

    A committed TOC record never changes, so a refresh need decode only the records that
    are new since the last; decoding costs Python work per session, and a poll of an
    unchanged file with 100,000 sessions took two thirds of a second without this. A
    record's decode is reused only when its payload is the same, byte for byte (every
    record is still read and its CRC checked); what the last load did not use is dropped.
    """

    def __init__(self) -> None:
        self._records: dict[int, tuple[bytes, list[Run], list[TocEntry]]] = {}
        self._used: dict[int, tuple[bytes, list[Run], list[TocEntry]]] = {}
        self._misses = 0
        self._state: tuple[int, TocState] | None = None

    def decode(self, payload: bytes, offset: int) -> tuple[list[Run], list[TocEntry]]:
        """`decode_toc`, or its result for the same payload at the same offset."""
        hit = self._records.get(offset)
        if hit is None or hit[0] != payload:
            self._misses += 1
            hit = (payload, *decode_toc(payload, offset))
        self._used[offset] = hit
        return hit[1], hit[2]

    def start(self) -> None:
        self._used, self._misses = {}, 0

    def reusable(self, toc_offset: int) -> TocState | None:
        """The last load's state, if this load read the very same records."""
        if self._misses or self._state is None or self._state[0] != toc_offset:
            return None
        if self._used.keys() != self._records.keys():
            return None
        return self._state[1]

    def finish(self, toc_offset: int, state: TocState) -> TocState:
        self._records, self._used = self._used, {}
        self._state = (toc_offset, state)
        return state


def load_toc(buf: bytes | memoryview, toc_offset: int, limit: int, tag: int,
             decoded: DecodedTocs | None = None) -> TocState:
    """Read the TOC record at ``toc_offset`` (ending by ``limit``) and the runs it names.

    A reader passes ``decoded`` to reuse what it decoded before (the state it returns
    is then shared between loads: a reader never changes it).
    """
    decode = decode_toc if decoded is None else decoded.decode
    if decoded is not None:
        decoded.start()
    _, payload = read_record(buf, toc_offset, limit, tag, Kind.TOC)
    runs, inline = decode(payload, toc_offset)
    # Oldest first, so newer entries win: each run, its entries, where its record ends.
    older: list[tuple[Run, list[TocEntry], int]] = []
    for run in reversed(runs):
        head, run_payload = read_record(buf, run.offset, toc_offset, tag, Kind.TOC)
        _, run_entries = decode(run_payload, run.offset)
        if len(run_entries) != run.count:
            raise CorruptError("toc_run", "run entry count", offset=run.offset,
                               expected=run.count, actual=len(run_entries))
        older.append((run, run_entries, head.end))
    if decoded is not None:
        same = decoded.reusable(toc_offset)
        if same is not None:
            return decoded.finish(toc_offset, same)
    entries: dict[uuid.UUID, TocEntry] = {}
    # Newest first: each record's run, the ids it holds, and where it ends.
    loaded = [(Run(toc_offset, len(inline)), frozenset(e.session_id for e in inline), 0)]
    for run, run_entries, end in older:
        for e in run_entries:
            entries[e.session_id] = e
        loaded.insert(1, (run, frozenset(e.session_id for e in run_entries), end))
    for e in inline:
        entries[e.session_id] = e
    state = TocState(entries, _grouped(loaded))
    return state if decoded is None else decoded.finish(toc_offset, state)


def _grouped(loaded: Sequence[tuple[Run, frozenset[uuid.UUID], int]]) -> list[RunGroup]:
    """Runs grouped by the commit that wrote them. One commit's TOC records are appended
    back to back, and different commits' are always apart (a trailer at least lies
    between), so a record ending where the next newer one starts belongs to its group."""
    groups: list[tuple[list[Run], set[uuid.UUID]]] = []
    newer_at = -1
    for run, ids, end in loaded:
        if end == newer_at:
            groups[-1][0].append(run)
            groups[-1][1].update(ids)
        else:
            groups.append(([run], set(ids)))
        newer_at = run.offset
    return [RunGroup(tuple(runs), frozenset(ids)) for runs, ids in groups]


def plan_commit(
    state: TocState, changed: set[uuid.UUID]
) -> tuple[list[RunGroup], list[uuid.UUID]]:
    """Choose the run groups a new TOC keeps and the ids it writes inline.

    While the new run is at least half the size of the newest existing group,
    that group is folded into it, so group sizes at least double with age: open
    reads O(log n) groups and each entry is rewritten O(log n) times.
    """
    pending = set(changed)
    groups = list(state.groups)
    while groups and 2 * len(pending) >= groups[0].count:
        pending |= groups.pop(0).ids
    return groups, sorted(pending, key=lambda i: i.bytes)

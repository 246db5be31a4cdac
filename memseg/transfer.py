"""Copying a session's stored records to another place: export and compaction.

SESSION records, and the columns and compressed sections of BLOCK records, are
copied as stored (re-framed with the destination's file tag); only what holds
file offsets is rewritten: each block's ``prev_block`` link (with its columns
CRC), and the session's INDEX and SNAPSHOT, rebuilt as one INDEX chunk listing
every block. Every copied payload's CRC is checked first, so a copy never
blesses damaged bytes with a fresh checksum. With ``merge``, runs of small
consecutive blocks become one full-size block (blockmerge.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memseg.blockmerge import columns_length, merge_records
from memseg.codec import crc32c
from memseg.errors import CorruptError
from memseg.format import (
    BLOCK_COLUMNS_CRC_SPAN,
    BLOCK_HEADER,
    BLOCK_MAX_ACTIONS,
    BLOCK_MAX_RAW,
    BLOCK_REF,
    RECORD_HEADER,
    Codec,
    Kind,
    State,
)
from memseg.framing import RecordHeader, encode_record, frame, parse_header, record_header
from memseg.fs import FileHandle
from memseg.records import Snapshot, encode_index, encode_snapshot
from memseg.toc import TocEntry
from memseg.view import View, load_block_refs

Advance = Callable[[int], None]


class Sink(Protocol):
    """Where copied records go."""

    def append(self, record: bytes | memoryview) -> int:
        """Write ``record`` next; return the offset it lands at. A memoryview may be
        of a reused buffer: write or copy it before returning."""
        ...


class CountingSink:
    """Measures a copy without writing it.

    Copies write INDEX and SNAPSHOT records uncompressed, so a session's copy
    has the same size wherever it lands, and measuring at offset 0 is exact.
    """

    def __init__(self, start: int = 0) -> None:
        self.end = start

    def append(self, record: bytes | memoryview) -> int:
        offset = self.end
        self.end += len(record)
        return offset


@dataclass(frozen=True, slots=True)
class SourceBlock:
    """One block of the session being copied."""

    head: RecordHeader
    size: int  # bytes of the record in the source
    actions: int
    checkpoints: int
    raw: int  # decompressed payload and checkpoint bytes: what bounds a merged block


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """A session's checked records, and which runs of blocks become one block."""

    entry: TocEntry
    snapshot: Snapshot
    session: RecordHeader
    blocks: tuple[SourceBlock, ...]
    groups: tuple[tuple[int, int], ...]  # [start, stop) ranges of ``blocks``

    @property
    def source_bytes(self) -> int:
        """Bytes of the source records that are copied (SESSION and BLOCK records)."""
        return self.session.end - self.session.offset + sum(b.size for b in self.blocks)


@dataclass(frozen=True, slots=True)
class Copied:
    """Where a copied session landed."""

    entry: TocEntry  # its TOC entry in the destination
    index_offset: int
    last_block_offset: int
    block_count: int
    bytes: int  # bytes written for it, the entry's stored_bytes
    copied: int  # source bytes copied as stored
    merged: int  # source bytes of blocks that were merged (decompressed and recompressed)
    blocks_in: int


def entries(block: SourceBlock) -> int:
    """Actions and checkpoints: what BLOCK_MAX_ACTIONS bounds, as when recording."""
    return block.actions + block.checkpoints


def _small(block: SourceBlock) -> bool:
    """Blocks under a quarter of the bounds are worth merging; larger ones are copied
    as stored, since merging them would recompress much for little gain."""
    return block.raw < BLOCK_MAX_RAW // 4 and entries(block) < BLOCK_MAX_ACTIONS // 4


def group_blocks(blocks: tuple[SourceBlock, ...]) -> tuple[tuple[int, int], ...]:
    """Greedy runs of consecutive small blocks that fit the block bounds together;
    every other block is a group of its own.

    A run is cut only when the next block would overflow it, which leaves the
    merged block at least three quarters full: grouping the output again yields
    one block per group, so compacting a compacted file changes nothing.
    """
    groups: list[tuple[int, int]] = []
    start = count = raw = 0
    for i, b in enumerate(blocks):
        if not _small(b):
            if i > start:
                groups.append((start, i))
            groups.append((i, i + 1))
            start, count, raw = i + 1, 0, 0
            continue
        if i > start and (count + entries(b) > BLOCK_MAX_ACTIONS or raw + b.raw > BLOCK_MAX_RAW):
            groups.append((start, i))
            start, count, raw = i, 0, 0
        count += entries(b)
        raw += b.raw
    if start < len(blocks):
        groups.append((start, len(blocks)))
    return tuple(groups)


def plan_session(view: View, entry: TocEntry, *, merge: bool) -> SessionPlan:
    """Check the session's record headers against its references and plan the copy."""
    tag = view.header.tag
    snap, refs = load_block_refs(view, entry)
    session = parse_header(view.buf, entry.session_offset, entry.snapshot_offset, tag)
    if session.kind != Kind.SESSION:
        raise CorruptError("wrong_kind", "session reference", offset=session.offset,
                           expected="SESSION", actual=session.kind)
    blocks: list[SourceBlock] = []
    seq = 0
    for offset, actions, checkpoints in refs.tolist():
        head = parse_header(view.buf, offset, entry.snapshot_offset, tag)
        if head.kind != Kind.BLOCK or head.codec != Codec.NONE or head.stored_len < BLOCK_HEADER.size:
            raise CorruptError("wrong_kind", "block reference", offset=offset,
                               expected="BLOCK", actual=head.kind)
        sid, first_seq, _prev, n, c, blob_raw, _, ck_raw, *_rest = BLOCK_HEADER.unpack_from(
            view.buf, head.payload_offset)
        if sid != entry.session_id.bytes or first_seq != seq or n != actions or c != checkpoints:
            raise CorruptError("block_mismatch", "block does not match its reference",
                               offset=offset)
        seq += n
        blocks.append(SourceBlock(head, head.end - offset, n, c, blob_raw + ck_raw))
    frozen = tuple(blocks)
    groups = group_blocks(frozen) if merge else tuple((i, i + 1) for i in range(len(frozen)))
    return SessionPlan(entry, snap, session, frozen, groups)


class RecordSource(Protocol):
    """Where copied records are read from."""

    def record(self, head: RecordHeader) -> memoryview:
        """The whole record at ``head`` (header, payload, padding), writable, valid
        until the next call."""
        ...


class MappedRecords:
    """Records copied out of a mapped or in-memory file image."""

    def __init__(self, buf: bytes | memoryview) -> None:
        self._buf = buf

    def record(self, head: RecordHeader) -> memoryview:
        return memoryview(bytearray(memoryview(self._buf)[head.offset : head.end]))


class FileRecords:
    """Records read with pread into one reused buffer.

    A whole-file copy through a map faults every page in and pays again to
    unmap them (about as long as the copy itself); reading into one buffer
    touches each byte once, like a plain file copy.
    """

    def __init__(self, fh: FileHandle) -> None:
        self._fh = fh
        self._buf = bytearray()

    def record(self, head: RecordHeader) -> memoryview:
        size = head.end - head.offset
        if len(self._buf) < size:
            # A new buffer, not a resize: the previous record's view may still exist.
            self._buf = bytearray(max(size, 2 * len(self._buf)))
        view = memoryview(self._buf)[:size]
        got = self._fh.read_into(head.offset, view)
        if got != size:
            raise CorruptError("record_bounds", "record past the end of the file",
                               offset=head.offset, expected=size, actual=got)
        return view


def block_link(payload: bytes | memoryview) -> int:
    """The ``prev_block`` link of a BLOCK payload."""
    link: int = BLOCK_HEADER.unpack_from(payload)[2]
    return link


def relink_in_place(payload: memoryview, prev_block: int, offset: int) -> None:
    """Replace a BLOCK payload's ``prev_block`` link and redo its columns CRC.

    The old columns CRC is checked first, so relinking never blesses damage;
    ``offset`` locates the block for that error.
    """
    fields = BLOCK_HEADER.unpack_from(payload)
    columns = payload[BLOCK_HEADER.size : BLOCK_HEADER.size + columns_length(fields[3])]
    if crc32c(columns, crc32c(payload[:BLOCK_COLUMNS_CRC_SPAN])) != fields[-1]:
        raise CorruptError("columns_crc", "block columns checksum", offset=offset)
    BLOCK_HEADER.pack_into(payload, 0, *fields[:2], prev_block, *fields[3:-1], 0)
    columns_crc = crc32c(columns, crc32c(payload[:BLOCK_COLUMNS_CRC_SPAN]))
    payload[BLOCK_COLUMNS_CRC_SPAN : BLOCK_HEADER.size] = columns_crc.to_bytes(4, "little")


def relink_payload(stored: bytes | memoryview, prev_block: int, offset: int) -> bytes:
    """A copy of a BLOCK payload with its ``prev_block`` link replaced (see relink_in_place)."""
    payload = bytearray(stored)
    relink_in_place(memoryview(payload), prev_block, offset)
    return bytes(payload)


def copy_record(source: RecordSource, head: RecordHeader, tag: int,
                prev_block: int | None = None) -> memoryview:
    """The record at ``head`` framed for its new place, in ``source``'s buffer.

    Its payload CRC is checked first. The header is rewritten with ``tag``;
    a BLOCK record's ``prev_block`` link is set when given, which changes the
    payload and so its CRC. Padding is zeroed, as the writer writes it.
    """
    record = source.record(head)
    payload_end = RECORD_HEADER.size + head.stored_len
    payload = record[RECORD_HEADER.size : payload_end]
    payload_crc = head.payload_crc
    if crc32c(payload) != payload_crc:
        raise CorruptError("payload_crc", "record payload checksum", offset=head.offset)
    if prev_block is not None and block_link(payload) != prev_block:
        relink_in_place(payload, prev_block, head.offset)
        payload_crc = crc32c(payload)
    record[: RECORD_HEADER.size] = record_header(tag, head.kind, head.codec, head.stored_len,
                                                 head.raw_len, payload_crc)
    record[payload_end:] = bytes(len(record) - payload_end)
    return record


def copy_session(view: View, plan: SessionPlan, sink: Sink, tag: int, *,
                 state: State | None = None, advance: Advance | None = None,
                 source: RecordSource | None = None) -> Copied:
    """Write the planned session to ``sink``; ``advance`` hears how many source bytes are done.

    Records are read from ``source`` (by default, copied out of the view's bytes).
    """
    buf = view.buf
    records = MappedRecords(buf) if source is None else source
    written = copied = merged = 0

    def put(record: bytes | memoryview) -> int:
        nonlocal written
        written += len(record)
        return sink.append(record)

    start = put(copy_record(records, plan.session, tag))
    copied += plan.session.end - plan.session.offset
    if advance is not None:
        advance(copied)
    refs: list[tuple[int, int, int]] = []
    prev = 0
    for lo, hi in plan.groups:
        group = plan.blocks[lo:hi]
        size = sum(b.size for b in group)
        if len(group) == 1:
            prev = put(copy_record(records, group[0].head, tag, prev))
            copied += size
        else:
            payload = merge_records(buf, [b.head for b in group], prev)
            prev = put(frame(tag, Kind.BLOCK, Codec.NONE, payload, len(payload)))
            merged += size
        refs.append((prev, sum(b.actions for b in group), sum(b.checkpoints for b in group)))
        if advance is not None:
            advance(size)
    sid = plan.entry.session_id
    index_offset = 0
    if refs:
        index = encode_index(sid, np.array(refs, dtype=BLOCK_REF), 0)
        index_offset = put(encode_record(tag, Kind.INDEX, index, allow_compress=False))
    snap = dataclasses.replace(plan.snapshot, session_offset=start, index_offset=index_offset,
                               index_block_count=len(refs), last_block_offset=prev,
                               recent_count=0)
    snap_offset = put(encode_record(tag, Kind.SNAPSHOT, encode_snapshot(snap),
                                    allow_compress=False))
    entry = dataclasses.replace(plan.entry, snapshot_offset=snap_offset, session_offset=start,
                                stored_bytes=written,
                                state=plan.entry.state if state is None else state)
    return Copied(entry, index_offset, prev, len(refs), written, copied, merged, len(plan.blocks))

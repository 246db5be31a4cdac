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
    Codec,
    Kind,
    State,
    padded,
)
from memseg.framing import RecordHeader, encode_record, frame, parse_header, stored_view
from memseg.records import Snapshot, encode_index, encode_snapshot
from memseg.toc import TocEntry
from memseg.view import View, load_block_refs

Advance = Callable[[int], None]


class Sink(Protocol):
    """Where copied records go."""

    def append(self, record: bytes) -> int:
        """Write ``record`` next; return the offset it lands at."""
        ...


class CountingSink:
    """Measures a copy without writing it.

    Copies write INDEX and SNAPSHOT records uncompressed, so a session's copy
    has the same size wherever it lands, and measuring at offset 0 is exact.
    """

    def __init__(self, start: int = 0) -> None:
        self.end = start

    def append(self, record: bytes) -> int:
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


def _small(block: SourceBlock) -> bool:
    """Blocks under a quarter of the bounds are worth merging; larger ones are copied
    as stored, since merging them would recompress much for little gain."""
    return block.raw < BLOCK_MAX_RAW // 4 and block.actions < BLOCK_MAX_ACTIONS // 4


def group_blocks(blocks: tuple[SourceBlock, ...]) -> tuple[tuple[int, int], ...]:
    """Greedy runs of consecutive small blocks that fit the block bounds together;
    every other block is a group of its own.

    A run is cut only when the next block would overflow it, which leaves the
    merged block at least three quarters full: grouping the output again yields
    one block per group, so compacting a compacted file changes nothing.
    """
    groups: list[tuple[int, int]] = []
    start = actions = raw = 0
    for i, b in enumerate(blocks):
        if not _small(b):
            if i > start:
                groups.append((start, i))
            groups.append((i, i + 1))
            start, actions, raw = i + 1, 0, 0
            continue
        if i > start and (actions + b.actions > BLOCK_MAX_ACTIONS or raw + b.raw > BLOCK_MAX_RAW):
            groups.append((start, i))
            start, actions, raw = i, 0, 0
        actions += b.actions
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


def _reframe(buf: bytes | memoryview, head: RecordHeader, src_tag: int, tag: int,
             checked: memoryview | None = None) -> bytes:
    """The record at ``head`` framed for the destination, its payload CRC checked first."""
    stored = stored_view(buf, head) if checked is None else checked
    if src_tag == tag:
        # Same file tag: frame() would rebuild these very bytes, so copy them.
        end = head.payload_offset + head.stored_len
        pad = bytes(padded(head.stored_len) - head.stored_len)
        return b"".join([memoryview(buf)[head.offset : end], pad])
    return frame(tag, head.kind, head.codec, bytes(stored), head.raw_len)


def block_link(payload: bytes | memoryview) -> int:
    """The ``prev_block`` link of a BLOCK payload."""
    link: int = BLOCK_HEADER.unpack_from(payload)[2]
    return link


def relink_payload(stored: bytes | memoryview, prev_block: int, offset: int) -> bytes:
    """A BLOCK payload with its ``prev_block`` link replaced and its columns CRC redone.

    The old columns CRC is checked first, so relinking never blesses damage;
    ``offset`` locates the block for that error.
    """
    fields = BLOCK_HEADER.unpack_from(stored)
    columns = stored[BLOCK_HEADER.size : BLOCK_HEADER.size + columns_length(fields[3])]
    if crc32c(columns, crc32c(stored[:BLOCK_COLUMNS_CRC_SPAN])) != fields[-1]:
        raise CorruptError("columns_crc", "block columns checksum", offset=offset)
    new_head = BLOCK_HEADER.pack(*fields[:2], prev_block, *fields[3:])[:BLOCK_COLUMNS_CRC_SPAN]
    columns_crc = crc32c(columns, crc32c(new_head))
    return b"".join([new_head, columns_crc.to_bytes(4, "little"), stored[BLOCK_HEADER.size :]])


def _relink_block(buf: bytes | memoryview, head: RecordHeader, src_tag: int, tag: int,
                  prev_block: int) -> bytes:
    """A block record with its ``prev_block`` link set for its new place."""
    stored = stored_view(buf, head)
    if block_link(stored) == prev_block:
        return _reframe(buf, head, src_tag, tag, stored)
    payload = relink_payload(stored, prev_block, head.offset)
    return frame(tag, Kind.BLOCK, Codec.NONE, payload, len(payload))


def copy_session(view: View, plan: SessionPlan, sink: Sink, tag: int, *,
                 state: State | None = None, advance: Advance | None = None) -> Copied:
    """Write the planned session to ``sink``; ``advance`` hears how many source bytes are done."""
    buf, src_tag = view.buf, view.header.tag
    written = copied = merged = 0

    def put(record: bytes) -> int:
        nonlocal written
        written += len(record)
        return sink.append(record)

    start = put(_reframe(buf, plan.session, src_tag, tag))
    copied += plan.session.end - plan.session.offset
    if advance is not None:
        advance(copied)
    refs: list[tuple[int, int, int]] = []
    prev = 0
    for lo, hi in plan.groups:
        group = plan.blocks[lo:hi]
        size = sum(b.size for b in group)
        if len(group) == 1:
            record = _relink_block(buf, group[0].head, src_tag, tag, prev)
            copied += size
        else:
            payload = merge_records(buf, [b.head for b in group], prev)
            record = frame(tag, Kind.BLOCK, Codec.NONE, payload, len(payload))
            merged += size
        prev = put(record)
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

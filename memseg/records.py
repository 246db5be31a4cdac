"""Per-session records: SESSION (identity), SNAPSHOT (where a session stands),
INDEX (a consolidated list of its blocks). Encode and decode side by side."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from memseg.codec import utf8
from memseg.errors import CorruptError
from memseg.format import (
    BLOCK_REF,
    FILE_HEADER,
    FLAG_HAS_ENDED,
    INDEX_HEADER,
    MAX_KIND,
    MAX_KINDS,
    MAX_NAME,
    MAX_STATUS,
    SESSION_HEADER,
    SNAPSHOT_HEADER,
    STATE_OF_CODE,
    State,
)

BlockRefs = npt.NDArray[np.void]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """Written once when a session starts."""

    session_id: uuid.UUID
    created_ns: int
    name: str | None
    meta: bytes


def encode_session(rec: SessionRecord) -> bytes:
    name = rec.name.encode() if rec.name is not None else b""
    flags = 1 if rec.name is not None else 0
    return SESSION_HEADER.pack(rec.session_id.bytes, rec.created_ns, len(name), flags,
                               len(rec.meta)) + name + rec.meta


def decode_session(payload: bytes, offset: int) -> SessionRecord:
    if len(payload) < SESSION_HEADER.size:
        raise CorruptError("session_layout", "shorter than its header", offset=offset)
    sid, created, name_len, flags, meta_len = SESSION_HEADER.unpack_from(payload)
    expected = SESSION_HEADER.size + name_len + meta_len
    if flags > 1 or name_len > MAX_NAME or expected != len(payload):
        raise CorruptError("session_layout", "lengths or flags", offset=offset,
                           expected=expected, actual=len(payload))
    name = utf8(payload[SESSION_HEADER.size : SESSION_HEADER.size + name_len], offset, "name")
    return SessionRecord(uuid.UUID(bytes=sid), created, name if flags else None,
                         payload[SESSION_HEADER.size + name_len :])


# Not frozen: a frozen dataclass's __init__ costs several times more, and counting
# kinds over a store decodes one snapshot per session. Nothing changes one once decoded.
@dataclass(slots=True)
class Snapshot:
    """Where a session stands at a flush: counts, kind dictionary, and its blocks."""

    session_id: uuid.UUID
    session_offset: int
    state: State
    status: str | None
    action_count: int
    checkpoint_count: int
    created_ns: int
    last_activity_ns: int
    ended_ns: int | None
    index_offset: int
    index_block_count: int
    stored_bytes: int
    last_block_offset: int
    recent_count: int
    kinds: tuple[str, ...]
    kind_counts: tuple[int, ...]


def encode_snapshot(s: Snapshot) -> bytes:
    status = s.status.encode() if s.status is not None else b""
    flags = (FLAG_HAS_ENDED if s.ended_ns is not None else 0) | (2 if s.status is not None else 0)
    names = [k.encode() for k in s.kinds]
    head = SNAPSHOT_HEADER.pack(
        s.session_id.bytes, s.session_offset, s.state, flags, len(status), len(names),
        s.action_count, s.checkpoint_count, s.created_ns, s.last_activity_ns, s.ended_ns or 0,
        s.index_offset, s.stored_bytes, s.last_block_offset, s.index_block_count, s.recent_count,
    )
    return b"".join([
        head,
        np.asarray(s.kind_counts, dtype="<u8").tobytes(),
        bytes(len(n) for n in names),
        *names,
        status,
    ])


def decode_snapshot(payload: bytes, offset: int) -> Snapshot:
    size = len(payload)
    if size < SNAPSHOT_HEADER.size:
        raise CorruptError("snapshot_layout", "shorter than its header", offset=offset)
    (sid, sess_off, state, flags, status_len, kind_count, actions, ckpts, created, last,
     ended, index_off, stored, last_block, index_blocks, recent_count) = SNAPSHOT_HEADER.unpack_from(
        payload)
    # Counts below 2**63: a session's length must be a Python index (len() of its actions).
    if (state not in STATE_OF_CODE or flags > 3 or kind_count > MAX_KINDS or status_len > MAX_STATUS
            or actions >> 63 or ckpts >> 63):
        raise CorruptError("snapshot_layout", "state, flags or counts", offset=offset)
    if not FILE_HEADER.size <= sess_off < offset or (index_off and not sess_off < index_off < offset):
        raise CorruptError("bad_reference", "snapshot's session or index offset", offset=offset)
    if (last_block and not sess_off < last_block < offset) or (recent_count and not last_block):
        raise CorruptError("bad_reference", "snapshot's last block offset", offset=offset)
    pos = SNAPSHOT_HEADER.size
    fixed_end = pos + kind_count * 9
    if fixed_end > size:
        raise CorruptError("snapshot_layout", "counts exceed the payload", offset=offset,
                           expected=f">= {fixed_end}", actual=size)
    counts = np.frombuffer(payload, "<u8", kind_count, pos)
    pos += kind_count * 8
    lengths = payload[pos : pos + kind_count]
    # Where each name starts, then where the last ends: one pass in C, not a loop of checks.
    bounds = list(itertools.accumulate(lengths, initial=pos + kind_count))
    if (kind_count and max(lengths) > MAX_KIND) or bounds[-1] > size:
        raise CorruptError("snapshot_layout", "kind name", offset=offset)
    try:
        kinds = [payload[a:b].decode() for a, b in itertools.pairwise(bounds)]
    except UnicodeDecodeError:
        for a, b in itertools.pairwise(bounds):  # again, to report which name
            utf8(payload[a:b], offset, "kind")
        raise
    pos = bounds[-1]
    if pos + status_len != size:
        raise CorruptError("snapshot_layout", "length does not match contents", offset=offset,
                           expected=pos + status_len, actual=size)
    status = utf8(payload[pos:], offset, "status") if flags & 2 else None
    return Snapshot(
        uuid.UUID(int=int.from_bytes(sid)), sess_off, STATE_OF_CODE[state], status, actions,
        ckpts, created, last, ended if flags & FLAG_HAS_ENDED else None, index_off,
        index_blocks, stored, last_block,
        recent_count, tuple(kinds), tuple(counts.tolist()),
    )


def encode_index(session_id: uuid.UUID, refs: BlockRefs, prev_index: int) -> bytes:
    """An INDEX chunk: refs to consecutive blocks, chained to the previous chunk."""
    return INDEX_HEADER.pack(session_id.bytes, len(refs), 0, prev_index) + np.ascontiguousarray(
        refs, dtype=BLOCK_REF).tobytes()


def decode_index(payload: bytes, offset: int) -> tuple[uuid.UUID, BlockRefs, int]:
    """Session id, block refs and the previous chunk's offset (0 for the first)."""
    if len(payload) < INDEX_HEADER.size:
        raise CorruptError("index_layout", "shorter than its header", offset=offset)
    sid, count, reserved, prev = INDEX_HEADER.unpack_from(payload)
    expected = INDEX_HEADER.size + count * BLOCK_REF.itemsize
    if reserved or expected != len(payload):
        raise CorruptError("index_layout", "count does not match length", offset=offset,
                           expected=expected, actual=len(payload))
    if prev >= offset or prev % 8:
        raise CorruptError("bad_reference", "previous index chunk must precede this one",
                           offset=offset, expected=f"aligned, < {offset}", actual=prev)
    return uuid.UUID(bytes=sid), np.frombuffer(payload, BLOCK_REF, count, INDEX_HEADER.size), prev

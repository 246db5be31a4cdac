"""Action blocks: columns stored raw (viewable in place), payloads LZ4-compressed.

A BLOCK record's payload (record codec NONE) is: BLOCK_HEADER, then ts_ns,
kind codes, flags and end offsets (each padded to 8 bytes), then the stored
payload blob, then the stored checkpoint section. See SPEC.md "BLOCK".
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from memseg.codec import compress, crc32c, decompress
from memseg.errors import CorruptError
from memseg.format import (
    BLOCK_COLUMNS_CRC_SPAN,
    BLOCK_HEADER,
    CHECKPOINT_ENTRY,
    ENDS_DTYPE,
    FLAGS_DTYPE,
    KIND_DTYPE,
    RESULT_SHIFT,
    TS_DTYPE,
    VALUE_MASK,
    Codec,
    ValueType,
    padded,
)
from memseg.framing import RecordHeader
from memseg.model import Action, Checkpoint


@dataclass(frozen=True, slots=True)
class PendingCheckpoint:
    id: int
    at_seq: int
    ts_ns: int
    value_type: int
    data: bytes


def _pad(raw: bytes) -> bytes:
    return raw + bytes(padded(len(raw)) - len(raw))


def encode_block(
    session_id: uuid.UUID,
    first_seq: int,
    prev_block: int,
    ts: Sequence[int],
    kinds: Sequence[int],
    flags: Sequence[int],
    payloads: Sequence[bytes],
    results: Sequence[bytes],
    checkpoints: Sequence[PendingCheckpoint] = (),
) -> bytes:
    """The payload of one BLOCK record."""
    n = len(ts)
    lengths = np.fromiter((len(p) for p in payloads), np.int64, n)
    rlengths = np.fromiter((len(r) for r in results), np.int64, n)
    ends = np.cumsum(np.concatenate([lengths, rlengths]))
    if n and ends[-1] >= 1 << 32:
        raise ValueError("block payloads exceed 4 GiB")
    columns = b"".join([
        np.asarray(ts, dtype=TS_DTYPE).tobytes(),
        _pad(np.asarray(kinds, dtype=KIND_DTYPE).tobytes()),
        _pad(np.asarray(flags, dtype=FLAGS_DTYPE).tobytes()),
        _pad(ends.astype(ENDS_DTYPE).tobytes()),
    ])
    blob_raw = b"".join(payloads) + b"".join(results)
    blob_codec, blob = compress(blob_raw)
    ck_raw = b"".join(
        CHECKPOINT_ENTRY.pack(c.id, c.at_seq, c.ts_ns, c.value_type, len(c.data))
        for c in checkpoints
    ) + b"".join(c.data for c in checkpoints)
    ck_codec, ck = compress(ck_raw)
    head = BLOCK_HEADER.pack(
        session_id.bytes, first_seq, prev_block, n, len(checkpoints), len(blob_raw), len(blob),
        len(ck_raw), len(ck), blob_codec, ck_codec, crc32c(blob), crc32c(ck), 0,
    )
    ccrc = crc32c(columns, crc32c(head[:BLOCK_COLUMNS_CRC_SPAN]))
    return head[:BLOCK_COLUMNS_CRC_SPAN] + ccrc.to_bytes(4, "little") + columns + _pad(blob) + ck


def kind_names(kinds: Sequence[str]) -> npt.NDArray[np.object_]:
    """Kind names as `BlockView.actions` takes them."""
    return np.asarray(kinds, dtype=object)


class BlockView:
    """One block's columns viewed in place, its payloads decompressed on demand."""

    def __init__(self, buf: bytes | memoryview, head: RecordHeader) -> None:
        at = head.offset
        if head.codec != Codec.NONE or head.stored_len < BLOCK_HEADER.size:
            raise CorruptError("block_layout", "block record codec or size", offset=at)
        p = head.payload_offset
        (sid, first_seq, prev_block, n, c, blob_raw, blob_len, ck_raw, ck_len, blob_codec, ck_codec,
         blob_crc, ck_crc, columns_crc) = BLOCK_HEADER.unpack_from(buf, p)
        col_len = 8 * n + padded(2 * n) + padded(n) + padded(8 * n)
        total = BLOCK_HEADER.size + col_len + padded(blob_len) + ck_len
        if total != head.stored_len:
            raise CorruptError("block_layout", "section lengths do not add up", offset=at,
                               expected=head.stored_len, actual=total)
        cols_at = p + BLOCK_HEADER.size
        mv = memoryview(buf)
        crc = crc32c(mv[cols_at : cols_at + col_len], crc32c(mv[p : p + BLOCK_COLUMNS_CRC_SPAN]))
        if crc != columns_crc:
            raise CorruptError("columns_crc", "block columns checksum", offset=at)
        if prev_block >= at or prev_block % 8:
            raise CorruptError("bad_reference", "previous block must precede the block", offset=at,
                               expected=f"aligned, < {at}", actual=prev_block)
        self.offset = at
        self.session_id = uuid.UUID(bytes=sid)
        self.first_seq: int = first_seq
        self.prev_block: int = prev_block
        self.count: int = n
        self.checkpoint_count: int = c
        self._buf = buf
        self.ts: npt.NDArray[np.int64] = np.frombuffer(buf, TS_DTYPE, n, cols_at)
        pos = cols_at + 8 * n
        self.kinds: npt.NDArray[np.uint16] = np.frombuffer(buf, KIND_DTYPE, n, pos)
        pos += padded(2 * n)
        self.flags: npt.NDArray[np.uint8] = np.frombuffer(buf, FLAGS_DTYPE, n, pos)
        pos += padded(n)
        self._ends = np.frombuffer(buf, ENDS_DTYPE, 2 * n, pos)
        pos += padded(8 * n)
        self._blob_at, self._blob = pos, (blob_codec, blob_len, blob_raw, blob_crc)
        pos += padded(blob_len)
        self._ck_at, self._ck = pos, (ck_codec, ck_len, ck_raw, ck_crc)
        self._blob_bytes: bytes | None = None
        if np.any((self.flags & VALUE_MASK) > ValueType.NONE) or np.any(self.flags >> 4):
            raise CorruptError("block_layout", "unknown value type in flags", offset=at)

    def _section(self, at: int, spec: tuple[int, int, int, int], what: str) -> bytes:
        codec, stored_len, raw_len, crc = spec
        stored = memoryview(self._buf)[at : at + stored_len]
        if crc32c(stored) != crc:
            raise CorruptError(f"{what}_crc", f"block {what} checksum", offset=self.offset)
        return decompress(codec, stored, raw_len, at)

    def blob(self) -> bytes:
        """The decompressed payloads and results, checked once and cached."""
        if self._blob_bytes is None:
            raw = self._section(self._blob_at, self._blob, "blob")
            ends = self._ends
            if len(ends) and (int(ends[-1]) != len(raw) or np.any(np.diff(ends.astype(np.int64)) < 0)):
                raise CorruptError("block_layout", "payload end offsets", offset=self.offset)
            if not len(ends) and raw:
                raise CorruptError("block_layout", "payload bytes without actions", offset=self.offset)
            self._blob_bytes = raw
        return self._blob_bytes

    def actions(self, lo: int, hi: int, kinds: npt.NDArray[np.object_]) -> list[Action]:
        """Actions ``lo``..``hi`` of the block (block-relative), built in one pass. ``kinds``
        names the kind codes, as an object array (`kind_names`, made once per session), so
        they are taken in one numpy call."""
        if lo >= hi:
            return []
        blob = self.blob()
        n = self.count
        # Only the rows asked for become Python lists (reading one action must not
        # convert its whole block), then slices are cut in C-level loops: per action
        # numpy indexing and interpreted loops cost more than the rest.
        ends = self._ends
        pends = ends[lo:hi].tolist()
        pstarts = [int(ends[lo - 1]) if lo else 0, *pends[:-1]]
        payloads = [blob[s:e] for s, e in zip(pstarts, pends, strict=True)]
        flags = self.flags[lo:hi]
        ptypes = (flags & VALUE_MASK).tolist()
        rtypes_arr = (flags >> RESULT_SHIFT) & VALUE_MASK
        rtypes = rtypes_arr.tolist()
        # Most actions carry no result: cut only the ones that do.
        results: list[bytes | None] = [None] * (hi - lo)
        with_result = np.flatnonzero(rtypes_arr != ValueType.NONE)
        if len(with_result):
            rends = ends[n + lo : n + hi].astype(np.int64)
            rstarts = np.concatenate((ends[n + lo - 1 : n + lo], rends[:-1]))
            for i, s, e in zip(with_result.tolist(), rstarts[with_result].tolist(),
                               rends[with_result].tolist(), strict=True):
                results[i] = blob[s:e]
        names = kinds[self.kinds[lo:hi]].tolist()
        seqs = range(self.first_seq + lo, self.first_seq + hi)
        return list(map(Action, seqs, self.ts[lo:hi].tolist(), names, payloads, results,
                        ptypes, rtypes))

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints taken in this block's flush."""
        if not self.checkpoint_count:
            return []
        raw = self._section(self._ck_at, self._ck, "checkpoint")
        table = self.checkpoint_count * CHECKPOINT_ENTRY.size
        if table > len(raw):
            raise CorruptError("block_layout", "checkpoint table", offset=self.offset)
        out: list[Checkpoint] = []
        pos = table
        for cid, at_seq, ts, vtype, length in CHECKPOINT_ENTRY.iter_unpack(raw[:table]):
            if vtype > ValueType.NONE or pos + length > len(raw):
                raise CorruptError("block_layout", "checkpoint entry", offset=self.offset)
            out.append(Checkpoint(cid, at_seq, ts, raw[pos : pos + length], vtype))
            pos += length
        if pos != len(raw):
            raise CorruptError("block_layout", "checkpoint section length", offset=self.offset)
        return out

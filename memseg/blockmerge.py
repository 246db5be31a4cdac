"""Merging consecutive blocks of one session into one block, for the compactor.

The raw columns (timestamps, kind codes, flags) are concatenated as stored;
the end offsets are shifted as one array; only the payload and checkpoint
sections are decompressed, joined and compressed again. The result is byte for
byte what ``encode_block`` makes from the same actions recorded in one flush
(tests/test_compact.py checks it).

Merging works on the record bytes directly rather than through BlockView: the
blocks merged are the small ones frequent flushes leave, thousands per
session, and per-block numpy views cost more than the merge itself. Every
check BlockView makes on the sections is made here too, over the whole run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memseg.codec import compress, crc32c, decompress
from memseg.errors import CorruptError
from memseg.format import (
    BLOCK_COLUMNS_CRC_SPAN,
    BLOCK_HEADER,
    CHECKPOINT_ENTRY,
    ENDS_DTYPE,
    FLAGS_DTYPE,
    VALUE_MASK,
    Codec,
    ValueType,
    padded,
)
from memseg.framing import RecordHeader

Buf = bytes | memoryview


def _pad(raw: bytes) -> bytes:
    return raw + bytes(padded(len(raw)) - len(raw))


def columns_length(n: int) -> int:
    """Bytes of a block's columns for ``n`` actions (SPEC.md "BLOCK": ts, kinds, flags, ends)."""
    return 8 * n + padded(2 * n) + padded(n) + padded(8 * n)


def _section(mv: memoryview, at: int, codec: int, stored_len: int, raw_len: int, crc: int,
             what: str, offset: int) -> bytes:
    stored = mv[at : at + stored_len]
    if crc32c(stored) != crc:
        raise CorruptError(f"{what}_crc", f"block {what} checksum", offset=offset)
    return decompress(codec, stored, raw_len, at)


def _checkpoints(raw: bytes, count: int, offset: int) -> tuple[bytes, bytes]:
    """A checkpoint section's entry table and snapshot bytes, checked."""
    table = count * CHECKPOINT_ENTRY.size
    if table > len(raw):
        raise CorruptError("block_layout", "checkpoint table", offset=offset)
    total = 0
    for *_, value_type, length in CHECKPOINT_ENTRY.iter_unpack(raw[:table]):
        if value_type > ValueType.NONE:
            raise CorruptError("block_layout", "checkpoint entry", offset=offset)
        total += length
    if table + total != len(raw):
        raise CorruptError("block_layout", "checkpoint section length", offset=offset)
    return raw[:table], raw[table:]


def merge_records(buf: Buf, heads: Sequence[RecordHeader], prev_block: int) -> bytes:
    """The payload of one BLOCK record holding the actions and checkpoints of the
    BLOCK records at ``heads`` (consecutive blocks of one session), in order."""
    if not heads:
        raise ValueError("nothing to merge")
    mv = memoryview(buf)
    ts: list[memoryview] = []
    kinds: list[memoryview] = []
    flags: list[memoryview] = []
    ends: list[memoryview] = []
    blobs: list[bytes] = []
    tables: list[bytes] = []
    snapshots: list[bytes] = []
    counts: list[int] = []
    first = BLOCK_HEADER.unpack_from(mv, heads[0].payload_offset)
    for head in heads:
        p, at = head.payload_offset, head.offset
        (_sid, _seq, _prev, n, c, blob_raw, blob_len, ck_raw, ck_len, blob_codec, ck_codec,
         blob_crc, ck_crc, columns_crc) = BLOCK_HEADER.unpack_from(mv, p)
        col_len = columns_length(n)
        cols_at = p + BLOCK_HEADER.size
        if head.codec != Codec.NONE or cols_at + col_len + padded(blob_len) + ck_len != (
                p + head.stored_len):
            raise CorruptError("block_layout", "section lengths do not add up", offset=at)
        cols = mv[cols_at : cols_at + col_len]
        if crc32c(cols, crc32c(mv[p : p + BLOCK_COLUMNS_CRC_SPAN])) != columns_crc:
            raise CorruptError("columns_crc", "block columns checksum", offset=at)
        ts.append(cols[: 8 * n])
        kinds.append(cols[8 * n : 10 * n])
        pos = 8 * n + padded(2 * n)
        flags.append(cols[pos : pos + n])
        pos += padded(n)
        ends.append(cols[pos : pos + 8 * n])
        blob_at = cols_at + col_len
        blob = _section(mv, blob_at, blob_codec, blob_len, blob_raw, blob_crc, "blob", at)
        if not n and blob:
            raise CorruptError("block_layout", "payload bytes without actions", offset=at)
        blobs.append(blob)
        counts.append(n)
        if c:
            ck = _section(mv, blob_at + padded(blob_len), ck_codec, ck_len, ck_raw, ck_crc,
                          "checkpoint", at)
            table, data = _checkpoints(ck, c, at)
            tables.append(table)
            snapshots.append(data)

    flag_col = np.frombuffer(b"".join(flags), FLAGS_DTYPE)
    if np.any((flag_col & VALUE_MASK) > ValueType.NONE) or np.any(flag_col >> 4):
        raise CorruptError("block_layout", "unknown value type in flags", offset=heads[0].offset)

    # Within a block the blob is its payloads then its results; merged, it is
    # every payload then every result, so both halves of each block's end
    # offsets move: payload ends by the payloads before, result ends by all
    # payloads plus the results before.
    n_arr = np.array(counts, dtype=np.int64)
    raw_lens = np.array([len(b) for b in blobs], dtype=np.int64)
    own = np.frombuffer(b"".join(ends), ENDS_DTYPE).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(2 * n_arr)[:-1]])
    has = n_arr > 0
    splits = np.zeros(len(heads), dtype=np.int64)
    splits[has] = own[starts[has] + n_arr[has] - 1]
    if np.any(own[starts[has] + 2 * n_arr[has] - 1] != raw_lens[has]):
        raise CorruptError("block_layout", "payload end offsets", offset=heads[0].offset)
    payload_base = np.cumsum(splits) - splits
    result_base = splits.sum() + np.cumsum(raw_lens - splits) - (raw_lens - splits)
    block_of = np.repeat(np.arange(len(heads)), 2 * n_arr)
    is_payload = np.arange(len(own)) - starts[block_of] < n_arr[block_of]
    shifted = own + np.where(is_payload, payload_base[block_of],
                             result_base[block_of] - splits[block_of])
    merged_ends = np.concatenate([shifted[is_payload], shifted[~is_payload]])
    if len(merged_ends) and np.any(np.diff(merged_ends) < 0):
        raise CorruptError("block_layout", "payload end offsets", offset=heads[0].offset)

    split_list = splits.tolist()
    blob_raw_all = b"".join(
        [b[:s] for b, s in zip(blobs, split_list, strict=True)]
        + [b[s:] for b, s in zip(blobs, split_list, strict=True)]
    )
    columns = b"".join([
        b"".join(ts), _pad(b"".join(kinds)), _pad(b"".join(flags)),
        _pad(merged_ends.astype(ENDS_DTYPE).tobytes()),
    ])
    ck_raw_all = b"".join(tables) + b"".join(snapshots)
    blob_codec_out, blob_out = compress(blob_raw_all)
    ck_codec_out, ck_out = compress(ck_raw_all)
    checkpoints = sum(len(t) for t in tables) // CHECKPOINT_ENTRY.size
    head_out = BLOCK_HEADER.pack(
        first[0], first[1], prev_block, sum(counts), checkpoints, len(blob_raw_all),
        len(blob_out), len(ck_raw_all), len(ck_out), blob_codec_out, ck_codec_out,
        crc32c(blob_out), crc32c(ck_out), 0,
    )
    columns_crc_out = crc32c(columns, crc32c(head_out[:BLOCK_COLUMNS_CRC_SPAN]))
    return b"".join([head_out[:BLOCK_COLUMNS_CRC_SPAN], columns_crc_out.to_bytes(4, "little"),
                     columns, _pad(blob_out), ck_out])

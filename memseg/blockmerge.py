"""Merging consecutive blocks of one session into one block, for the compactor.

The raw columns (timestamps, kind codes, flags, end offsets) are concatenated
as arrays; only the payload and checkpoint sections are decompressed, joined
and compressed again. The result is byte for byte what ``encode_block`` makes
from the same actions recorded in one flush (tests/test_compact.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from memseg.blocks import BlockView
from memseg.codec import compress, crc32c
from memseg.format import (
    BLOCK_COLUMNS_CRC_SPAN,
    BLOCK_HEADER,
    CHECKPOINT_ENTRY,
    ENDS_DTYPE,
    FLAGS_DTYPE,
    KIND_DTYPE,
    TS_DTYPE,
    padded,
)


def _pad(raw: bytes) -> bytes:
    return raw + bytes(padded(len(raw)) - len(raw))


def _ends(block: BlockView) -> npt.NDArray[np.int64]:
    # The end offsets are BlockView's private column; the layout is fixed by
    # SPEC.md "BLOCK" (payload ends, then result ends, both cumulative).
    ends: npt.NDArray[np.int64] = block._ends.astype(np.int64)
    return ends


def merge_blocks(blocks: Sequence[BlockView], prev_block: int) -> bytes:
    """The payload of one BLOCK record holding ``blocks``' actions and checkpoints, in order."""
    if not blocks:
        raise ValueError("nothing to merge")
    first = blocks[0]
    blobs = [b.blob() for b in blocks]
    ends = [_ends(b) for b in blocks]
    # Within a block the blob is its payloads then its results; merged, it is
    # every payload then every result, so both halves move.
    splits = [int(e[b.count - 1]) if b.count else 0 for e, b in zip(ends, blocks, strict=True)]
    payload_base, result_base = 0, sum(splits)
    payload_ends: list[npt.NDArray[np.int64]] = []
    result_ends: list[npt.NDArray[np.int64]] = []
    for e, b, split, blob in zip(ends, blocks, splits, blobs, strict=True):
        payload_ends.append(e[: b.count] + payload_base)
        result_ends.append(e[b.count :] - split + result_base)
        payload_base += split
        result_base += len(blob) - split
    blob_raw = b"".join(
        [blob[:split] for blob, split in zip(blobs, splits, strict=True)]
        + [blob[split:] for blob, split in zip(blobs, splits, strict=True)]
    )
    columns = b"".join([
        np.concatenate([b.ts for b in blocks]).astype(TS_DTYPE).tobytes(),
        _pad(np.concatenate([b.kinds for b in blocks]).astype(KIND_DTYPE).tobytes()),
        _pad(np.concatenate([b.flags for b in blocks]).astype(FLAGS_DTYPE).tobytes()),
        _pad(np.concatenate(payload_ends + result_ends).astype(ENDS_DTYPE).tobytes()),
    ])
    checkpoints = [c for b in blocks for c in b.checkpoints()]
    ck_raw = b"".join(
        CHECKPOINT_ENTRY.pack(c.id, c.at_seq, c.ts_ns, c.snapshot_type, len(c.snapshot))
        for c in checkpoints
    ) + b"".join(c.snapshot for c in checkpoints)
    blob_codec, blob = compress(blob_raw)
    ck_codec, ck = compress(ck_raw)
    head = BLOCK_HEADER.pack(
        first.session_id.bytes, first.first_seq, prev_block, sum(b.count for b in blocks),
        len(checkpoints), len(blob_raw), len(blob), len(ck_raw), len(ck), blob_codec, ck_codec,
        crc32c(blob), crc32c(ck), 0,
    )
    columns_crc = crc32c(columns, crc32c(head[:BLOCK_COLUMNS_CRC_SPAN]))
    return b"".join([head[:BLOCK_COLUMNS_CRC_SPAN], columns_crc.to_bytes(4, "little"), columns,
                     _pad(blob), ck])

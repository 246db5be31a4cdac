"""Copying records for compaction and export: both sources give the same bytes, checked first."""

from __future__ import annotations

import contextlib
import random
import struct
from pathlib import Path

import pytest

import memseg
from memseg.codec import crc32c
from memseg.format import BLOCK_COLUMNS_CRC_SPAN, BLOCK_HEADER, RECORD_HEADER, Codec, Kind, padded
from memseg.framing import frame, parse_header
from memseg.fs import OS_FS
from memseg.transfer import (
    FileRecords,
    MappedRecords,
    RecordSource,
    block_link,
    copy_record,
    relink_payload,
)
from memseg.view import View


def _store_with_blocks(path: Path) -> list[int]:
    """A store whose session has several blocks of odd sizes; returns their offsets."""
    with memseg.open(path, "a", sync="none") as store, store.start_session(name="s") as rec:
        rng = random.Random(7)
        for i in range(40):
            rec.record("blob", rng.randbytes(rng.randrange(1, 40_000)), ts_ns=i)
            if i % 9 == 8:
                rec.flush()
    with memseg.open(path) as store:
        return [int(r["offset"]) for r in store.session("s").actions.refs]


def _columns_len(stored: bytes) -> int:
    n: int = struct.unpack_from("<I", stored, 32)[0]  # BLOCK_HEADER's action count
    return 8 * n + padded(2 * n) + padded(n) + padded(8 * n)


def _relinked(stored: bytes, prev: int) -> bytes:
    """A BLOCK payload with prev_block (at 24) replaced and columns_crc (at 68) redone, from
    SPEC.md's layout rather than the library's code."""
    out = bytearray(stored)
    struct.pack_into("<Q", out, 24, prev)
    columns = out[BLOCK_HEADER.size : BLOCK_HEADER.size + _columns_len(stored)]
    struct.pack_into("<I", out, BLOCK_COLUMNS_CRC_SPAN, crc32c(bytes(columns), crc32c(out[:68])))
    return bytes(out)


def _view(store: memseg.Store) -> View:
    view: View = store._current()
    return view


@pytest.mark.parametrize("new_tag", [None, 0x0123456789ABCDEF], ids=["same-tag", "new-tag"])
def test_both_sources_copy_blocks_as_the_writer_would_frame_them(store_path: Path,
                                                                 new_tag: int | None) -> None:
    offsets = _store_with_blocks(store_path)
    assert len(offsets) >= 4
    fh = OS_FS.open(str(store_path), write=False, create=False)
    with contextlib.closing(fh), memseg.open(store_path) as store:
        view = _view(store)
        tag = view.header.tag if new_tag is None else new_tag
        sources: list[RecordSource] = [MappedRecords(view.buf), FileRecords(fh)]
        # Largest first, so the reused buffer is also exercised with shorter records.
        for offset in sorted(offsets, key=lambda o: -parse_header(view.buf, o, view.limit,
                                                                   view.header.tag).stored_len):
            head = parse_header(view.buf, offset, view.limit, view.header.tag)
            stored = bytes(view.buf[head.payload_offset : head.payload_offset + head.stored_len])
            for prev in (block_link(stored), 8 * 1234567):
                expected = frame(tag, Kind.BLOCK, Codec.NONE, _relinked(stored, prev),
                                 head.raw_len)
                assert relink_payload(stored, prev, offset) == _relinked(stored, prev)
                for source in sources:
                    assert bytes(copy_record(source, head, tag, prev)) == expected


def test_a_damaged_payload_is_never_copied(store_path: Path) -> None:
    offsets = _store_with_blocks(store_path)
    data = bytearray(store_path.read_bytes())
    payload_at = offsets[1] + RECORD_HEADER.size
    stored = bytes(data[payload_at : payload_at + 4096])
    # A byte of the compressed blob: only the record's payload CRC covers it here.
    data[payload_at + BLOCK_HEADER.size + _columns_len(stored) + 5] ^= 0x01
    store_path.write_bytes(bytes(data))
    fh = OS_FS.open(str(store_path), write=False, create=False)
    try:
        with memseg.open(store_path) as store:
            view = _view(store)
            head = parse_header(view.buf, offsets[1], view.limit, view.header.tag)
            for source in (MappedRecords(view.buf), FileRecords(fh)):
                with pytest.raises(memseg.CorruptError) as err:
                    copy_record(source, head, view.header.tag, block_link(stored))
                assert err.value.reason == "payload_crc"
                assert err.value.offset == offsets[1]
    finally:
        fh.close()


def test_a_record_cut_short_by_the_file_end_is_reported(store_path: Path) -> None:
    offsets = _store_with_blocks(store_path)
    with memseg.open(store_path) as store:
        view = _view(store)
        head = parse_header(view.buf, offsets[-1], view.limit, view.header.tag)
    with open(store_path, "r+b") as f:
        f.truncate(head.end - 8)
    fh = OS_FS.open(str(store_path), write=False, create=False)
    try:
        with pytest.raises(memseg.CorruptError) as err:
            copy_record(FileRecords(fh), head, 1)
    finally:
        fh.close()
    assert err.value.reason == "record_bounds"
    assert err.value.offset == head.offset

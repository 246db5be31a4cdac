"""Bad input gets memseg's own errors, naming the offset and what was expected."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import memseg
from memseg.codec import crc32c
from memseg.format import (
    BLOCK_HEADER,
    FILE_HEADER,
    FILE_HEADER_CRC_SPAN,
    RECORD_HEADER,
    TRAILER_RECORD_SIZE,
    Kind,
)
from memseg.framing import parse_header


def _one_session(path: Path) -> bytes:
    with memseg.open(path, "a") as store, store.start_session(name="s") as rec:
        rec.record("k", "payload " * 20, ts_ns=1)
    return path.read_bytes()


def test_not_a_memseg_file(tmp_path: Path) -> None:
    for i, content in enumerate([b"", b"hello world, not memseg at all" * 10, b"\x00" * 100]):
        path = tmp_path / f"junk{i}"
        path.write_bytes(content)
        with pytest.raises(memseg.NotMemsegError) as err:
            memseg.open(path)
        assert err.value.reason == "bad_magic" and err.value.offset == 0


def test_newer_major_version_is_refused(store_path: Path) -> None:
    data = bytearray(_one_session(store_path))
    struct.pack_into("<H", data, 8, 2)
    data[FILE_HEADER_CRC_SPAN:FILE_HEADER.size] = crc32c(data[:FILE_HEADER_CRC_SPAN]).to_bytes(4, "little")
    store_path.write_bytes(data)
    with pytest.raises(memseg.VersionError) as err:
        memseg.open(store_path)
    assert (err.value.expected, err.value.actual) == (1, 2)


def test_newer_minor_version_is_read(store_path: Path) -> None:
    data = bytearray(_one_session(store_path))
    struct.pack_into("<H", data, 10, 7)
    data[FILE_HEADER_CRC_SPAN:FILE_HEADER.size] = crc32c(data[:FILE_HEADER_CRC_SPAN]).to_bytes(4, "little")
    store_path.write_bytes(data)
    with memseg.open(store_path) as store:
        assert [i.name for i in store.sessions()] == ["s"]


def test_damaged_file_header_names_the_checksum(store_path: Path) -> None:
    data = bytearray(_one_session(store_path))
    data[40] ^= 0xFF  # inside created_ns
    store_path.write_bytes(data)
    with pytest.raises(memseg.CorruptError) as err:
        memseg.open(store_path)
    assert err.value.reason == "header_crc" and err.value.offset == FILE_HEADER_CRC_SPAN


def _record_offsets(data: bytes, kind: Kind) -> list[int]:
    tag = int.from_bytes(data[16:24], "little")
    offsets, at = [], FILE_HEADER.size
    while at < len(data):
        head = parse_header(data, at, len(data), tag)
        if head.kind == kind:
            offsets.append(at)
        at = head.end
    return offsets


def test_damaged_block_is_reported_when_read_not_at_open(store_path: Path) -> None:
    _one_session(store_path)
    with memseg.open(store_path, "a") as store:
        store.start_session(name="later").end()  # so the damage is not in the last commit
    data = bytearray(store_path.read_bytes())
    [block_at] = _record_offsets(bytes(data), Kind.BLOCK)
    data[block_at + RECORD_HEADER.size + BLOCK_HEADER.size + 40] ^= 0xFF  # in the payload blob
    store_path.write_bytes(data)
    with memseg.open(store_path) as store:
        session = store.session("s")  # listing still works: payloads are not read
        assert session.info.action_count == 1
        assert list(session.actions.ts_ns) == [1]  # nor are they for the columns
        with pytest.raises(memseg.CorruptError) as err:
            session.actions[0]
        assert (err.value.reason, err.value.offset) == ("blob_crc", block_at)


def test_writing_through_a_reader_is_refused(store_path: Path) -> None:
    _one_session(store_path)
    with memseg.open(store_path) as store, pytest.raises(memseg.ReadOnlyError):
        store.resume("s")


def test_damage_in_the_last_commit_shows_the_one_before_and_is_kept(store_path: Path) -> None:
    _one_session(store_path)
    good = store_path.stat().st_size
    with memseg.open(store_path, "a") as store, store.start_session(name="last") as rec:
        rec.record("k", "in the last commit", ts_ns=2)
    data = bytearray(store_path.read_bytes())
    [_, last_block] = _record_offsets(bytes(data), Kind.BLOCK)
    data[last_block + RECORD_HEADER.size + BLOCK_HEADER.size] ^= 0x01
    store_path.write_bytes(data)
    with memseg.open(store_path) as reader:
        # The last commit's region CRC fails: it may never have reached the disk whole.
        assert [i.name for i in reader.sessions()] == ["s"]
        assert reader.tail_bytes == len(data) - good
        assert reader.located.unverified
    with memseg.open(store_path, "a") as store:
        store.start_session(name="after").end()
    after = store_path.read_bytes()
    assert after[: len(data)] == bytes(data)  # the writer kept those bytes for salvage
    with memseg.open(store_path) as reader:
        assert [i.name for i in reader.sessions()] == ["s", "after"]


# Bytes of the trailer record: its tag (0, 7), its kind byte (8), its payload CRC (20), its
# header CRC (28) and its payload (32, 71). A flip in any must not make the trailer look torn.
@pytest.mark.parametrize("at", [0, 7, 8, 20, 28, RECORD_HEADER.size, TRAILER_RECORD_SIZE - 1])
def test_a_damaged_newest_trailer_is_kept_not_cut_by_the_next_writer(store_path: Path,
                                                                     at: int) -> None:
    _one_session(store_path)
    with memseg.open(store_path, "a") as store, store.start_session(name="last") as rec:
        rec.record("k", "acknowledged", ts_ns=2)
    data = bytearray(store_path.read_bytes())
    [*_, trailer_at] = _record_offsets(bytes(data), Kind.TRAILER)
    data[trailer_at + at] ^= 0x01  # bit rot in the acknowledged trailer
    store_path.write_bytes(data)
    with memseg.open(store_path) as reader:
        assert [i.name for i in reader.sessions()] == ["s"]  # the trailer no longer counts
    with memseg.open(store_path, "a") as store:
        store.start_session(name="after").end()
    # The damaged commit was not taken for a torn write and cut: salvage can still find it.
    assert store_path.read_bytes()[: len(data)] == bytes(data)
    salvaged = store_path.parent / "salvaged.mseg"
    memseg.salvage(store_path, salvaged)
    with memseg.open(salvaged) as store:
        last = store.session("last")
        assert [a.value() for a in last.actions] == ["acknowledged"]


def test_a_commit_cut_before_its_trailer_is_cut_and_the_file_verifies_clean(
    store_path: Path,
) -> None:
    _one_session(store_path)
    good = store_path.stat().st_size
    with memseg.open(store_path, "a") as store, store.start_session(name="unacknowledged") as rec:
        rec.record("k", "never acknowledged", ts_ns=2)
    with open(store_path, "r+b") as f:  # the writer died before writing the trailer
        f.truncate(store_path.stat().st_size - TRAILER_RECORD_SIZE)
    with memseg.open(store_path, "a") as store:
        assert store_path.stat().st_size == good  # an ordinary torn commit: cut
        assert [i.name for i in store.sessions()] == ["s"]
    assert memseg.verify(store_path).ok


@pytest.mark.parametrize("present", [9, 40, TRAILER_RECORD_SIZE - 1])
def test_a_trailer_cut_short_is_a_torn_commit_and_the_file_verifies_clean(
        store_path: Path, present: int) -> None:
    """A crash or a full disk that cut the trailer's write: the commit was never
    acknowledged. Keeping those bytes made verify report damage for good."""
    _one_session(store_path)
    good = store_path.stat().st_size
    with memseg.open(store_path, "a") as store, store.start_session(name="torn") as rec:
        rec.record("k", "never acknowledged", ts_ns=2)
    with open(store_path, "r+b") as f:
        f.truncate(store_path.stat().st_size - TRAILER_RECORD_SIZE + present)
    with memseg.open(store_path, "a") as store:
        assert store.kept_from is None and store_path.stat().st_size == good
        store.start_session(name="after").end()
    assert memseg.verify(store_path).ok
    with memseg.open(store_path) as reader:
        assert [i.name for i in reader.sessions()] == ["s", "after"]


def test_compaction_refuses_to_drop_a_commit_kept_for_salvage(store_path: Path) -> None:
    _one_session(store_path)
    with memseg.open(store_path, "a") as store, store.start_session(name="last") as rec:
        rec.record("k", "acknowledged", ts_ns=2)
    data = bytearray(store_path.read_bytes())
    [*_, trailer_at] = _record_offsets(bytes(data), Kind.TRAILER)
    data[trailer_at + RECORD_HEADER.size] ^= 0x01
    store_path.write_bytes(data)
    with pytest.raises(memseg.CorruptError) as caught:
        memseg.compact(store_path)
    assert caught.value.reason == "kept_commit"
    assert store_path.read_bytes() == bytes(data)  # nothing dropped, nothing written
    with memseg.open(store_path, "a") as store:
        assert store.kept_from is not None
        store.start_session(name="after").end()
        with pytest.raises(memseg.CorruptError, match="kept_commit"):
            store.compact()
    salvaged = store_path.parent / "salvaged.mseg"
    memseg.salvage(store_path, salvaged)
    memseg.compact(salvaged)
    with memseg.open(salvaged) as store:
        assert [a.value() for a in store.session("last").actions] == ["acknowledged"]


def test_a_toc_followed_by_another_threads_block_is_a_torn_commit(store_path: Path) -> None:
    """During a large commit's first fsync other threads append blocks behind its TOC; a
    writer killed then leaves a TOC followed by an intact BLOCK and no trailer. That tail
    was kept for salvage as if the trailer were damaged, and then blocked compaction."""
    _one_session(store_path)
    good = store_path.stat().st_size
    with memseg.open(store_path, "a") as store, store.start_session(name="unacknowledged") as rec:
        rec.record("k", "never acknowledged", ts_ns=2)
    data = store_path.read_bytes()
    [*_, block_at] = _record_offsets(data, Kind.BLOCK)
    block = parse_header(data, block_at, len(data), int.from_bytes(data[16:24], "little"))
    store_path.write_bytes(data[:-TRAILER_RECORD_SIZE] + data[block_at : block.end])
    with memseg.open(store_path, "a") as store:
        assert store.kept_from is None and store_path.stat().st_size == good
    assert memseg.verify(store_path).ok


@pytest.mark.parametrize("fill", [b"\x00", b"\xa5"])
def test_a_trailer_slot_of_zeros_or_garbage_is_a_torn_commit(store_path: Path, fill: bytes) -> None:
    """A crash whose image kept the file's size but not the trailer's sector: nothing of
    the trailer was written, so the commit was never acknowledged. Keeping it for salvage
    made compaction refuse for good."""
    _one_session(store_path)
    good = store_path.stat().st_size
    with memseg.open(store_path, "a") as store, store.start_session(name="torn") as rec:
        rec.record("k", "never acknowledged", ts_ns=2)
    data = store_path.read_bytes()
    store_path.write_bytes(data[:-TRAILER_RECORD_SIZE] + fill * TRAILER_RECORD_SIZE)
    with memseg.open(store_path, "a") as store:
        assert store.kept_from is None and store_path.stat().st_size == good
        store.compact()
    assert memseg.verify(store_path).ok


def test_a_toc_followed_by_a_40_byte_record_is_a_torn_commit(store_path: Path) -> None:
    """A SESSION record of exactly 40 bytes behind a large commit's TOC (another thread's
    start_session during its first fsync) matched the payload-CRC witness of a damaged
    trailer, so the torn commit was kept for salvage and compaction refused."""
    _one_session(store_path)
    good = store_path.stat().st_size
    with memseg.open(store_path, "a") as store, store.start_session(name="torn") as rec:
        rec.record("k", "never acknowledged", ts_ns=2)
    with memseg.open(store_path, "a") as store:
        store.start_session(name="x" * 6)  # its SESSION record: a 40-byte payload
    data = store_path.read_bytes()
    [*_, session_at] = _record_offsets(data, Kind.SESSION)
    tag = int.from_bytes(data[16:24], "little")
    session = parse_header(data, session_at, len(data), tag)
    assert session.stored_len == 40
    [*_, toc_at] = _record_offsets(data[:session_at], Kind.TOC)
    toc = parse_header(data, toc_at, len(data), tag)
    # The torn commit: everything up to the TOC of "torn", then that SESSION record.
    store_path.write_bytes(data[: toc.end] + data[session_at : session.end])
    with memseg.open(store_path, "a") as store:
        assert store.kept_from is None and store_path.stat().st_size == good
    assert memseg.verify(store_path).ok

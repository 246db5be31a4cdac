"""Bytes no writer writes, read as SPEC.md says: misplaced and compressed trailers, and a
block chain that ends before its snapshot's count."""

from __future__ import annotations

from pathlib import Path

import lz4.block
import pytest

import memseg
from memseg.container import parse_file_header
from memseg.errors import CorruptError
from memseg.format import FILE_HEADER, RECORD_HEADER, TRAILER, TRAILER_RECORD_SIZE, Codec, Kind
from memseg.framing import frame, parse_header
from memseg.records import Snapshot, encode_snapshot


def _one_commit(path: Path) -> bytes:
    with memseg.open(path, "a") as store:
        rec = store.start_session("s")
        rec.record("k", b"x")
        rec.end()
    return path.read_bytes()


def _tag(data: bytes) -> int:
    return parse_file_header(data[: FILE_HEADER.size]).tag


def test_a_trailer_naming_a_record_that_is_not_a_toc_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    data = _one_commit(path)
    tag = _tag(data)
    real = data[-TRAILER_RECORD_SIZE:]
    fields = list(TRAILER.unpack(real[RECORD_HEADER.size:]))
    session_record = FILE_HEADER.size  # the first record: the SESSION, intact
    assert parse_header(data, session_record, len(data), tag).kind == Kind.SESSION
    fields[0] = session_record  # toc_offset
    fields[1] += 1  # commit_seq
    fields[2] = len(data) - TRAILER_RECORD_SIZE  # prev_trailer_offset
    fields[5] = 0  # flags: no region check
    forged = frame(tag, Kind.TRAILER, Codec.NONE, TRAILER.pack(*fields), TRAILER.size)
    path.write_bytes(data + forged)
    with memseg.open(path) as reader:
        # Bytes that look like a trailer, not a damaged commit: the real commit stands.
        assert reader.located.damaged_commits == ()
        assert reader.commit is not None and reader.commit.seq == fields[1] - 1
        assert [i.name for i in reader.sessions()] == ["s"]
    with memseg.open(path, "a") as writer:  # and a writer goes on, cutting the tail
        assert [i.name for i in writer.sessions()] == ["s"]


def test_a_compressed_trailer_is_not_a_trailer(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    data = _one_commit(path)
    tag = _tag(data)
    payload = data[-TRAILER.size:]
    packed = lz4.block.compress(payload, store_size=False)
    assert len(packed) < TRAILER.size
    record = frame(tag, Kind.TRAILER, Codec.LZ4, packed, TRAILER.size)
    # Padded so that the 72 bytes a trailer spans are in the file.
    path.write_bytes(data[:-TRAILER_RECORD_SIZE] + record + bytes(TRAILER_RECORD_SIZE - len(record)))
    with memseg.open(path) as reader:
        assert reader.commit is None
        assert reader.sessions() == []


def test_a_block_chain_ending_before_the_snapshot_count_is_a_bad_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def recent_blocks_past_the_first(snap: Snapshot) -> bytes:
        # The session's one block has no previous block: the walk meets offset 0 second.
        if snap.last_block_offset:
            snap = Snapshot(*(getattr(snap, f) for f in Snapshot.__dataclass_fields__))
            snap.recent_count += 2
        return encode_snapshot(snap)

    monkeypatch.setattr("memseg.store.encode_snapshot", recent_blocks_past_the_first)
    path = tmp_path / "s.mseg"
    _one_commit(path)
    monkeypatch.undo()
    with memseg.open(path) as reader, pytest.raises(CorruptError) as caught:
        reader.session("s").actions.refs  # noqa: B018  (reading the refs walks the chain)
    assert caught.value.reason == "bad_reference"


def test_verify_reports_a_trailer_no_writer_wrote_between_commits(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session("one")
        rec.record("k", b"x")
        rec.end()
        data = path.read_bytes()
        fields = list(TRAILER.unpack(data[-TRAILER.size:]))
        fields[0] = FILE_HEADER.size  # names the SESSION record, intact
        fields[1] += 1
        fields[2] = len(data) - TRAILER_RECORD_SIZE
        fields[5] = 0
        with store._mutex:  # a stray trailer between two real commits
            store._append(frame(_tag(data), Kind.TRAILER, Codec.NONE, TRAILER.pack(*fields),
                                TRAILER.size))
        rec = store.start_session("two")
        rec.record("k", b"y")
        rec.end()
    report = memseg.verify(path)
    assert not report.ok
    assert [p.reason for p in report.problems] == ["trailer_place"]
    with memseg.open(path) as reader:  # and readers show both sessions
        assert sorted(i.name or "" for i in reader.sessions()) == ["one", "two"]

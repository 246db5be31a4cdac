"""Bugs the crash, fault and fuzz suites found in memseg core, each kept as a scenario."""

from __future__ import annotations

import errno
import random
import uuid
from pathlib import Path

import pytest

import memseg
from fuzz.corpus import payload_of, records, rewrite
from memseg.container import encode_file_header
from memseg.format import BLOCK_HEADER, RECORD_HEADER, SNAPSHOT_HEADER, TRAILER_RECORD_SIZE, Kind, padded
from memseg.framing import RecordHeader
from memseg.salvage import salvage
from tests.faultfs import SimFS

PATH = "/sim/regression.mseg"
PROBE = uuid.UUID(int=0xBEEF)


def test_creation_cut_by_enospc_leaves_no_file_and_the_next_writer_creates_it() -> None:
    """ENOSPC while writing a new file's header once left 32 bytes at the path; every later
    open("a") failed with short_header. The header is now written under a temporary name
    and linked into place only once whole and synced."""
    fs = SimFS(enospc_write_at=0)
    with pytest.raises(OSError) as info:
        memseg.open(PATH, "a", fs=fs)
    assert info.value.errno == errno.ENOSPC
    assert fs.files() == {}  # neither the path nor the temporary file is left
    fs.enospc_write_at = None
    with memseg.open(PATH, "a", fs=fs) as store:
        store.start_session(session_id=uuid.UUID(int=1)).end()
    with memseg.open(PATH, "r", fs=fs) as reader:
        assert [s.id for s in reader.sessions()] == [uuid.UUID(int=1)]


def test_header_cut_after_the_magic_is_recreated_by_the_next_writer() -> None:
    """A file shorter than its header (cut by hand, or left by an older writer) never
    held a commit: a writer starts it afresh."""
    fs = SimFS({PATH: memseg_header_prefix(32)})
    with memseg.open(PATH, "a", fs=fs) as store:
        store.start_session(session_id=uuid.UUID(int=1)).end()
    with memseg.open(PATH, "r", fs=fs) as reader:
        assert [s.id for s in reader.sessions()] == [uuid.UUID(int=1)]


def memseg_header_prefix(length: int) -> bytes:
    """The first ``length`` bytes of a real file header."""
    return encode_file_header(uuid.UUID(int=7), 1)[:length]


def _real_file(tmp_path: Path, sessions: int = 2) -> Path:
    path = tmp_path / "f.mseg"
    with memseg.open(path, "a") as store:
        for i in range(sessions):
            rec = store.start_session(name=f"s{i}", session_id=uuid.UUID(int=i + 1))
            rec.record("k", {"i": i}, ts_ns=5)
            rec.end("ok")
    return path


def _append_probe(path: Path) -> None:
    with memseg.open(path, "a") as store:
        rec = store.start_session(name="probe", session_id=PROBE)
        rec.record("p", "v", ts_ns=9)
        rec.end("ok")


def test_append_after_an_unverified_commit_of_odd_size_stays_aligned(tmp_path: Path) -> None:
    """A writer keeping an unverified tail appended at its odd end: misaligned records that
    no reader can find, so the new, acknowledged commit was lost (found by fuzz)."""
    path = _real_file(tmp_path)
    data = bytearray(path.read_bytes())
    last = [r for r in records(bytes(data)) if r.kind == Kind.SNAPSHOT][-1]
    data[last.payload_offset] ^= 0xFF  # the last commit's region no longer matches its CRC
    path.write_bytes(bytes(data) + b"\x01\x02\x03")
    with memseg.open(path, "r") as reader:
        assert reader.located.unverified
        kept = {s.id for s in reader.sessions()}
    _append_probe(path)
    with memseg.open(path, "r") as reader:
        assert {s.id for s in reader.sessions()} == kept | {PROBE}
        assert reader.session(PROBE).actions[0].value() == "v"


def test_trailer_with_the_largest_commit_seq_is_refused(tmp_path: Path) -> None:
    """A trailer claiming commit 2**64-1 made the next commit's seq overflow its u64 field:
    struct.error escaped from open("a") + flush (found by fuzz)."""
    path = _real_file(tmp_path)
    data = path.read_bytes()
    trailer = [r for r in records(data) if r.kind == Kind.TRAILER][-1]
    body = bytearray(payload_of(data, trailer))
    body[8:16] = (2**64 - 1).to_bytes(8, "little")  # commit_seq
    path.write_bytes(rewrite(data, trailer, bytes(body)))
    with memseg.open(path, "r") as reader:
        assert reader.commit is None or reader.commit.seq < 2**63
    _append_probe(path)
    with memseg.open(path, "r") as reader:
        assert PROBE in {s.id for s in reader.sessions()}


def _with_commit_seq(path: Path, seq: int) -> None:
    data = path.read_bytes()
    trailer = [r for r in records(data) if r.kind == Kind.TRAILER][-1]
    body = bytearray(payload_of(data, trailer))
    body[8:16] = seq.to_bytes(8, "little")  # commit_seq
    path.write_bytes(rewrite(data, trailer, bytes(body)))


def test_a_writer_refuses_a_file_whose_newest_commit_seq_is_the_last(tmp_path: Path) -> None:
    """A trailer claiming commit 2**63-1 is valid, but the next commit, 2**63, is not: the
    writer acknowledged a session that every reader then skipped (found by fuzz)."""
    path = _real_file(tmp_path)
    _with_commit_seq(path, 2**63 - 1)
    before = path.read_bytes()
    with memseg.open(path, "r") as reader:
        assert reader.commit is not None and reader.commit.seq == 2**63 - 1
        kept = {s.id for s in reader.sessions()}
    with pytest.raises(memseg.CorruptError) as err:
        memseg.open(path, "a")
    assert err.value.reason == "bad_commit_seq"
    assert path.read_bytes() == before
    with memseg.open(path, "r") as reader:
        assert {s.id for s in reader.sessions()} == kept


def test_the_last_commit_seq_is_used_and_then_commits_are_refused(tmp_path: Path) -> None:
    path = _real_file(tmp_path)
    _with_commit_seq(path, 2**63 - 3)
    store = memseg.open(path, "a")
    rec = store.start_session(name="probe", session_id=PROBE)
    rec.record("p", "v", ts_ns=9)
    rec.flush()  # commit 2**63 - 2
    rec.record("p", "w", ts_ns=10)
    rec.flush()  # commit 2**63 - 1, the last
    rec.record("p", "x", ts_ns=11)
    with pytest.raises(memseg.CorruptError) as err:
        rec.flush()
    assert err.value.reason == "bad_commit_seq"
    with pytest.raises(memseg.CorruptError) as err:
        store.close()  # it cannot commit what is staged either, and says so
    assert err.value.reason == "bad_commit_seq"
    assert store.closed
    with memseg.open(path, "r") as reader:
        assert reader.commit is not None and reader.commit.seq == 2**63 - 1
        assert [a.value() for a in reader.session(PROBE).actions] == ["v", "w"]


def _salvaged_actions(path: Path, tmp_path: Path) -> dict[uuid.UUID, int]:
    out = tmp_path / "salvaged.mseg"
    salvage(path, out)
    with memseg.open(out, "r") as store:
        return {s.id: len(store.session(s.id).actions) for s in store.sessions()}


@pytest.mark.parametrize("lie", [8, 1 << 20], ids=["overlaps-next-record", "runs-past-eof"])
def test_salvage_resyncs_past_a_record_whose_length_lies(tmp_path: Path, lie: int) -> None:
    """A record header with a good CRC but a wrong length hid the intact records it
    overlapped (or, running past EOF, everything after it) from scan and salvage, which
    lost committed actions that a reader still read (found by fuzz)."""
    path = tmp_path / "f.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        for batch in range(3):
            for i in range(4):
                rec.record("k", {"batch": batch, "i": i}, ts_ns=i)
            rec.flush()
        rec.end("ok")
    data = path.read_bytes()
    first_trailer = next(r for r in records(data) if r.kind == Kind.TRAILER)
    body = payload_of(data, first_trailer)
    path.write_bytes(rewrite(data, first_trailer, body, stored_len=len(body) + lie))
    with memseg.open(path, "r") as reader:
        assert len(reader.session(uuid.UUID(int=1)).actions) == 12
    assert _salvaged_actions(path, tmp_path)[uuid.UUID(int=1)] == 12


def test_salvage_keeps_a_block_whose_damage_is_only_in_padding(tmp_path: Path) -> None:
    """A byte flipped in the padding after a block's payload blob fails the record CRC
    but no section CRC: a reader reads the block, salvage dropped it (found by atheris)."""
    path = tmp_path / "f.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("k", b"abc", ts_ns=1)  # a 3-byte blob: 5 bytes of padding follow it
        rec.end("ok")
        # A later commit, so only the newest commit's region CRC, not this one's, is checked.
        store.start_session(session_id=uuid.UUID(int=2)).end("ok")
    data = bytearray(path.read_bytes())
    block = next(r for r in records(bytes(data)) if r.kind == Kind.BLOCK)
    fields = BLOCK_HEADER.unpack_from(data, block.payload_offset)
    n, blob_len = fields[-11], fields[-8]
    assert (n, blob_len) == (1, 3)
    columns = 8 * n + padded(2 * n) + padded(n) + padded(8 * n)
    data[block.payload_offset + BLOCK_HEADER.size + columns + blob_len] ^= 0x40
    path.write_bytes(bytes(data))
    with memseg.open(path, "r") as reader:
        assert reader.session(uuid.UUID(int=1)).actions[0].value() == b"abc"
    assert _salvaged_actions(path, tmp_path)[uuid.UUID(int=1)] == 1


def test_salvage_ignores_a_stale_snapshot_copied_after_the_newest(tmp_path: Path) -> None:
    """A duplicated old SNAPSHOT after the newest one made salvage take the stale kind
    dictionary: a committed action came back as kind 'unknown-kind-1' (found by fuzz)."""
    path = tmp_path / "f.mseg"
    sid = uuid.UUID(int=1)
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=sid)
        rec.record("first", 1, ts_ns=1)
        rec.flush()
        rec.record("second", 2, ts_ns=2)
        rec.flush()
    data = path.read_bytes()
    stale = [r for r in records(data) if r.kind == Kind.SNAPSHOT][1]  # after the first flush
    path.write_bytes(data + data[stale.offset : stale.end])
    out = tmp_path / "salvaged.mseg"
    salvage(path, out)
    with memseg.open(out, "r") as store:
        assert [a.kind for a in store.session(sid).actions] == ["first", "second"]



def test_a_snapshot_claiming_billions_of_recent_blocks_fails_the_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CRC-valid snapshot with recent_count 2**32-1 made readers, verify and salvage
    allocate a 64 GiB array before walking a single block (numpy MemoryError)."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)  # snapshots stored as they are
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("k", "one", ts_ns=1)
        rec.flush()  # its snapshot: one recent block, no INDEX chunk yet
        # A later commit, so the newest commit's region CRC does not cover that snapshot.
        store.start_session(session_id=uuid.UUID(int=2)).end("ok")
    data = path.read_bytes()
    recent = slice(SNAPSHOT_HEADER.size - 4, SNAPSHOT_HEADER.size)  # recent_count, the last field
    snap = next(r for r in records(data) if r.kind == Kind.SNAPSHOT
                and payload_of(data, r)[recent] == (1).to_bytes(4, "little"))
    body = bytearray(payload_of(data, snap))
    body[recent] = (2**32 - 1).to_bytes(4, "little")
    path.write_bytes(rewrite(data, snap, bytes(body)))
    with memseg.open(path, "r") as reader:
        assert len(reader.session(uuid.UUID(int=2)).actions) == 0
        with pytest.raises(memseg.CorruptError):
            len(reader.session(uuid.UUID(int=1)).actions.refs)
    assert not memseg.verify(path).ok
    assert uuid.UUID(int=2) in _salvaged_actions(path, tmp_path)


def _blob_at(data: bytes, block: RecordHeader) -> int:
    """File offset of a block's payload blob (its sections after the columns)."""
    n: int = BLOCK_HEADER.unpack_from(data, block.payload_offset)[-11]
    return block.payload_offset + BLOCK_HEADER.size + 8 * n + padded(2 * n) + padded(n) + padded(8 * n)


def test_salvage_rebuilds_a_session_whose_checkpoint_is_json_null(tmp_path: Path) -> None:
    """checkpoint(float("nan")) stores JSON null; rebuilding the session called
    checkpoint(None), which raises, so salvage stopped with a half-written file."""
    path = tmp_path / "f.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("k", 1, ts_ns=1)
        rec.checkpoint(float("nan"), ts_ns=2)
        rec.record("k", "in a block damaged below", ts_ns=3)
        rec.flush()
        rec.end("ok")
    data = bytearray(path.read_bytes())
    second = [r for r in records(bytes(data)) if r.kind == Kind.BLOCK][1]
    data[_blob_at(bytes(data), second)] ^= 0xFF  # the session no longer reads whole
    path.write_bytes(bytes(data))
    out = tmp_path / "salvaged.mseg"
    report = salvage(path, out)
    assert report.lost_actions == 1
    with memseg.open(out) as store:
        session = store.session(uuid.UUID(int=1))
        assert [a.value() for a in session.actions] == [1]
        assert [(c.at_seq, c.value()) for c in session.checkpoints] == [(1, None)]


def test_salvage_keeps_a_value_that_does_not_decode_as_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Intact records holding a str value that is not UTF-8: rebuilding the session
    decoded it and the CorruptError stopped the whole salvage."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)  # blobs stored as they are
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("k", "ok", ts_ns=1)
        rec.record("k", "\u00e9\u00e9", ts_ns=2)
        rec.end("ok")
        store.start_session(session_id=uuid.UUID(int=2)).end("ok")  # a later commit
    data = path.read_bytes()
    block = next(r for r in records(data) if r.kind == Kind.BLOCK)
    payload = bytearray(payload_of(data, block))
    at = _blob_at(data, block) - block.payload_offset + len("ok")
    assert payload[at : at + 4] == "\u00e9\u00e9".encode()
    payload[at : at + 4] = b"\xff\xfe\xff\xfe"
    path.write_bytes(rewrite(data, block, bytes(payload)))
    out = tmp_path / "salvaged.mseg"
    report = salvage(path, out)
    [session] = [s for s in report.sessions if s.session_id == uuid.UUID(int=1)]
    assert session.lost_actions == 0 and any("did not decode" in n for n in session.notes)
    with memseg.open(out) as store:
        assert [a.value() for a in store.session(uuid.UUID(int=1)).actions] == [
            "ok", b"\xff\xfe\xff\xfe"]
    assert memseg.verify(out).ok


def test_a_snapshot_claiming_2_to_the_62_actions_fails_before_allocating(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """actions.seq was np.arange(the snapshot's action_count): a forged count allocated
    before anything checked it against the blocks."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)  # snapshots stored as they are
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("k", "one", ts_ns=1)
        rec.end("ok")
        store.start_session(session_id=uuid.UUID(int=2)).end("ok")  # a later commit
    data = path.read_bytes()
    count = slice(32, 40)  # SNAPSHOT_HEADER action_count
    snap = [r for r in records(data) if r.kind == Kind.SNAPSHOT
            and payload_of(data, r)[count] == (1).to_bytes(8, "little")][-1]
    body = bytearray(payload_of(data, snap))
    body[count] = (2**62).to_bytes(8, "little")
    path.write_bytes(rewrite(data, snap, bytes(body)))
    with memseg.open(path, "r") as reader:
        actions = reader.session(uuid.UUID(int=1)).actions
        with pytest.raises(memseg.CorruptError, match="count_mismatch"):
            len(actions.seq)


def test_salvage_keeps_every_checkpoint_of_checkpoint_only_blocks(tmp_path: Path) -> None:
    """Checkpoints in a row make blocks of no action at the same seq; salvage keyed blocks
    by (seq, count) and kept one of them, losing checkpoints of an undamaged file."""
    path = tmp_path / "f.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("a", 1, ts_ns=10)
        for step in (1, 2, 3):
            rec.checkpoint({"step": step}, ts_ns=20 + step)
        rec.record("b", 2, ts_ns=40)
        rec.end("ok")
    report = salvage(path, tmp_path / "out.mseg")
    assert report.complete
    with memseg.open(tmp_path / "out.mseg") as store:
        session = store.session(uuid.UUID(int=1))
        assert [c.value() for c in session.checkpoints] == [{"step": s} for s in (1, 2, 3)]
        assert [a.value() for a in session.actions] == [1, 2]


def test_salvage_prefers_committed_blocks_to_a_dead_writers_block_at_the_same_seq(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer kept an unverified commit's bytes (a block at seq 2), then the resumed
    session committed its own blocks from seq 2. Salvage took the uncommitted block, by
    the lowest (seq, count), and called the committed actions after it lost."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)
    with memseg.open(path, "a", sync="none") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("a", 0, ts_ns=10)
        rec.record("a", 1, ts_ns=11)
        rec.flush()
        rec.record("orphan", 99, ts_ns=12)
        rec.flush()
    data = bytearray(path.read_bytes())
    snap = [r for r in records(bytes(data)) if r.kind == Kind.SNAPSHOT][-1]
    data[snap.offset + 40 : snap.offset + 48] = bytes(8)  # that commit is now unverified
    path.write_bytes(bytes(data))
    with memseg.open(path, "a", sync="none") as store:
        assert store.kept_from is not None
        rec = store.resume(uuid.UUID(int=1))
        for i in range(3):
            rec.record("b", 2 + i, ts_ns=20 + i)
        rec.end("ok")
    with memseg.open(path) as reader:
        expected = [(a.kind, a.value()) for a in reader.session(uuid.UUID(int=1)).actions]
    assert expected == [("a", 0), ("a", 1), ("b", 2), ("b", 3), ("b", 4)]
    report = salvage(path, tmp_path / "out.mseg")
    [session] = report.sessions
    assert session.lost == [] and session.actions == 5
    with memseg.open(tmp_path / "out.mseg") as store:
        assert [(a.kind, a.value()) for a in store.session(uuid.UUID(int=1)).actions] == expected


def test_a_snapshot_claiming_2_to_the_63_actions_is_corrupt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """len(actions) raised OverflowError (not a memseg error) for a count of 2**63, and
    the command line's show, cat and replay printed a traceback."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("k", "one", ts_ns=1)
        rec.end("ok")
        store.start_session(session_id=uuid.UUID(int=2)).end("ok")
    data = path.read_bytes()
    count = slice(32, 40)
    snap = [r for r in records(data) if r.kind == Kind.SNAPSHOT
            and payload_of(data, r)[count] == (1).to_bytes(8, "little")][-1]
    body = bytearray(payload_of(data, snap))
    body[count] = (2**63).to_bytes(8, "little")
    path.write_bytes(rewrite(data, snap, bytes(body)))
    with memseg.open(path, "r") as reader, pytest.raises(memseg.CorruptError, match="snapshot_layout"):
        len(reader.session(uuid.UUID(int=1)).actions)


@pytest.mark.parametrize("section", ["blob", "checkpoints"])
def test_salvage_keeps_the_intact_section_of_a_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str) -> None:
    """Salvage dropped a block when either of its sections failed its CRC; readers check
    them apart, so it lost actions (or a checkpoint) that every reader still read."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("a", "first", ts_ns=1)
        rec.flush()
        rec.record("b", "second", ts_ns=2)
        rec.record("c", "third", ts_ns=3)
        rec.checkpoint({"state": 42}, ts_ns=4)  # one block: 2 actions and 1 checkpoint
        rec.record("d", "fourth", ts_ns=5)
        rec.end("ok")
    data = bytearray(path.read_bytes())
    block = [r for r in records(bytes(data)) if r.kind == Kind.BLOCK][1]
    blob_len = BLOCK_HEADER.unpack_from(data, block.payload_offset)[-8]
    blob = _blob_at(bytes(data), block)
    data[blob + 2 if section == "blob" else blob + padded(blob_len) + 3] ^= 0x10
    path.write_bytes(bytes(data))
    report = salvage(path, tmp_path / "out.mseg")
    [session] = report.sessions
    with memseg.open(tmp_path / "out.mseg") as store:
        out = store.session(uuid.UUID(int=1))
        values = [a.value() for a in out.actions]
        snapshots = [c.value() for c in out.checkpoints]
    if section == "blob":
        assert values == ["first", "fourth"] and session.lost == [(1, 3)]
        assert snapshots == [{"state": 42}]
    else:
        assert values == ["first", "second", "third", "fourth"] and session.lost == []
        assert snapshots == [] and session.lost_checkpoints == 1


def test_salvage_keeps_an_end_over_a_stale_active_snapshot_copied_after_it(
        tmp_path: Path) -> None:
    """A duplicate of the ACTIVE snapshot a flush wrote, appended after the session's end
    (same counts), won as the later of equals: salvage un-ended the session."""
    path = tmp_path / "f.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session(session_id=uuid.UUID(int=1))
        rec.record("a", 1, ts_ns=1)
        rec.flush()
        rec.end("finished")
    data = path.read_bytes()
    active = [r for r in records(data) if r.kind == Kind.SNAPSHOT][1]
    path.write_bytes(data + data[active.offset : active.end])
    salvage(path, tmp_path / "out.mseg")
    with memseg.open(tmp_path / "out.mseg") as store:
        info = store.session(uuid.UUID(int=1)).info
        assert (info.state, info.status, info.action_count) == ("ended", "finished", 1)


def test_salvage_rebuilds_a_session_whose_session_record_names_another_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers never decode SESSION records, so the session read whole and salvage
    copied it as stored: the salvaged file failed verify (wrong_session)."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)
    with memseg.open(path, "a") as store:
        with store.start_session(name="s", session_id=uuid.UUID(int=1)) as rec:
            rec.record("k", "kept", ts_ns=1)
        store.start_session(session_id=uuid.UUID(int=2)).end("ok")  # a later commit
    data = path.read_bytes()
    first = next(r for r in records(data) if r.kind == Kind.SESSION)
    body = bytearray(payload_of(data, first))
    body[:16] = uuid.UUID(int=3).bytes
    path.write_bytes(rewrite(data, first, bytes(body)))
    with memseg.open(path) as reader:
        assert [a.value() for a in reader.session(uuid.UUID(int=1)).actions] == ["kept"]
    salvage(path, tmp_path / "out.mseg")
    assert memseg.verify(tmp_path / "out.mseg").ok
    with memseg.open(tmp_path / "out.mseg") as store:
        assert [a.value() for a in store.session(uuid.UUID(int=1)).actions] == ["kept"]


def test_salvage_does_not_let_a_kept_block_run_over_a_committed_one(tmp_path: Path) -> None:
    """A kept tail holds block Q (seqs 10..19); the resumed session committed P2 (10..14)
    and P3 (15..24), then P2 was damaged. With no committed block at 10, salvage took Q,
    reached 20 and dropped P3, whose actions every reader still read."""
    path = tmp_path / "f.mseg"
    store = memseg.open(path, "a")
    rec = store.start_session(session_id=uuid.UUID(int=1))
    for i in range(10):
        rec.record("k", f"A{i}")
    rec.flush()
    for i in range(10, 20):
        rec.record("k", f"Q{i}")
    rec.flush()
    store._recorders.clear()  # leave it active, as a writer that died
    store.close()
    data = bytearray(path.read_bytes())
    data[-TRAILER_RECORD_SIZE + 40] ^= 1  # bit rot in that commit's trailer: kept, not cut
    path.write_bytes(bytes(data))
    with memseg.open(path, "a") as store:
        assert store.kept_from is not None
        rec = store.resume(uuid.UUID(int=1))
        for i in range(10, 15):
            rec.record("k", f"P2_{i}")
        rec.flush()
        p2 = rec._live.last_block_offset
        for i in range(15, 25):
            rec.record("k", f"P3_{i}")
        rec.end()
    data = bytearray(path.read_bytes())
    data[p2 + RECORD_HEADER.size + BLOCK_HEADER.size] ^= 0xFF  # P2's columns fail their CRC
    path.write_bytes(bytes(data))
    report = salvage(path, tmp_path / "out.mseg")
    assert report.sessions[0].lost == [(10, 15)]
    with memseg.open(tmp_path / "out.mseg") as out:
        values = [a.value() for a in out.session(uuid.UUID(int=1)).actions]
    assert values == [f"A{i}" for i in range(10)] + [f"P3_{i}" for i in range(15, 25)]


@pytest.mark.parametrize(("copied_commit", "at_the_end"),
                         [("first", False), ("second", False), ("first", True)])
def test_a_payload_holding_a_copy_of_an_older_trailer_is_not_taken_for_a_commit(
        tmp_path: Path, copied_commit: str, at_the_end: bool) -> None:
    """A recorded payload that holds this file's own older trailer (a payload holding a copy
    of the file, stored raw because it does not compress) was, while uncommitted, taken by
    the backward scan for the newest commit: readers showed the older state, and a writer
    opening a copy of the file went on from it, dropping the acknowledged commit after. A
    copy of a one-fsync trailer failed its region CRC instead, and the writer kept the
    tail as an unverified commit, which then blocked compaction. A copy that ends the file
    fooled the fast path the same way."""
    path = tmp_path / "store.mseg"
    store = memseg.open(path, "a")
    with store.start_session(name="first") as first:
        # Over 1 MiB: a two-fsync commit, whose trailer has no region CRC to fail.
        first.record("blob", random.Random(6).randbytes(1 << 20))
    assert store.commit is not None and store.commit.flags == 0
    first_trailer = store.commit.trailer_offset
    store.start_session(name="second").end()
    assert store.commit is not None and store.commit.flags == 1
    copied_at = first_trailer if copied_commit == "first" else store.commit.trailer_offset
    old_trailer = path.read_bytes()[copied_at : copied_at + TRAILER_RECORD_SIZE]
    rec = store.start_session(name="third")
    # Over the block size, so the block is written at once; random, so it is stored raw.
    noise = random.Random(7).randbytes(1 << 20)
    rec.record("file_copy", noise + old_trailer if at_the_end else old_trailer + noise)
    data = path.read_bytes()
    assert data.endswith(old_trailer) == at_the_end
    assert old_trailer in data[store.commit.end :]  # the copy is in the uncommitted tail
    with memseg.open(path) as reader:
        assert sorted(str(i.name) for i in reader.sessions()) == ["first", "second"]
    copied = tmp_path / "copied-mid-write.mseg"
    copied.write_bytes(data)
    with memseg.open(copied, "a") as writer:
        assert sorted(str(i.name) for i in writer.sessions()) == ["first", "second"]
        # Not taken for an unverified commit either, so nothing is kept from compaction.
        assert writer.kept_from is None and not writer.located.unverified
    store.close()


def test_a_payload_holding_a_copy_of_the_whole_file_is_cut_as_an_ordinary_torn_tail(
        tmp_path: Path) -> None:
    """A copy of the file inside an uncommitted payload holds a TOC followed by its trailer;
    a writer opening after a crash took that pair for a committed TOC whose trailer was
    damaged, kept the tail for salvage, and compaction then refused the file."""
    path = tmp_path / "store.mseg"
    store = memseg.open(path, "a")
    store.start_session(name="first").end()
    store.start_session(name="second").end()
    copy = path.read_bytes()  # ends with a TOC and the trailer naming it
    rec = store.start_session(name="third")
    # Random bytes after it, so the block does not compress and is stored raw, at once.
    rec.record("file_copy", copy + random.Random(8).randbytes(1 << 20))
    data = path.read_bytes()
    assert data.find(copy, len(copy)) % 8 == 0  # the copy's records stand aligned
    crashed = tmp_path / "crashed.mseg"
    crashed.write_bytes(data)
    with memseg.open(crashed, "a") as writer:
        assert sorted(str(i.name) for i in writer.sessions()) == ["first", "second"]
        assert writer.kept_from is None
        writer.archive(["first"])
    memseg.compact(crashed)
    with memseg.open(crashed) as reader:
        assert [i.name for i in reader.sessions()] == ["second"]
    store.close()

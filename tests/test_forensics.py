"""Forensics on copied files: the record map, verify, salvage and search, on whole,
cut and damaged files. Nothing here may change the file it reads."""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import memseg
from fuzz.corpus import payload_of, records, rewrite
from memseg.codec import crc32c
from memseg.forensics import info, open_readonly, verify_bytes
from memseg.format import FILE_HEADER, Kind
from memseg.scan import GAP, OK, TORN
from tests.forensic_support import (
    block_spans,
    build_store,
    committed_counts,
    file_state,
    is_subsequence,
    stored_actions,
    with_damaged_header,
)
from tests.helpers import ModelSession, assert_session_matches

Row = tuple[int, str, bytes, bytes | None]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[uuid.UUID, ModelSession]]:
    path = tmp_path_factory.mktemp("sample") / "sample.mseg"
    model = build_store(path, seed=7)
    path.chmod(0o444)
    return path, model


def _same(got: Row, want: Row) -> bool:
    """An action as salvaged equals the original; a kind whose name was lost gets a placeholder."""
    return got == want or (got[1].startswith("unknown-kind-") and
                           (got[0], got[2], got[3]) == (want[0], want[2], want[3]))


def _check_salvaged(dst: Path, original: dict[uuid.UUID, list[Row]], floor: dict[uuid.UUID, int]
                    ) -> dict[uuid.UUID, list[Row]]:
    """DST verifies clean, holds only original actions in order, and every session committed
    before the damage with at least its committed actions, unchanged."""
    assert memseg.verify(dst).problems == []
    got = stored_actions(dst)
    for sid, rows in got.items():
        want = original[sid]
        it = iter(want)
        assert all(any(_same(g, w) for w in it) for g in rows), sid
    for sid, count in floor.items():
        assert sid in got
        assert len(got[sid]) >= count
        assert all(_same(g, w) for g, w in zip(got[sid][:count], original[sid][:count], strict=True))
    return got


# --- scan ------------------------------------------------------------------------


def test_scan_maps_every_byte_of_an_intact_file(sample: tuple[Path, object]) -> None:
    path, _ = sample
    records = memseg.scan(path)
    assert records[0].offset == FILE_HEADER.size
    for a, b in itertools.pairwise(records):
        assert a.end == b.offset
    assert records[-1].end == path.stat().st_size
    assert all(r.status == OK for r in records)
    assert records[-1].kind == "TRAILER"
    seqs = [r.commit for r in records if r.kind == "TRAILER"]
    assert seqs == list(range(1, len(seqs) + 1))
    blocks = [r for r in records if r.kind == "BLOCK"]
    assert blocks and all(r.session_id is not None for r in blocks)


def test_scan_starts_with_a_gap_for_a_damaged_file_header(sample: tuple[Path, object],
                                                         tmp_path: Path) -> None:
    path, _ = sample
    records = memseg.scan(path)
    after = memseg.scan(with_damaged_header(path, tmp_path / "hdr.mseg"))
    head = after[0]
    assert (head.offset, head.end, head.status, head.reason) == (
        0, FILE_HEADER.size, GAP, "file_header:header_crc")
    assert head.commit == records[0].commit
    # The records after it are mapped as in the intact file.
    assert after[1:] == records


def test_scan_resynchronises_after_garbage_in_the_middle(sample: tuple[Path, object],
                                                         tmp_path: Path) -> None:
    path, _ = sample
    data = bytearray(path.read_bytes())
    records = memseg.scan(path)
    victim = records[len(records) // 2]
    data[victim.offset : victim.offset + 40] = b"\xa5" * 40
    damaged = tmp_path / "damaged.mseg"
    damaged.write_bytes(bytes(data))
    after = memseg.scan(damaged)
    gaps = [r for r in after if r.status == GAP]
    assert len(gaps) == 1
    assert gaps[0].offset == victim.offset
    # The walk picks up again at the next record and maps the rest exactly.
    assert [r.offset for r in after if r.offset > victim.offset + 40] == [
        r.offset for r in records if r.offset > victim.offset + 40]


def test_scan_marks_a_record_cut_by_eof_as_torn(sample: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = sample
    records = memseg.scan(path)
    block = next(r for r in records if r.kind == "BLOCK" and r.length > 100)
    cut = tmp_path / "cut.mseg"
    cut.write_bytes(path.read_bytes()[: block.offset + 50])
    last = memseg.scan(cut)[-1]
    assert (last.offset, last.status, last.kind, last.commit) == (block.offset, TORN, "BLOCK", None)


# --- verify ------------------------------------------------------------------------


def test_verify_passes_an_intact_file(sample: tuple[Path, dict[uuid.UUID, ModelSession]]) -> None:
    path, model = sample
    report = memseg.verify(path)
    assert report.ok and report.problems == [] and report.notes == []
    assert report.sessions == len(model)
    assert report.actions == sum(len(m.actions) for m in model.values())


def test_verify_calls_a_cut_file_torn_never_corrupt(sample: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = sample
    data = path.read_bytes()
    ends = {r.end for r in memseg.scan(path) if r.kind == "TRAILER"}
    rng = random.Random(1)
    cuts = sorted({rng.randrange(FILE_HEADER.size, len(data)) for _ in range(60)} | set(list(ends)[:5]))
    target = tmp_path / "cut.mseg"
    for cut in cuts:
        target.write_bytes(data[:cut])
        report = memseg.verify(target)
        assert report.problems == [], cut
        assert [n.reason for n in report.notes] == ([] if cut in ends else ["torn_tail"]), cut


@given(st.data())
def test_verify_finds_every_single_flipped_byte(
        sample: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    path, _ = sample
    raw = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[at] ^= data.draw(st.integers(1, 255), label="xor")
    target = tmp_path_factory.mktemp("flip") / "flip.mseg"
    target.write_bytes(bytes(raw))
    report = memseg.verify(target)
    assert report.problems
    # The first problem is reported at or before the damaged byte's record.
    assert min(p.offset for p in report.problems) <= max(at, FILE_HEADER.size)


def test_verify_reports_offsets_and_reason_codes(sample: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = sample
    records = memseg.scan(path)
    block = next(r for r in records if r.kind == "BLOCK")
    raw = bytearray(path.read_bytes())
    raw[block.end - 1] ^= 0xFF  # payload (or padding) of the block
    raw[FILE_HEADER.size - 1] ^= 0x01  # file header CRC
    target = tmp_path / "two.mseg"
    target.write_bytes(bytes(raw))
    report = memseg.verify(target)
    reasons = {(p.offset, p.reason) for p in report.problems}
    assert (FILE_HEADER.size - 4, "header_crc") in reasons
    assert any(off >= block.offset and off < block.end for off, _ in reasons)


def test_verify_of_a_file_that_is_not_memseg_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "text.mseg"
    target.write_bytes(b"hello, this is not a memseg file at all\n" * 10)
    with pytest.raises(memseg.NotMemsegError) as err:
        memseg.verify(target)
    assert err.value.reason == "bad_magic"


# --- salvage -----------------------------------------------------------------------


def test_salvage_of_an_intact_file_copies_every_session_exactly(
        sample: tuple[Path, dict[uuid.UUID, ModelSession]], tmp_path: Path) -> None:
    path, model = sample
    before = file_state(path)
    report = memseg.salvage(path, tmp_path / "out.mseg")
    assert file_state(path) == before
    assert report.complete and report.lost_actions == 0 and report.damaged == []
    assert {s.session_id for s in report.sessions} == set(model)
    assert all(s.copied for s in report.sessions)
    with memseg.open(tmp_path / "out.mseg") as out, memseg.open(path) as src:
        for sid, m in model.items():
            assert_session_matches(out.session(sid), m)
        # Copied as stored: every time kept (only superseded snapshots are left behind).
        assert [replace(i, stored_bytes=0) for i in out.sessions()] == [
            replace(i, stored_bytes=0) for i in src.sessions()]


def test_salvage_refuses_an_existing_destination(sample: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = sample
    dst = tmp_path / "out.mseg"
    dst.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        memseg.salvage(path, dst)
    assert dst.read_bytes() == b"keep me"


def test_salvage_of_cut_files_keeps_every_committed_session(sample: tuple[Path, object],
                                                             tmp_path: Path) -> None:
    path, _ = sample
    data = path.read_bytes()
    original = stored_actions(path)
    rng = random.Random(2)
    for n, cut in enumerate(sorted(rng.randrange(FILE_HEADER.size, len(data)) for _ in range(25))):
        src = tmp_path / f"cut{n}.mseg"
        src.write_bytes(data[:cut])
        floor = committed_counts(data[:cut], tmp_path / "probe.mseg")
        report = memseg.salvage(src, tmp_path / f"out{n}.mseg")
        got = _check_salvaged(tmp_path / f"out{n}.mseg", original, floor)
        assert {s.session_id for s in report.sessions} == set(got)


def test_salvage_recovers_actions_whose_commit_never_landed(tmp_path: Path) -> None:
    path = tmp_path / "live.mseg"
    with memseg.open(path, "a") as store:
        done = store.start_session("done")
        done.record("step", {"i": 0})
        done.end("ok")
        committed = path.stat().st_size
        rec = store.start_session("in-flight", meta={"k": 1})
        for i in range(30):
            rec.record("step", {"i": i}, result=f"r{i}")
        rec.flush()
    data = path.read_bytes()
    # Keep everything but the final TOC and trailer: the session's only commit is gone.
    records = memseg.scan(path)
    last_toc = max(r.offset for r in records if r.kind == "TOC")
    src = tmp_path / "cut.mseg"
    src.write_bytes(data[:last_toc])
    assert committed < last_toc
    report = memseg.salvage(src, tmp_path / "out.mseg")
    flight = next(s for s in report.sessions if s.name == "in-flight")
    assert (flight.source, flight.actions, flight.lost) == ("uncommitted", 30, [])
    with memseg.open(tmp_path / "out.mseg") as out:
        session = out.session("in-flight")
        assert session.info.meta == {"k": 1}
        assert session.info.state == "active"
        assert [a.value() for a in session.actions] == [{"i": i} for i in range(30)]
        assert [a.result_value() for a in session.actions] == [f"r{i}" for i in range(30)]


@pytest.mark.parametrize("seed", range(6))
def test_salvage_past_damage_in_the_middle(sample: tuple[Path, object], tmp_path: Path, seed: int) -> None:
    path, _ = sample
    data = bytearray(path.read_bytes())
    original = stored_actions(path)
    spans = block_spans(path)
    rng = random.Random(seed)
    at = rng.randrange(FILE_HEADER.size, len(data) - 64)
    width = rng.choice([1, 8, 100, 3000])
    for i in range(at, min(len(data), at + width)):
        data[i] ^= rng.randrange(1, 256)
    src = tmp_path / "damaged.mseg"
    src.write_bytes(bytes(data))
    floor = committed_counts(bytes(data[:at]), tmp_path / "probe.mseg")
    report = memseg.salvage(src, tmp_path / "out.mseg")
    got = _check_salvaged(tmp_path / "out.mseg", original, floor)
    assert not report.complete
    # Every block the damage did not touch comes back, before and after the damage.
    for span in spans:
        if span.end <= at or span.offset >= at + width:
            rows = original[span.session_id][span.first_seq : span.first_seq + span.count]
            assert span.session_id in got
            assert is_subsequence([r[0] for r in rows], [r[0] for r in got[span.session_id]])


def test_salvage_recovers_a_file_whose_header_is_gone(sample: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = sample
    data = bytearray(path.read_bytes())
    data[:FILE_HEADER.size] = bytes(FILE_HEADER.size)
    src = tmp_path / "headless.mseg"
    src.write_bytes(bytes(data))
    report = memseg.salvage(src, tmp_path / "out.mseg")
    assert report.lost_actions == 0
    assert stored_actions(tmp_path / "out.mseg") == stored_actions(path)
    # Every session was rebuilt (salvage's own created and ended times): not complete.
    assert not report.complete and report.damaged[0].offset == 0


def test_salvage_of_nothing_memseg_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "zeros.mseg"
    src.write_bytes(bytes(4096))
    with pytest.raises(memseg.NotMemsegError):
        memseg.salvage(src, tmp_path / "out.mseg")
    assert not (tmp_path / "out.mseg").exists()


# --- reading damaged and busy files -------------------------------------------------


def test_reads_work_on_a_file_a_writer_holds_open(tmp_path: Path) -> None:
    path = tmp_path / "busy.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session("live")
        rec.record("step", "committed")
        rec.flush()
        rec.record("step", "buffered")
        rec._cut_block()  # appended, not committed: what a writer mid-flush leaves
        report = memseg.verify(path)
        assert report.problems == [] and [n.reason for n in report.notes] == ["torn_tail"]
        fi = info(path)
        assert fi.tail_bytes > 0 and fi.actions == 1
        hits = list(memseg.search(path, "committed"))
        assert [h.seq for h in hits] == [0]


def test_open_readonly_reads_a_file_with_a_damaged_header(sample: tuple[Path, dict[uuid.UUID, ModelSession]],
                                                          tmp_path: Path) -> None:
    path, model = sample
    src = with_damaged_header(path, tmp_path / "hdr.mseg")
    with pytest.raises(memseg.CorruptError):
        memseg.open(src, "r")
    with open_readonly(src) as store:
        assert {i.id for i in store.sessions()} == set(model)
        for sid, m in model.items():
            assert_session_matches(store.session(sid), m)
    assert info(src).header_error is not None


# --- search ---------------------------------------------------------------------


def _naive(path: Path, rx: re.Pattern[bytes], kinds: set[str] | None) -> list[tuple[uuid.UUID, int]]:
    out = []
    with memseg.open(path) as store:
        for i in store.sessions():
            for a in store.session(i.id).actions:
                if (kinds is None or a.kind in kinds) and rx.search(a.payload):
                    out.append((i.id, a.seq))
    return out


@pytest.mark.parametrize(("pattern", "regex", "kinds"), [
    ("fix", False, None),
    ("header", False, {"thinking", "tool_call"}),
    (r"m[0-9]+\.py", True, None),
    (r"^step 1", True, None),
    (r"\d$", True, {"user_message"}),
    (r"parse.{0,40}test", True, None),
    ("no such text anywhere", False, None),
])
def test_search_finds_exactly_what_a_scan_of_every_action_finds(
        sample: tuple[Path, object], pattern: str, regex: bool, kinds: set[str] | None) -> None:
    path, _ = sample
    rx = re.compile(pattern.encode() if regex else re.escape(pattern.encode()))
    hits = list(memseg.search(path, pattern, regex=regex, kinds=kinds))
    assert [(h.session_id, h.seq) for h in hits] == _naive(path, rx, kinds)
    for h in hits:
        assert rx.search(h.context[h.context_start:])


def test_search_does_not_match_across_two_payloads(tmp_path: Path) -> None:
    path = tmp_path / "edge.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session("s")
        rec.record("a", "xxab")
        rec.record("a", "cdyy")
        rec.record("b", "abcd", result="abcd-result")
        rec.end()
    assert [h.seq for h in memseg.search(path, "abcd")] == [2]
    hits = list(memseg.search(path, "result", results=True))
    assert [(h.seq, h.part, h.start) for h in hits] == [(2, "result", 5)]


def test_salvage_keeps_archived_sessions_archived(tmp_path: Path) -> None:
    path = tmp_path / "arch.mseg"
    with memseg.open(path, "a") as store:
        for name in ("old", "new"):
            rec = store.start_session(name)
            rec.record("step", {"name": name})
            rec.end("ok")
        store.archive("old")
    report = memseg.salvage(path, tmp_path / "out.mseg")
    assert report.complete
    with memseg.open(tmp_path / "out.mseg") as out:
        assert {i.name: i.state.value for i in out.sessions()} == {"old": "archived", "new": "ended"}
        assert [a.value() for a in out.session("old").actions] == [{"name": "old"}]


def test_a_damaged_version_field_is_damage_but_a_newer_version_is_refused(
        sample: tuple[Path, dict[uuid.UUID, ModelSession]], tmp_path: Path) -> None:
    path, model = sample
    data = bytearray(path.read_bytes())
    data[8] = 2  # major version 2, header CRC left as it was: a damaged byte
    damaged = tmp_path / "damaged.mseg"
    damaged.write_bytes(bytes(data))
    with open_readonly(damaged) as store:
        assert {i.id for i in store.sessions()} == set(model)
    assert any(p.reason == "major_version" for p in memseg.verify(damaged).problems)
    head = bytes(data[: FILE_HEADER.size - 4])
    data[FILE_HEADER.size - 4 : FILE_HEADER.size] = crc32c(head).to_bytes(4, "little")
    newer = tmp_path / "newer.mseg"
    newer.write_bytes(bytes(data))
    for call in (open_readonly, memseg.verify, memseg.scan, info):
        with pytest.raises(memseg.VersionError) as err:
            call(newer)
        assert err.value.reason == "major_version"


def test_salvage_recovers_a_session_whose_only_commit_is_unverified(tmp_path: Path) -> None:
    path = tmp_path / "unverified.mseg"
    with memseg.open(path, "a") as store:
        rec = store.start_session("a")
        for i in range(10):
            rec.record("step", {"i": i})
        rec.flush()
    toc = next(r for r in memseg.scan(path) if r.kind == "TOC")
    raw = bytearray(path.read_bytes())
    raw[toc.offset + 40] ^= 0x01  # the commit's region CRC no longer holds
    path.write_bytes(bytes(raw))
    with memseg.open(path, "r") as store:
        assert store.sessions() == [] and store.located.unverified
    assert info(path).unverified_commits == list(store.located.unverified)
    with memseg.open(path, "a") as store:  # keeps the unverified bytes, commits after them
        rec = store.start_session("b")
        rec.record("step", {"j": 1})
        rec.end()
    report = memseg.salvage(path, tmp_path / "out.mseg")
    assert {(s.name, s.source, s.actions) for s in report.sessions} == {
        ("a", "uncommitted", 10), ("b", "committed", 1)}
    with memseg.open(tmp_path / "out.mseg") as out:
        assert [a.value() for a in out.session("a").actions] == [{"i": i} for i in range(10)]


def test_search_goes_on_past_a_session_whose_index_is_damaged(tmp_path: Path) -> None:
    """A session whose INDEX chunk does not read stopped the whole search: matches in
    later sessions were never reported."""
    path = tmp_path / "f.mseg"
    with memseg.open(path, "a") as store:
        for name in ("first", "broken", "last"):
            with store.start_session(name=name) as rec:
                rec.record("k", "needle in " + name, ts_ns=1)
    with memseg.open(path) as store:
        index_at = store.session("broken").actions._snap.index_offset
    data = bytearray(path.read_bytes())
    data[index_at + 40] ^= 1
    path.write_bytes(bytes(data))
    errors: list[memseg.MemsegError] = []
    hits = list(memseg.search(path, "needle", on_error=errors.append))
    assert [h.session_name for h in hits] == ["first", "last"]
    assert [e.reason for e in errors] == ["payload_crc"]


def test_verify_reports_a_value_that_does_not_decode(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A block whose CRCs hold but whose JSON payload does not parse passed verify, while a
    reader's value() raised CorruptError."""
    path = tmp_path / "f.mseg"
    monkeypatch.setattr(memseg.codec, "MIN_COMPRESS", 1 << 62)
    with memseg.open(path, "a") as store:
        with store.start_session(name="s") as rec:
            rec.record("k", {"a": 1}, ts_ns=1)
        store.compact()  # one commit without a region CRC: only verify can notice
    data = path.read_bytes()
    block = next(r for r in records(data) if r.kind == Kind.BLOCK)
    body = bytearray(payload_of(data, block))
    at = body.find(b'{"a":1}')
    body[at] = ord("[")
    path.write_bytes(rewrite(data, block, bytes(body)))
    with memseg.open(path) as reader, pytest.raises(memseg.CorruptError, match="bad_value"):
        reader.session("s").actions[0].value()
    report = memseg.verify(path)
    assert [p.reason for p in report.problems] == ["bad_value"]
    assert report.problems[0].offset == block.offset


_DEAD_WRITER = """
import os, sys, uuid, memseg
store = memseg.open(sys.argv[1], "a")
rec = store.start_session(name="s", session_id=uuid.UUID(int=1))
rec.record("k", 1)
rec.flush()
blob = os.urandom(1 << 19)
for _ in range(24):  # about 12 MiB of blocks, never committed
    rec.record("k", blob)
os._exit(0)
"""

# Runs a command of the CLI, paused after it mapped the file (as if preempted) until
# the flag file is removed.
_PAUSED_CLI = """
import os, sys, time, memseg.cli, memseg.view
flag, args = sys.argv[1], sys.argv[2:]
locate = memseg.view.locate_commit
def paused(*a, **k):
    open(flag, "w").close()
    deadline = time.monotonic() + 30
    while os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.01)
    return locate(*a, **k)
memseg.view.locate_commit = paused
sys.exit(memseg.cli.main(args))
"""


@pytest.mark.parametrize("command", ["info", "ls"])
def test_reading_commands_survive_a_writer_cutting_the_tail(tmp_path: Path, command: str) -> None:
    """`memseg info` scanned the torn tail through its map: a writer cutting the tail
    meanwhile killed it with SIGBUS. The scan reads with pread now."""
    path, flag = tmp_path / "live.mseg", tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", _DEAD_WRITER, str(path)], env=env, check=True)
    torn_size = path.stat().st_size
    reader = subprocess.Popen([sys.executable, "-c", _PAUSED_CLI, str(flag), command, str(path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flag.exists(), reader.communicate()
        memseg.open(path, "a").close()  # a new writer cuts the torn tail
        assert path.stat().st_size < torn_size // 100
    finally:
        flag.unlink(missing_ok=True)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, (reader.returncode, err.decode())
    assert b"s" in out


def test_verify_finds_a_copy_stitched_across_a_writer_restart(tmp_path: Path) -> None:
    """A copy read while a new writer cut a dead writer's tail and made a large commit
    holds the dead writer's uncommitted blocks where the new commit's belong, with the
    same session, seqs and counts: readers do not check a large commit's region and show
    them (SPEC "Known problems"). verify checks the region CRC its writer recorded."""
    live, dead = tmp_path / "live.mseg", tmp_path / "dead.mseg"
    sid = uuid.UUID(int=7)
    with memseg.open(live, "a") as first:
        rec = first.start_session(name="s", session_id=sid)
        rec.record("k", b"committed")
        rec.flush()
        for i in range(6):  # blocks appended, never committed
            rec.record("k", b"dead writer %d " % i + random.Random(i).randbytes(350_000))
        dead.write_bytes(live.read_bytes())  # the file as a writer dying now leaves it
        committed_end = first.located.commit.end if first.located.commit else 0
    torn = dead.read_bytes()
    with memseg.open(dead, "a") as second:
        rec = second.resume(sid)
        for i in range(3):
            rec.record("k", b"acknowledged %d " % i + random.Random(10 + i).randbytes(500_000))
        rec.flush()  # a large commit: more than SINGLE_SYNC_MAX_REGION
    after = dead.read_bytes()
    cut = committed_end + (1_100_000 // 65536) * 65536  # where the copy tool was preempted
    stitched = torn[:cut] + after[cut:]
    assert verify_bytes(after).ok
    report = verify_bytes(stitched)
    assert "region_crc" in {p.reason for p in report.problems}

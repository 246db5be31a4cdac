"""A TOC too large for one record is written across several (SPEC section 4, "Large TOCs").

Entries past MAX_PAYLOAD used to fail every commit for good with a bare ValueError, even
compaction's. The tests shrink the per-record budget so a few sessions need several
records; the last test builds a real one past 128 MiB.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

import memseg
import memseg.toc
from memseg.forensics import verify
from memseg.format import MAX_META
from memseg.scan import mapped, walk
from tests.retention_support import dump_path, record_session

DAY_NS = 86_400 * 10**9


@pytest.fixture
def small_toc_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # About four entries of the sessions below per record.
    monkeypatch.setattr(memseg.toc, "TOC_RECORD_BUDGET", 2048)


def _toc_records(path: Path) -> int:
    with mapped(path) as m:
        return sum(r.kind == "TOC" for r in walk(m))


def _build(path: Path, sessions: int) -> None:
    with memseg.open(path, "a", sync="none") as store:
        for i in range(sessions):
            rec = record_session(store, f"s{i}", actions=6, t0=i, end=False)
            # A metadata update is not in the API: the padding goes in with the name.
            rec.end(status="done " + "x" * 200)
        store.archive([f"s{i}" for i in range(0, sessions, 3)])
        record_session(store, "live", actions=7, end=False)


@pytest.mark.usefixtures("small_toc_records")
def test_commits_compaction_and_verify_work_across_split_tocs(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    _build(path, 40)
    report = verify(path)
    assert report.ok, report.problems
    # More TOC records than commits: some commits split theirs.
    assert _toc_records(path) > report.commits
    assert len(dump_path(path)) == 41
    live = dump_path(path, live_only=True)

    memseg.compact(path)
    assert dump_path(path) == live
    assert _toc_records(path) > 1
    assert verify(path).ok
    once = path.read_bytes()
    memseg.compact(path)
    assert path.read_bytes() == once  # deterministic, split included

    # A writer goes on from a split TOC: its runs are read back and merged further.
    with memseg.open(path, "a") as store:
        record_session(store, "after", actions=4)
    assert verify(path).ok
    after = dump_path(path)
    assert {k: after[k] for k in live} == live
    assert [d["info"][1] for k, d in after.items() if k not in live] == ["after"]


@pytest.mark.usefixtures("small_toc_records")
def test_sweep_predicts_a_split_archive_toc_exactly(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    _build(src, 30)
    now = time.time_ns() + 10 * DAY_NS
    with memseg.open(src, "a") as store:
        store.unarchive([i.id for i in store.sessions() if i.state == "archived"])
        uncapped = store.sweep(1, archive_to=dest, max_archive_bytes=10**9, dry_run=True,
                               now_ns=now)
        assert uncapped.archive_bytes_after is not None
        cap = uncapped.archive_bytes_after * 2 // 3
        dry = store.sweep(1, archive_to=dest, max_archive_bytes=cap, dry_run=True, now_ns=now)
        real = store.sweep(1, archive_to=dest, max_archive_bytes=cap, now_ns=now)
    assert dataclasses.replace(dry, dry_run=False) == real
    assert real.dropped
    assert real.archive_bytes_after == dest.stat().st_size <= cap
    assert _toc_records(dest) > 1
    assert verify(dest).ok


def test_entries_past_the_record_limit_still_commit(tmp_path: Path) -> None:
    """The real limit: 140 sessions of 1 MiB metadata need 140 MiB of TOC entries."""
    path = tmp_path / "big.mseg"
    meta = {"pad": "m" * (MAX_META - 100)}
    with memseg.open(path, "a", sync="none") as store:
        for i in range(140):
            with store.start_session(name=f"s{i}", meta=meta) as rec:
                rec.record("k", i)
    assert _toc_records(path) > 1
    with memseg.open(path) as store:
        assert [i.name for i in store.sessions()] == [f"s{i}" for i in range(140)]
    memseg.compact(path)
    with memseg.open(path, "a") as store, store.start_session(name="after") as rec:
        rec.record("k", 1)
    with memseg.open(path) as store:
        infos = store.sessions()
        assert len(infos) == 141 and infos[0].meta == meta


def test_commit_cost_stays_logarithmic_after_a_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Split records were folded one by one: folding the first made the pending set big
    enough to fold all the others, so every few commits rewrote the whole TOC. A commit's
    records are folded as one group now."""
    monkeypatch.setattr(memseg.toc, "TOC_RECORD_BUDGET", 20 * 320)  # about 20 entries
    path = tmp_path / "wide.mseg"
    with memseg.open(path, "a", sync="none") as store:
        for i in range(1200):
            with store.start_session(name=f"s{i:04d}", meta={"m": "x" * 200}) as rec:
                rec.record("k", i)
    memseg.compact(path)  # one group of 60 split records
    start = path.stat().st_size
    commits = 300
    with memseg.open(path, "a", sync="none") as store:
        for i in range(commits):  # a different session changes at each commit
            store.archive([f"s{i:04d}"])
    with mapped(path) as m:
        toc = sum(r.length for r in walk(m) if r.kind == "TOC" and r.offset >= start)
    # About 800 bytes: the changed entries, their merges, and a run list of 60 records.
    assert toc / commits < 2000, toc / commits  # 5,700 before the fix
    assert verify(path).ok

"""Archive, unarchive, export and the retention sweep."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path

import pytest

import memseg
from memseg.format import BLOCK_HEADER
from memseg.framing import parse_header, read_payload
from tests.retention_support import DAY_NS, dump_path, dump_store, record_session


def _states(store: memseg.Store) -> dict[str | None, str]:
    return {i.name: str(i.state) for i in store.sessions()}


def test_archive_and_unarchive_round_trip(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        for name in ("a", "b", "c"):
            record_session(store, name, actions=12)
        before = dump_store(store)
        assert store.archive(["a", "b"]) == 2
        commit = store.commit
        assert store.archive("a") == 0  # already archived: no commit at all
        assert store.commit == commit
        assert _states(store) == {"a": "archived", "b": "archived", "c": "ended"}
    with memseg.open(store_path) as store:  # committed like any change
        assert _states(store) == {"a": "archived", "b": "archived", "c": "ended"}
        archived = dump_store(store)
        assert all(archived[k]["state"] == "archived" for k in archived if k != _id(store, "c"))
        for k, d in archived.items():  # still readable, every byte the same
            assert {**d, "state": "ended"} == before[k]
    with memseg.open(store_path, "a") as store:
        assert store.unarchive([_id(store, "a"), "c"]) == 1
        assert _states(store) == {"a": "ended", "b": "archived", "c": "ended"}
    assert dump_path(store_path)[_id_path(store_path, "a")] == before[_id_path(store_path, "a")]


def _id(store: memseg.Store, name: str) -> str:
    return str(store.session(name).info.id)


def _id_path(path: Path, name: str) -> str:
    with memseg.open(path) as store:
        return _id(store, name)


def test_archiving_an_active_session_is_refused(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        record_session(store, "done", actions=5)
        rec = record_session(store, "running", actions=5, end=False)
        with pytest.raises(memseg.StateError) as err:
            store.archive(["done", "running"])
        assert err.value.reason == "active"
        assert _states(store) == {"done": "ended", "running": "active"}  # nothing changed
        rec.end()
        assert store.archive(["done", "running"]) == 2
    with memseg.open(store_path) as store, pytest.raises(memseg.ReadOnlyError):
        store.archive("done")


def test_archived_sessions_cannot_resume_and_ids_stay_taken(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        record_session(store, "a", actions=5)
        store.archive("a")
        with pytest.raises(memseg.StateError) as err:
            store.resume("a")
        assert err.value.reason == "not_active"
        with pytest.raises(KeyError):
            store.archive("no such session")


def _block_bodies(path: Path, name: str) -> list[bytes]:
    """Each block's columns and compressed sections, as stored (links and CRCs aside)."""
    with memseg.open(path) as store:
        actions = store.session(name).actions
        view = store._current()
        out = []
        for ref in actions.refs:
            head = parse_header(view.buf, int(ref["offset"]), view.limit, view.header.tag)
            out.append(read_payload(view.buf, head)[BLOCK_HEADER.size :])  # BLOCKs are codec NONE
        return out


def test_export_copies_sessions_bit_for_bit(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.mseg", tmp_path / "dest.mseg"
    with memseg.open(src, "a") as store:
        for name in ("a", "b", "c"):
            record_session(store, name, actions=45, t0=7)
        store.archive("b")
        original = dump_store(store)
        assert store.export(["a", "b"], dest) == 2  # dest is created
    copied = dump_path(dest)
    a, b = _id_path(src, "a"), _id_path(src, "b")
    assert copied[a] == original[a]
    assert copied[b] == {**original[b], "state": "ended"}  # a copy is live in its new file
    assert _block_bodies(dest, "a") == _block_bodies(src, "a")
    with memseg.open(src) as store:
        assert store.export("c", dest) == 1  # appended to an existing file
        assert store.export(["a", "c"], dest) == 0  # already there: skipped
        with pytest.raises(ValueError, match="own file"):
            store.export("a", src)
    assert set(dump_path(dest)) == {a, b, _id_path(src, "c")}
    with memseg.open(dest) as store:
        assert store.file_id != memseg.open(src).file_id


def test_export_refuses_a_different_session_under_the_same_id(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.mseg", tmp_path / "dest.mseg"
    with memseg.open(src, "a") as store:
        rec = record_session(store, "grows", actions=5, end=False)
        store.export("grows", dest)
        rec.record("more", "data", ts_ns=100)
        rec.flush()
        with pytest.raises(memseg.StateError) as err:
            store.export("grows", dest)
        assert err.value.reason == "exists"


def test_exported_archive_survives_compaction_of_both_files(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.mseg", tmp_path / "dest.mseg"
    with memseg.open(src, "a") as store:
        record_session(store, "a", actions=30)
        original = dump_store(store)
        store.export("a", dest)
        store.archive("a")
        store.compact()
        assert store.sessions() == []
    memseg.compact(dest)
    assert dump_path(dest) == original


# --- the sweep ---------------------------------------------------------------


def _now_for(path: Path, name: str, days: float) -> int:
    with memseg.open(path) as store:
        return store.session(name).info.last_activity_ns + round(days * DAY_NS)


def test_sweep_archives_ended_sessions_past_the_cutoff(store_path: Path) -> None:
    now = time.time_ns()
    later = now + 7 * DAY_NS
    with memseg.open(store_path, "a") as store:
        record_session(store, "old", actions=10)  # last active about now
        record_session(store, "stuck", actions=10, end=False)
        record_session(store, "recent", actions=10, t0=now + 5 * DAY_NS)
        old = store.session("old").info
        report = store.sweep(3, now_ns=later)  # cutoff: now + 4 days
        assert report.cutoff_ns == now + 4 * DAY_NS
        assert [i.id for i in report.archived] == [old.id]
        assert report.archived_bytes == old.stored_bytes
        assert [i.name for i in report.still_active] == ["stuck"]
        assert report.exported == () and report.archive_bytes_before is None
        assert _states(store) == {"old": "archived", "stuck": "active", "recent": "ended"}
        assert store.sweep(3, now_ns=later).archived == ()
        assert [i.name for i in store.sweep(1, now_ns=later).archived] == ["recent"]


def test_sweep_dry_run_changes_nothing_and_predicts_the_real_run(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    with memseg.open(src, "a") as store:
        for i in range(6):
            record_session(store, f"s{i}", actions=20 + 5 * i, t0=i)
        record_session(store, "active", actions=5, end=False)
    now = _now_for(src, "s5", 10)
    for cap in (None, 10**9, 6000):
        src_bytes = src.read_bytes()
        dest_bytes = dest.read_bytes() if dest.exists() else None
        with memseg.open(src, "a") as store:
            store.unarchive([i.id for i in store.sessions() if i.state == "archived"])
            dry = store.sweep(1, archive_to=dest, max_archive_bytes=cap, dry_run=True, now_ns=now)
            assert (dest.read_bytes() if dest.exists() else None) == dest_bytes
            real = store.sweep(1, archive_to=dest, max_archive_bytes=cap, now_ns=now)
        assert dry.dry_run and not real.dry_run
        assert dataclasses.replace(dry, dry_run=False) == real, cap
        assert len(real.archived) == 6
        if cap is not None:
            assert real.archive_bytes_after == dest.stat().st_size <= cap
        assert bool(real.dropped) == (cap == 6000)
        assert src.read_bytes() != src_bytes
    with memseg.open(src) as store:
        dry = store.sweep(1, archive_to=dest, dry_run=True, now_ns=now)  # read-only is fine
        assert dry.archived == ()
        with pytest.raises(memseg.ReadOnlyError):
            store.sweep(1, now_ns=now)


def test_sweep_exports_then_archives(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    with memseg.open(src, "a") as store:
        for i in range(3):
            record_session(store, f"s{i}", actions=15)
        original = dump_store(store)
        now = store.session("s2").info.last_activity_ns + 2 * DAY_NS
        report = store.sweep(1, archive_to=dest, now_ns=now)
        assert len(report.exported) == 3 and report.archive_bytes_before == 0
        assert report.exported_bytes < dest.stat().st_size
        store.compact()
        assert store.sessions() == []
    assert dump_path(dest) == original


def test_sweep_cap_drops_the_oldest_archived_sessions(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    names = [f"s{i}" for i in range(8)]
    with memseg.open(src, "a") as store:
        for name in names:
            record_session(store, name, actions=40)
        original = dump_store(store)
        now = store.session("s7").info.last_activity_ns + 2 * DAY_NS
        whole = store.sweep(1, archive_to=tmp_path / "whole.mseg", max_archive_bytes=10**12,
                            dry_run=True, now_ns=now).archive_bytes_after
        assert whole is not None and not (tmp_path / "whole.mseg").exists()
        cap = whole // 2
        report = store.sweep(1, archive_to=dest, max_archive_bytes=cap, now_ns=now)
    assert 0 < len(report.dropped) < len(names)
    assert [i.name for i in report.dropped] == names[: len(report.dropped)]  # oldest first
    assert report.archive_bytes_after is not None
    assert dest.stat().st_size == report.archive_bytes_after <= cap
    kept = dump_path(dest)
    assert set(kept) == {str(i.id) for i in report.exported} - {str(i.id) for i in report.dropped}
    assert all(kept[k] == original[k] for k in kept)
    # The next sweep adds newer sessions; the cap keeps holding.
    with memseg.open(src, "a") as store:
        for name in ("t0", "t1"):
            record_session(store, name, actions=40)
        now = store.session("t1").info.last_activity_ns + 2 * DAY_NS
        report = store.sweep(1, archive_to=dest, max_archive_bytes=cap, now_ns=now)
    assert [i.name for i in report.exported] == ["t0", "t1"]
    assert report.dropped and dest.stat().st_size <= cap
    assert {"t0", "t1"} <= {d["info"][1] for d in dump_path(dest).values()}


def test_sweep_arguments_are_checked(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        with pytest.raises(ValueError):
            store.sweep(-1)
        with pytest.raises(ValueError):
            store.sweep(1, max_archive_bytes=100)
        with pytest.raises(ValueError):
            store.sweep(1, archive_to=store_path)
        with pytest.raises(ValueError):
            store.sweep(math.nan)


@pytest.mark.parametrize("days", [1e300, math.inf])
def test_a_sweep_longer_than_any_i64_time_archives_nothing(store_path: Path, days: float) -> None:
    with memseg.open(store_path, "a") as store:
        store.start_session(name="s").end()
        report = store.sweep(days, now_ns=-(2**63) + 5)
        assert report.archived == () and report.cutoff_ns == -(2**63)
        assert [i.state for i in store.sessions()] == ["ended"]


def test_a_capped_sweep_into_an_archive_holding_a_kept_commit_refuses_before_exporting(
        tmp_path: Path) -> None:
    """The archive's newest commit is unverified: its compaction must refuse (kept_commit).
    The real sweep exported first and then refused; the dry run predicted success."""
    src, dest = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    with memseg.open(dest, "a") as store:
        store.start_session(name="a").end()
        size = dest.stat().st_size
        rec = store.start_session(name="b")
        rec.record("k", "x" * 50)
        rec.end()
    data = bytearray(dest.read_bytes())
    data[size + 40] ^= 1  # inside the newest commit's region: it is now unverified
    dest.write_bytes(bytes(data))
    with memseg.open(src, "a") as store:
        for name in ("s0", "s1"):
            store.start_session(name=name).end()
    later = time.time_ns() + 2 * DAY_NS
    with memseg.open(src, "a") as store:
        for dry_run in (True, False):
            with pytest.raises(memseg.CorruptError, match="kept_commit"):
                store.sweep(1, archive_to=dest, max_archive_bytes=1 << 20, dry_run=dry_run,
                            now_ns=later)
        assert [i.state for i in store.sessions()] == ["ended", "ended"]
    with memseg.open(dest) as archive:
        assert [i.name for i in archive.sessions()] == ["a"]  # nothing exported into it
        assert archive.located.unverified


def test_an_export_that_meets_damage_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    """A damaged source session made the export fail after it had appended the copies
    before it to the destination (uncommitted, but there), and created a missing one.
    A destination that was there before, even one holding only its header, stays."""
    src, dest, new = tmp_path / "src.mseg", tmp_path / "dest.mseg", tmp_path / "new.mseg"
    bare = tmp_path / "bare.mseg"
    memseg.open(bare, "a").close()
    bare_before = bare.read_bytes()
    with memseg.open(src, "a") as store:
        for name in ("s0", "s1", "s2"):
            record_session(store, name, actions=20)
    with memseg.open(dest, "a") as store:
        store.start_session(name="other").end()
    with memseg.open(src) as store:
        last_block = int(store.session("s2").actions.refs["offset"][-1])
    data = bytearray(src.read_bytes())
    data[last_block + 32 + 100] ^= 0xFF
    src.write_bytes(bytes(data))
    before = dest.read_bytes()
    with memseg.open(src) as store:
        for target in (dest, new, bare):
            with pytest.raises(memseg.CorruptError):
                store.export(["s0", "s1", "s2"], target)
    assert dest.read_bytes() == before and not new.exists()
    assert bare.read_bytes() == bare_before


def test_a_sweep_that_meets_damage_leaves_no_archive_file_behind(tmp_path: Path) -> None:
    src, archive = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    with memseg.open(src, "a") as store:
        record_session(store, "old", actions=20)
    with memseg.open(src) as store:
        last_block = int(store.session("old").actions.refs["offset"][-1])
    data = bytearray(src.read_bytes())
    data[last_block + 32 + 100] ^= 0xFF
    src.write_bytes(bytes(data))
    with memseg.open(src, "a") as store:
        with pytest.raises(memseg.CorruptError):
            store.sweep(0, archive_to=archive, now_ns=time.time_ns() + DAY_NS)
        assert [i.state for i in store.sessions()] == ["ended"]
    assert not archive.exists()


def test_repeating_a_capped_sweep_whose_sessions_are_already_archived_needs_no_compaction(
        tmp_path: Path) -> None:
    """Nothing left to export and the archive within its cap: neither run compacts, so a
    damaged trailer in the archive (kept for salvage) must not make the real run refuse
    while the dry run succeeds."""
    src, archive = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    with memseg.open(src, "a") as store:
        record_session(store, "old", actions=5)
    later = time.time_ns() + 2 * DAY_NS
    with memseg.open(src, "a") as store:
        store.export(["old"], archive)  # a first sweep that died before archiving here
    with memseg.open(archive, "a") as store:
        store.start_session(name="newest").end()
    data = bytearray(archive.read_bytes())
    data[-40] ^= 1  # bit rot in the archive's newest trailer
    archive.write_bytes(bytes(data))
    with memseg.open(src, "a") as store:
        dry = store.sweep(1, archive_to=archive, max_archive_bytes=1 << 20, dry_run=True,
                          now_ns=later)
        real = store.sweep(1, archive_to=archive, max_archive_bytes=1 << 20, now_ns=later)
        assert [i.name for i in dry.archived] == [i.name for i in real.archived] == ["old"]
        assert dry.exported == real.exported == ()


@pytest.mark.parametrize("cap", [None, 1 << 30])
def test_a_sweep_dry_run_predicts_the_refusal_of_an_archive_with_a_damaged_commit(
        tmp_path: Path, cap: int | None) -> None:
    """The archive's newest commit is large (two fsyncs, no region CRC) and its TOC damaged:
    a writer refuses to open it (damaged_commit), but the dry run predicted an export."""
    src, archive = tmp_path / "src.mseg", tmp_path / "archive.mseg"
    with memseg.open(src, "a") as store:
        record_session(store, "old", actions=5)
    with memseg.open(archive, "a") as store:
        store.start_session(name="a1").end()
        rec = store.start_session(name="a2")
        noise = random.Random(1)
        for _ in range(7):  # incompressible, so the commit's region is over 1 MiB
            rec.record("k", noise.randbytes(200_000))
        rec.end()
        assert store.commit is not None
        toc_at = store.commit.toc_offset
    data = bytearray(archive.read_bytes())
    data[toc_at + 40] ^= 1
    archive.write_bytes(bytes(data))
    later = time.time_ns() + 2 * DAY_NS
    with memseg.open(src, "a") as store:
        for dry_run in (True, False):
            with pytest.raises(memseg.CorruptError, match="damaged_commit"):
                store.sweep(1, archive_to=archive, max_archive_bytes=cap, dry_run=dry_run,
                            now_ns=later)
        assert [i.state for i in store.sessions()] == ["ended"]

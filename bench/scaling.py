"""How costs move as stores grow: the flatness targets and memseg-only figures.

- open time against file size, for every store (same sessions, more events);
- memseg's open time as commits accumulate (same data, more commits);
- memseg's cost to read 100 events of a long session against a short one;
- memseg's drop against copying the bytes that survive it;
- peak memory of listing a large memseg file.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import memseg
from bench import peakmem
from bench.config import SHORT_SESSION, SLICE
from bench.recording import record_all
from bench.results import Figure
from bench.runner import Runner, WrongResultError
from bench.stores.base import SyncMode, UnavailableError, dir_size
from bench.stores.memseg_store import FILE_NAME
from bench.timing import best_of, timed
from bench.workload import Event, Session, iter_events

SUBJECT = "memseg"
# Windows read per timing of the slice comparison.
SLICE_WINDOWS = 20
# Mid-session commit cadences of the commits series (0: only at checkpoints and end).
COMMIT_CADENCES = (0, 100, 10)
COPY_CHUNK = 1 << 20


def truncated(sessions: list[Session], events: int) -> list[Session]:
    """The same sessions with only their first `events` events."""
    return [dataclasses.replace(s, events=s.events[:events]) for s in sessions]


def growth_phase(run: Runner) -> None:
    """Open-and-list time of every store at a tenth, ~a third and all of the data."""
    series: dict[str, list[tuple[float, float]]] = {}
    for name in run.names():
        if name in run.broken or name not in run.main:
            continue
        points: list[tuple[float, float]] = []
        try:
            for events in run.cfg.growth_events():
                if events == run.cfg.events:
                    root = run.main[name]
                else:
                    root = run.fresh_dir(name, f"growth-{events}")
                    writer = run.stores[name].writer(root, SyncMode.NONE)
                    record_all(writer, truncated(run.sessions, events))
                seconds = run.open_list_time(name, root, len(run.sessions))
                points.append((float(dir_size(root)), seconds))
                if root != run.main[name]:
                    shutil.rmtree(root)
        except Exception as exc:
            run.results.put("open_growth", name, Figure(None, run.failure("growth", name, exc)))
            continue
        series[name] = points
        ratio = _spread(points)
        run.results.put("open_growth", name, Figure(ratio))
        run.log(f"open growth      {name:10s} x{ratio:.2f} for x{points[-1][0] / points[0][0]:.1f} size")
    run.results.series["open_vs_size"] = series


def _spread(points: list[tuple[float, float]]) -> float:
    """Slowest time over fastest across a series: flat means close to 1, and a spike
    anywhere in the series counts, not only at its ends."""
    times = [seconds for _, seconds in points]
    return max(times) / min(times)


def _commits_in(root: Path) -> int:
    """How many commits the memseg file in `root` holds: its newest commit's number."""
    with memseg.open(str(root / FILE_NAME)) as store:
        return store.commit.seq if store.commit is not None else 0


def commits_phase(run: Runner) -> None:
    """memseg's open-and-list time for the same data committed ever more often."""
    if SUBJECT in run.broken:
        return
    events = run.cfg.commits_events()
    sessions = truncated(run.sessions, events)
    points: list[tuple[float, float]] = []
    try:
        for cadence in COMMIT_CADENCES:
            root = run.fresh_dir(SUBJECT, f"commits-{cadence}")
            record_all(run.stores[SUBJECT].writer(root, SyncMode.NONE), sessions, cadence)
            seconds = run.open_list_time(SUBJECT, root, len(sessions))
            commits = _commits_in(root)
            points.append((float(commits), seconds))
            run.log(f"open commits     {SUBJECT:10s} {commits:8d} commits {seconds * 1e3:.2f} ms")
            shutil.rmtree(root)
    except Exception as exc:
        run.results.extras["open_commits_ratio"] = Figure(None, run.failure("commits", SUBJECT, exc))
        return
    run.results.series["open_vs_commits"] = {SUBJECT: points}
    run.results.extras["open_commits_ratio"] = Figure(_spread(points))


def _long_session(sessions: list[Session], events: int) -> Session:
    """One session of `events` events taken from the workload in order, cycled if short."""
    base = sessions[0]
    source = itertools.islice(itertools.cycle(iter_events(sessions)), events)
    renumbered = [
        Event(e.kind, base.created_ns + (i + 1) * 1_000_000, e.payload, e.result)
        for i, e in enumerate(source)
    ]
    sid = uuid.UUID(int=events, version=4)
    return dataclasses.replace(base, id=sid, name=f"long-{events}", events=renumbered)


def _window_starts(events: int) -> list[int]:
    """SLICE_WINDOWS window starts spread over a session of `events` events."""
    last = max(0, events - SLICE)
    return [last * k // (SLICE_WINDOWS - 1) for k in range(SLICE_WINDOWS)]


def slice_phase(run: Runner) -> None:
    """memseg: 100 events from a long session against 100 from a SHORT_SESSION one."""
    if SUBJECT in run.broken:
        return
    from bench.stores.memseg_store import SliceReader

    try:
        timings: dict[str, float] = {}
        for label, events in (("long", run.cfg.long_events), ("short", SHORT_SESSION)):
            session = _long_session(run.sessions, events)
            root = run.fresh_dir(SUBJECT, f"slice-{label}")
            record_all(run.stores[SUBJECT].writer(root, SyncMode.NONE), [session])
            reader = SliceReader(root, str(session.id))
            starts = _window_starts(events)
            try:
                for lookup in (True, False):
                    read = partial(reader.read, starts, SLICE, lookup=lookup)
                    seconds, n = best_of(run.cfg.repeat, read, run.cfg.read_budget_s)
                    if n != SLICE * len(starts):
                        raise WrongResultError(f"read {n} events from {len(starts)} windows")
                    key = f"slice_{label}" + ("" if lookup else "_handle")
                    timings[key] = seconds / len(starts)
            finally:
                reader.close()
            shutil.rmtree(root)
            run.log(f"slice            {label:5s} {timings[f'slice_{label}'] * 1e3:.3f} ms/window")
    except Exception as exc:
        note = run.failure("slice", SUBJECT, exc)
        for key in ("slice_long", "slice_short"):
            run.results.extras[key] = Figure(None, note)
        return
    for key, seconds in timings.items():
        run.results.extras[key] = Figure(seconds)


def copy_phase(run: Runner) -> None:
    """Time to copy as many bytes as survive memseg's drop, with an fsync, from its file."""
    survivors = run.results.get("size_after_drop", SUBJECT)
    if survivors is None or SUBJECT not in run.main:
        note = run.results.figures.get("drop_half", {}).get(SUBJECT, Figure(None, "not run")).note
        run.results.extras["copy_survivors"] = Figure(None, note or "not run")
        return
    src = max(run.main[SUBJECT].iterdir(), key=lambda p: p.stat().st_size)
    dst = run.work / SUBJECT / "copy.bin"

    def copy() -> int:
        left = int(survivors)
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while left > 0:
                chunk = fin.read(min(COPY_CHUNK, left))
                if not chunk:
                    break
                fout.write(chunk)
                left -= len(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        return int(survivors) - left

    # As many tries as the drop it is compared with, so both are a best of the same count.
    tries: list[float] = []
    for _ in range(run.cfg.heavy_repeat):
        os.sync()  # as before each timed drop: no writeback left over from earlier work
        tries.append(timed(copy)[0])
    seconds = min(tries)
    dst.unlink()
    run.results.extras["copy_survivors"] = Figure(seconds)


def _cycled(sessions: list[Session], root: Path, target: int) -> Iterator[Session]:
    """The workload's sessions again and again, under new ids, until `root` holds `target` bytes."""
    for cycle in itertools.count():
        for s in sessions:
            if dir_size(root) >= target:
                return
            sid = uuid.UUID(int=(cycle << 64) | s.id.int >> 64, version=4)
            yield dataclasses.replace(s, id=sid, name=f"{s.name}-c{cycle}")


def bigfile_phase(run: Runner) -> None:
    """Peak memory of a child that opens and lists a memseg file of `mem_file_mb` MB."""
    if SUBJECT in run.broken:
        return
    root = run.fresh_dir(SUBJECT, "bigfile")
    target = run.cfg.mem_file_mb << 20
    try:
        writer = run.stores[SUBJECT].writer(root, SyncMode.NONE)
        record_all(writer, _cycled(run.sessions, root, target))
        size = dir_size(root)
        if size < target:
            raise UnavailableError(f"file reached only {size} bytes")
        rss = peakmem.measure(SUBJECT, root)
    except Exception as exc:
        note = run.failure("bigfile", SUBJECT, exc)
        run.results.extras["bigfile_peak_rss"] = Figure(None, note)
        return
    finally:
        shutil.rmtree(root, ignore_errors=True)
    run.results.extras["bigfile_size"] = Figure(float(size))
    run.results.extras["bigfile_sessions"] = Figure(float(rss.sessions))
    run.results.extras["bigfile_baseline_rss"] = Figure(float(rss.baseline))
    run.results.extras["bigfile_peak_rss"] = Figure(float(rss.peak))
    run.log(f"bigfile          {size / 1e6:.0f} MB, peak RSS {rss.peak / 1e6:.1f} MB")

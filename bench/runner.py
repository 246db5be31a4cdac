"""Runs the operations of the comparison table on every store.

Stores are interleaved inside each repetition, so a burst of load on the
shared machine hits all of them rather than one. Every operation is checked
for the right answer (session count, events loaded, events counted); a
store that raises or answers wrongly gets a figure with the reason instead
of a value, and the run goes on.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import peakmem
from bench.config import Config
from bench.recording import flush_cadence, record_all
from bench.results import Figure, Results
from bench.stores import load_store
from bench.stores.base import Store, SyncMode, UnavailableError, dir_size
from bench.timing import best_of, timed
from bench.workload import Session

RECORD_OPS = (
    ("record_nosync", SyncMode.NONE),
    ("record_fsync", SyncMode.COMMIT),
    ("record_flush100", SyncMode.EVERY_100),
)
# Sessions whose load time is averaged.
LOAD_SAMPLES = 5


class WrongResultError(Exception):
    """A store answered, but not with what was recorded."""


class Runner:
    """Holds the workload, the stores and the results while the phases run."""

    def __init__(self, cfg: Config, sessions: list[Session], workdir: Path) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.work = workdir
        self.results = Results(params=cfg.as_params())
        self.stores: dict[str, Store] = {}
        self.broken: dict[str, str] = {}  # store -> why it cannot run at all
        self.main: dict[str, Path] = {}  # store -> the no-fsync store kept for reading
        self._started = time.perf_counter()
        for name in cfg.stores:
            try:
                self.stores[name] = load_store(name)
            except Exception as exc:
                self.broken[name] = self.failure("load", name, exc)

    # -- bookkeeping -------------------------------------------------------

    def log(self, message: str) -> None:
        """Progress on stderr, with the time since the run started."""
        print(f"[{time.perf_counter() - self._started:7.1f}s] {message}", file=sys.stderr)

    def failure(self, op: str, store: str, exc: BaseException) -> str:
        if isinstance(exc, UnavailableError):
            self.log(f"{op} {store}: not available: {exc}")
            return f"not available: {exc}"
        tb = "".join(traceback.format_exception(exc))
        self.results.failures.append(f"{store} / {op}:\n{tb}")
        self.log(f"{op} {store} FAILED: {type(exc).__name__}: {exc}")
        if isinstance(exc, WrongResultError):
            return f"wrong result: {exc}"
        return f"failed: {type(exc).__name__}: {exc}"

    def attempt(self, op: str, store: str, fn: Callable[[], float]) -> float | None:
        """Run `fn` for `op` on `store`, file its value or its failure, return the value."""
        if store in self.broken:
            self.results.put(op, store, Figure(None, self.broken[store]))
            return None
        try:
            value = fn()
        except Exception as exc:
            self.results.put(op, store, Figure(None, self.failure(op, store, exc)))
            return None
        self.results.put(op, store, Figure(value))
        return value

    def fresh_dir(self, *parts: str) -> Path:
        """An empty directory under the work directory."""
        path = self.work.joinpath(*parts)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def names(self) -> list[str]:
        """Stores in report order."""
        return list(self.cfg.stores)

    # -- recording ---------------------------------------------------------

    def record_phase(self) -> None:
        """Record the workload in each sync mode; keep the no-fsync stores as the main ones."""
        for op, mode in RECORD_OPS:
            sessions = self.sessions
            if mode is SyncMode.EVERY_100:
                sessions = sessions[: self.cfg.flush_workload()]
            total = sum(len(s.events) for s in sessions)
            best: dict[str, float] = {}
            errors: dict[str, str] = {}
            repeat = self.cfg.heavy_repeat
            if mode is SyncMode.EVERY_100:
                repeat = max(repeat, self.cfg.flush_repeat)
            for rep in range(repeat):
                # Odd repetitions go in reverse order, so no store always records
                # right after the same neighbour.
                order = list(self.stores.items())
                for name, store in order[::-1] if rep % 2 else order:
                    if name in errors or name in self.broken:
                        continue
                    root = self.fresh_dir(name, f"{op}-{rep}")
                    # The previous run's dirty pages are written back first, so no
                    # store's timing includes another's writeback.
                    os.sync()
                    try:
                        seconds, n = timed(partial(self._record, store, root, mode, sessions))
                        if n != total:
                            raise WrongResultError(f"recorded {n} of {total} events")
                    except Exception as exc:
                        errors[name] = self.failure(op, name, exc)
                        shutil.rmtree(root, ignore_errors=True)
                        continue
                    best[name] = min(best.get(name, seconds), seconds)
                    if mode is SyncMode.NONE and name not in self.main:
                        self.main[name] = root
                    else:
                        shutil.rmtree(root)
            for name in self.names():
                # A repetition that failed fails the figure, whatever the others did.
                if name in best and name not in errors:
                    self.results.put(op, name, Figure(total / best[name]))
                    self.log(f"{op:16s} {name:10s} {total / best[name]:12,.0f} events/s")
                else:
                    note = errors.get(name) or self.broken.get(name, "not run")
                    self.results.put(op, name, Figure(None, note))
        for name in self.names():
            self.attempt("size", name, partial(self._size, name))

    def _record(self, store: Store, root: Path, mode: SyncMode, sessions: list[Session]) -> int:
        # Creating the store is part of what is timed.
        return record_all(store.writer(root, mode), sessions, flush_cadence(mode))

    def _size(self, name: str) -> float:
        return float(dir_size(self._main(name)))

    def _main(self, name: str) -> Path:
        root = self.main.get(name)
        if root is None:
            raise UnavailableError("no store: recording it failed")
        return root

    # -- reading -----------------------------------------------------------

    def read_phase(self) -> None:
        """Open and list, load sessions, count kinds, and the listing's peak memory."""
        for name in self.names():
            for op, fn in (
                ("open_list", self._open_list),
                ("load_session", self._load_session),
                ("kind_counts", self._kind_counts),
                ("list_peak_rss", self._peak_rss),
            ):
                value = self.attempt(op, name, partial(fn, name))
                if value is not None:
                    self.log(f"{op:16s} {name:10s} {value:12.6g}")

    def open_list_time(self, name: str, root: Path, sessions: int) -> float:
        """Best time to open the store in `root`, list its sessions and close it."""
        store = self.stores[name]

        def run() -> int:
            reader = store.reader(root)
            listed = reader.sessions()
            reader.close()
            return len(listed)

        seconds, n = best_of(self.cfg.repeat, run, self.cfg.read_budget_s)
        if n != sessions:
            raise WrongResultError(f"listed {n} of {sessions} sessions")
        return seconds

    def _open_list(self, name: str) -> float:
        root = self._main(name)
        reader = self.stores[name].reader(root)
        listed = reader.sessions()
        reader.close()
        by_key = {str(s.id): s for s in self.sessions}
        for row in listed:
            session = by_key.get(row.key)
            if session is None:
                raise WrongResultError(f"listed an unknown session {row.key}")
            if row.events != len(session.events) or row.name != session.name:
                raise WrongResultError(f"listed {row.name} with {row.events} events")
            if row.meta.get("model") != session.meta["model"]:
                raise WrongResultError(f"listed {row.name} with meta {row.meta}")
        return self.open_list_time(name, root, len(self.sessions))

    def _load_session(self, name: str) -> float:
        step = max(1, len(self.sessions) // LOAD_SAMPLES)
        picks = self.sessions[::step][:LOAD_SAMPLES]
        reader = self.stores[name].reader(self._main(name))
        try:

            def run() -> list[int]:
                return [reader.load(str(s.id)) for s in picks]

            seconds, loaded = best_of(self.cfg.repeat, run, self.cfg.read_budget_s)
        finally:
            reader.close()
        if loaded != [len(s.events) for s in picks]:
            raise WrongResultError(f"loaded {loaded} events")
        return seconds / len(picks)

    def _kind_counts(self, name: str) -> float:
        reader = self.stores[name].reader(self._main(name))
        try:
            seconds, counts = best_of(self.cfg.repeat, reader.kind_counts, self.cfg.read_budget_s)
        finally:
            reader.close()
        expected: dict[str, int] = {}
        for s in self.sessions:
            for e in s.events:
                expected[e.kind] = expected.get(e.kind, 0) + 1
        if counts != expected:
            raise WrongResultError(f"kind counts {counts} expected {expected}")
        return seconds

    def _peak_rss(self, name: str) -> float:
        rss = peakmem.measure(name, self._main(name))
        if rss.sessions != len(self.sessions):
            raise WrongResultError(f"child listed {rss.sessions} sessions")
        return float(rss.peak)

    # -- dropping ----------------------------------------------------------

    def drop_keys(self) -> list[str]:
        """Every other session: the half that is dropped."""
        return [str(s.id) for s in self.sessions[1::2]]

    def drop_phase(self) -> None:
        """Drop half the sessions from a copy of each main store, timed; then check the rest."""
        keys = self.drop_keys()
        best: dict[str, float] = {}
        after: dict[str, float] = {}
        errors: dict[str, str] = {}
        for rep in range(self.cfg.heavy_repeat):
            for name, store in self.stores.items():
                if name in errors or name in self.broken or name not in self.main:
                    continue
                copy = self.work / name / f"drop-{rep}"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(self.main[name], copy)
                # Write the fresh copy back first: otherwise the timed drop competes
                # with the kernel flushing the copy's dirty pages (or, for stores
                # that delete files, gets to discard them unwritten).
                os.sync()
                before = dir_size(copy)
                try:
                    seconds, _ = timed(partial(store.drop, copy, keys))
                    self._check_survivors(store, copy, keys)
                    if dir_size(copy) >= before:
                        raise WrongResultError(f"the drop gave no space back ({before} bytes before)")
                except Exception as exc:
                    errors[name] = self.failure("drop_half", name, exc)
                    continue
                finally:
                    size = dir_size(copy)
                    shutil.rmtree(copy)
                best[name] = min(best.get(name, seconds), seconds)
                after[name] = float(size)
        for name in self.names():
            if name in best and name not in errors:
                self.results.put("drop_half", name, Figure(best[name]))
                self.results.put("size_after_drop", name, Figure(after[name]))
                self.log(f"drop_half        {name:10s} {best[name]:.3f}s")
            else:
                note = errors.get(name) or self.broken.get(name) or "no store: recording it failed"
                self.results.put("drop_half", name, Figure(None, note))
                self.results.put("size_after_drop", name, Figure(None, note))

    def _check_survivors(self, store: Store, root: Path, dropped: list[str]) -> None:
        """The sessions left are exactly the ones not dropped, and one of them reads whole."""
        gone = set(dropped)
        kept = [s for s in self.sessions if str(s.id) not in gone]
        reader = store.reader(root)
        try:
            listed = sorted(row.key for row in reader.sessions())
            loaded = reader.load(str(kept[0].id)) if kept else 0
        finally:
            reader.close()
        if listed != sorted(str(s.id) for s in kept):
            raise WrongResultError(f"{len(listed)} sessions left after the drop, not the "
                                   f"{len(kept)} that were kept")
        if kept and loaded != len(kept[0].events):
            raise WrongResultError(f"a kept session read {loaded} of {len(kept[0].events)} events")

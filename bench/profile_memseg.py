"""cProfile of memseg's hot paths on the benchmark workload, for the library's owner.

`python -m bench.profile_memseg [--sessions N --events N --top N]` records the
workload through the same adapter the benchmark uses, then profiles each
operation separately and prints the top entries by internal time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.recording import FLUSH_EVERY, record_all
from bench.stores.base import SyncMode
from bench.stores.memseg_store import MemsegStore
from bench.timing import freeze_workload
from bench.workload import Session, make_workload


def profile(label: str, fn: Callable[[], object], top: int) -> None:
    """Run `fn` under cProfile and print its `top` entries by internal time."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(f"=== {label} ===")
    # Drop the header lines before the table; keep the total time line.
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))
    print()


def _record(store: MemsegStore, root: Path, sessions: list[Session], sync: SyncMode,
            flush_every: int) -> int:
    return record_all(store.writer(root, sync), sessions, flush_every)


def _read_all(store: MemsegStore, root: Path, keys: list[str], op: str) -> None:
    reader = store.reader(root)
    if op == "list":
        for _ in range(50):
            reader.sessions()
    elif op == "load":
        for key in keys:
            reader.load(key)
    else:
        for _ in range(5):
            reader.kind_counts()
    reader.close()


def _drop_half(store: MemsegStore, root: Path, keys: list[str]) -> None:
    store.drop(root, keys[1::2])


def main(argv: list[str] | None = None) -> int:
    """Profile recording (three modes), listing, loading, kind counts and dropping half."""
    p = argparse.ArgumentParser(prog="python -m bench.profile_memseg", description=__doc__)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    sessions = make_workload(1, args.sessions, args.events)
    freeze_workload()  # as the benchmark does: collections must not walk the workload
    store = MemsegStore()
    work = Path(tempfile.mkdtemp(prefix="memseg-profile-"))
    try:
        for label, sync, every in (
            ("record, no fsync", SyncMode.NONE, 0),
            ("record, fsync at each commit", SyncMode.COMMIT, 0),
            (f"record, flush every {FLUSH_EVERY}", SyncMode.EVERY_100, FLUSH_EVERY),
        ):
            root = work / sync.value
            root.mkdir()
            profile(label, partial(_record, store, root, sessions, sync, every), args.top)
        root = work / SyncMode.NONE.value
        keys = [str(s.id) for s in sessions]
        for op in ("list", "load", "kinds"):
            profile(op, partial(_read_all, store, root, keys, op), args.top)
        profile("drop half (archive + compact)", partial(_drop_half, store, root, keys), args.top)
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

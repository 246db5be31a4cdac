"""Power loss while several threads flush through one store (group commit).

Each thread records into its own session and notes every flush that returned.
The interleaving, and so which flushes share a commit, varies from run to run;
what may not vary: after a crash at any point, every session holds at least
the actions its thread saw acknowledged, exactly as recorded, and no more than
it recorded.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from dataclasses import dataclass, field

import memseg
from fuzz.corpus import records
from memseg.format import Kind
from tests.crashmodel import PATH, record_figures
from tests.faultfs import Crash, SimFS, damage_variants

LONG = bool(os.environ.get("MEMSEG_LONG"))
THREADS = 3
FLUSHES = 4
# Long enough for other threads' flushes to queue behind a commit's fsync.
SYNC_DELAY = 0.002


def payload(thread: int, seq: int) -> dict[str, int]:
    return {"thread": thread, "seq": seq}


@dataclass
class Progress:
    """Per session: actions acknowledged by a returned flush, and actions recorded."""

    acked: dict[uuid.UUID, int] = field(default_factory=dict)
    recorded: dict[uuid.UUID, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_threads(fs: SimFS, progress: Progress) -> None:
    """Open a store and let THREADS threads record and flush into it until done or crashed."""
    try:
        store = memseg.open(PATH, "a", fs=fs)
    except Crash:
        return
    recorders = []
    try:
        for i in range(THREADS):
            recorders.append(store.start_session(name=f"t{i}", session_id=uuid.UUID(int=i + 1)))
    except Crash:
        return

    def work(i: int) -> None:
        rec = recorders[i]
        try:
            for _ in range(FLUSHES):
                for _ in range(3):
                    seq = rec.action_count
                    rec.record("step", payload(i, seq), ts_ns=seq)
                    with progress.lock:
                        progress.recorded[rec.id] = seq + 1
                rec.flush()
                with progress.lock:
                    progress.acked[rec.id] = rec.action_count
        except (Crash, memseg.MemsegError):
            return  # the machine is down (or the store refused after a failure)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with contextlib.suppress(Crash):
        store.close()


def check(image: SimFS, progress: Progress) -> int:
    """Every acknowledged action is there and intact, nothing beyond what was recorded."""
    if not image.exists(PATH):
        assert not any(progress.acked.values())
        return 0
    try:
        reader = memseg.open(PATH, "r", fs=image)
    except (memseg.NotMemsegError, memseg.CorruptError) as exc:
        assert isinstance(exc, memseg.NotMemsegError) or exc.reason == "short_header"
        assert not any(progress.acked.values())
        return 0
    with reader:
        found = {s.id: s for s in reader.sessions()}
        for i in range(THREADS):
            sid = uuid.UUID(int=i + 1)
            acked = progress.acked.get(sid, 0)
            if sid not in found:
                assert acked == 0, f"session {i} lost with {acked} actions acknowledged"
                continue
            actions = reader.session(sid).actions
            assert acked <= len(actions) <= progress.recorded.get(sid, 0)
            assert [a.value() for a in actions] == [payload(i, n) for n in range(len(actions))]
    with memseg.open(PATH, "a", fs=image) as writer:
        writer.start_session(session_id=uuid.UUID(int=99)).end("ok")
    return 1


def trailers(fs: SimFS) -> int:
    return sum(1 for r in records(fs.read_file(PATH)) if r.kind == Kind.TRAILER)


def test_group_commit_from_threads_survives_a_crash_at_every_point() -> None:
    dry = SimFS(sync_delay=SYNC_DELAY)
    run_threads(dry, Progress())
    points = dry.ops + 8  # interleavings differ; a few runs past the dry run's count finish
    checked = crash_runs = 0
    for _ in range(3 if LONG else 1):
        for k in range(points):
            fs = SimFS(crash_at=k, sync_delay=SYNC_DELAY)
            progress = Progress()
            run_threads(fs, progress)
            crash_runs += 1
            for damage in damage_variants(fs, seeds=2 if LONG else 1):
                checked += check(fs.crash_image(damage), progress)
    assert checked > points
    # Fewer commits than flushes: some flushes did share one, as the test intends.
    assert trailers(dry) < THREADS * FLUSHES
    record_figures("crash_threads", {"crash_runs": crash_runs, "images_checked": checked,
                                     "commits_in_dry_run": trailers(dry),
                                     "threads": THREADS, "flushes_per_thread": FLUSHES})

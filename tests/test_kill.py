"""kill -9 a real writer process at random moments: every flush it acknowledged survives.

The writer records and flushes in a loop and, after each flush (or checkpoint,
or end) returns, reports it to the parent over a pipe. The parent kills it
with SIGKILL at a random moment, then checks the file holds every reported
action, checkpoint and end, and runs the next writer on the same file (which
resumes the session the last one left active, cutting its torn tail).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid
from pathlib import Path

import numpy as np

import memseg
from memseg.forensics import verify
from tests.crashmodel import record_figures

LONG = bool(os.environ.get("MEMSEG_LONG"))
RUNS = 200 if LONG else 20


def payload(seq: int) -> str:
    """The payload of action ``seq`` of any session: checkable without the writer's help."""
    return f"{seq}:" + "x" * (seq * 7 % 61)


def _report(fd: int, line: str) -> None:
    # One write below PIPE_BUF is atomic, so a kill never leaves half a line.
    os.write(fd, (line + "\n").encode())


def writer(path: str, seed: int, fd: int, sync: str) -> None:
    """Record and flush forever (until killed), reporting each acknowledged durable point."""
    rng = random.Random(seed)
    store = memseg.open(path, "a", sync="commit" if sync == "commit" else "none", lock_timeout=10)
    active = [s for s in store.sessions() if s.state == "active"]
    rec = store.resume(active[0].id) if active else store.start_session(name=f"run{seed}")
    _report(fd, f"ready {rec.id}")
    while True:
        for _ in range(rng.randint(1, 40)):
            seq = rec.action_count
            rec.record("act", payload(seq), result=seq, ts_ns=seq)
        roll = rng.random()
        if roll < 0.1:
            cid = rec.checkpoint({"after": rec.action_count})
            _report(fd, f"ckpt {rec.id} {rec.action_count} {cid}")
        elif roll < 0.15:
            count = rec.action_count
            rec.end("ok")
            _report(fd, f"end {rec.id} {count}")
            rec = store.start_session(name=f"run{seed}.{rng.randrange(10**6)}")
        else:
            rec.flush()
            _report(fd, f"flush {rec.id} {rec.action_count}")


def _child(path: str, seed: int, fd: int, sync: str) -> None:
    try:
        writer(path, seed, fd, sync)
    finally:
        os._exit(1)  # never run the parent's pytest machinery in the child


class Acked:
    """What the writers acknowledged, per session."""

    def __init__(self) -> None:
        self.actions: dict[uuid.UUID, int] = {}
        self.checkpoints: dict[uuid.UUID, set[int]] = {}
        self.ended: set[uuid.UUID] = set()
        self.lines = 0
        # Sessions acknowledged since the last check (checking all after every run is quadratic).
        self.touched: set[uuid.UUID] = set()

    def take(self, text: str) -> None:
        for line in text.splitlines():
            word, *rest = line.split()
            self.lines += 1
            if word == "ready":
                continue
            sid, count = uuid.UUID(rest[0]), int(rest[1])
            self.touched.add(sid)
            self.actions[sid] = max(self.actions.get(sid, 0), count)
            if word == "ckpt":
                self.checkpoints.setdefault(sid, set()).add(int(rest[2]))
            elif word == "end":
                self.ended.add(sid)


def check_file(path: Path, acked: Acked, only: set[uuid.UUID] | None = None) -> int:
    """Every acknowledged action, checkpoint and end is in the file (of the sessions in
    ``only``, if given); returns the actions checked."""
    checked = 0
    with memseg.open(path, "r") as store:
        for sid, count in acked.actions.items():
            if only is not None and sid not in only:
                continue
            session = store.session(sid)
            assert session.info.action_count >= count, (sid, session.info.action_count, count)
            actions = session.actions
            # Every action's timestamp (a column, read in bulk) is its seq ...
            assert np.array_equal(actions.ts_ns[:count], np.arange(count)), sid
            # ... and the first, the last acknowledged and a random one read back whole.
            for seq in {0, count - 1, random.randrange(count)} if count else ():
                action = actions[seq]
                assert (action.value(), action.result_value(), action.ts_ns) == (payload(seq), seq, seq)
            checked += count
            got = {c.id for c in session.checkpoints}
            assert acked.checkpoints.get(sid, set()) <= got
            if sid in acked.ended:
                assert session.info.state == "ended" and session.info.status == "ok"
    return checked


def test_kill_9_at_random_moments_loses_no_acknowledged_flush(tmp_path: Path) -> None:
    path = tmp_path / "killed.mseg"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(9)
    acked = Acked()
    torn = 0
    for run in range(RUNS):
        read_fd, write_fd = os.pipe()
        sync = "commit" if run % 2 == 0 else "none"
        proc = ctx.Process(target=_child, args=(str(path), run, write_fd, sync))
        proc.start()
        os.close(write_fd)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        chunks = []
        while chunk := os.read(read_fd, 1 << 16):
            chunks.append(chunk)
        os.close(read_fd)
        acked.take(b"".join(chunks).decode())
        if path.exists():
            with memseg.open(path, "r") as store:
                torn += store.tail_bytes > 0
            check_file(path, acked, acked.touched)
        acked.touched = set()
    with memseg.open(path, "a") as store:  # the lock of the last killed writer is free
        pass
    report = verify(path)
    assert report.ok, report.problems
    checked = check_file(path, acked)
    assert acked.lines > RUNS // 2, "the writers were killed before doing anything"
    record_figures("kill9", {"runs": RUNS, "acknowledgements": acked.lines,
                             "sessions": len(acked.actions), "acknowledged_actions": checked,
                             "runs_leaving_torn_tail": torn})

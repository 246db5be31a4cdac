"""One writer and several reader processes on one file, for a few seconds.

Readers refresh in a loop and must always see a valid snapshot: sessions never
vanish, counts never go backwards, every listed action reads back. A second
writer gets LockedError, also after the writer opened and closed a reader of
the same file in its own process; once the writer is killed the lock is free.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

import memseg
from tests.crashmodel import record_figures

LONG = bool(os.environ.get("MEMSEG_LONG"))
SECONDS = 20.0 if LONG else 2.5
READERS = 2


def payload(seq: int) -> dict[str, object]:
    return {"seq": seq, "pad": "p" * (seq % 29)}


def writer(path: str, conn: Connection) -> None:
    """Record into two sessions until killed; tell the parent when the lock is taken and
    when a second, read-only handle of the same file has been opened and closed."""
    store = memseg.open(path, "a")
    recs = [store.start_session(name=f"w{i}", session_id=uuid.UUID(int=i + 1)) for i in range(2)]
    for rec in recs:
        rec.flush()
    conn.send("locked")
    flushes = 0
    while True:
        for rec in recs:
            for _ in range(5):
                seq = rec.action_count
                rec.record("act", payload(seq), ts_ns=seq)
            rec.flush()
            flushes += 1
        if flushes == 20:
            with memseg.open(path, "r") as again:
                again.sessions()
            conn.send("reader-closed")
        if flushes % 50 == 0:
            # A third session now and then, so readers see the session list grow.
            extra = store.start_session(session_id=uuid.UUID(int=1000 + flushes))
            extra.record("one", payload(0), ts_ns=0)
            extra.end("ok")


def reader(path: str, seconds: float, conn: Connection) -> None:
    """Refresh in a loop, checking every snapshot; send back (refreshes, error or None)."""
    deadline = time.monotonic() + seconds
    seen: dict[uuid.UUID, int] = {}
    refreshes = 0
    try:
        with memseg.open(path, "r") as store:
            while time.monotonic() < deadline:
                store.refresh()
                refreshes += 1
                infos = store.sessions()
                ids = {i.id for i in infos}
                assert set(seen) <= ids, "a session vanished"
                for info in infos:
                    assert info.action_count >= seen.get(info.id, 0), "a count went backwards"
                    seen[info.id] = info.action_count
                    actions = store.session(info.id).actions
                    assert len(actions) == info.action_count
                    for seq in {0, len(actions) // 2, len(actions) - 1} if len(actions) else ():
                        assert actions[seq].value() == payload(seq)
        conn.send((refreshes, sum(seen.values()), None))
    except BaseException as exc:  # report anything to the parent, which fails the test
        conn.send((refreshes, sum(seen.values()), f"{type(exc).__name__}: {exc}"))


def _run(target: object, *args: object) -> None:
    try:
        target(*args)  # type: ignore[operator]
    finally:
        os._exit(0)


def test_readers_see_valid_snapshots_while_a_writer_appends(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.mseg")
    ctx = multiprocessing.get_context("fork")
    w_recv, w_send = ctx.Pipe(duplex=False)
    wproc = ctx.Process(target=_run, args=(writer, path, w_send))
    wproc.start()
    try:
        assert w_recv.poll(30) and w_recv.recv() == "locked"
        with pytest.raises(memseg.LockedError) as info:
            memseg.open(path, "a")
        assert info.value.reason == "locked"

        pipes = [ctx.Pipe(duplex=False) for _ in range(READERS)]
        readers = [ctx.Process(target=_run, args=(reader, path, SECONDS, send))
                   for _, send in pipes]
        for proc in readers:
            proc.start()
        # Closing a second handle in the writer's process must not drop its lock.
        assert w_recv.poll(30) and w_recv.recv() == "reader-closed"
        with pytest.raises(memseg.LockedError):
            memseg.open(path, "a")
        results = []
        for (recv, _), proc in zip(pipes, readers, strict=True):
            assert recv.poll(SECONDS + 60)
            results.append(recv.recv())
            proc.join()
        for refreshes, _, error in results:
            assert error is None, error
            assert refreshes > 0
        with pytest.raises(memseg.LockedError):
            memseg.open(path, "a")
    finally:
        os.kill(wproc.pid or 0, signal.SIGKILL)
        wproc.join()
    # The killed holder's lock is free again.
    with memseg.open(path, "a", lock_timeout=5) as store:
        counts = [s.action_count for s in store.sessions()]
    assert len(counts) >= 2
    record_figures("concurrency", {
        "seconds": SECONDS, "readers": READERS,
        "refreshes": sum(r[0] for r in results),
        "actions_at_end": sum(counts),
    })


def test_second_writer_in_the_same_process_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "twice.mseg"
    with memseg.open(path, "a") as first:
        first.start_session(name="x").flush()
        with pytest.raises(memseg.LockedError) as info:
            memseg.open(path, "a")
        assert info.value.reason == "locked"
        with memseg.open(path, "r") as reader:
            assert len(reader.sessions()) == 1
        # Mapping through the writer (sessions()) and closing the reader kept the lock.
        first.sessions()
        with pytest.raises(memseg.LockedError):
            memseg.open(path, "a")
    with memseg.open(path, "a") as again:
        assert len(again.sessions()) == 1

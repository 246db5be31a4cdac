"""The recording loop shared by every store, so that its overhead is identical for all."""

from __future__ import annotations

from collections.abc import Iterable

from bench.stores.base import SyncMode, Writer
from bench.workload import CHECKPOINT_EVERY, Session, checkpoint_state

# The durable-flush cadence for SyncMode.EVERY_100.
FLUSH_EVERY = 100


def flush_cadence(sync: SyncMode) -> int:
    """Events between mid-session flushes in `sync` mode (0: only at session end)."""
    return FLUSH_EVERY if sync is SyncMode.EVERY_100 else 0


def record_all(writer: Writer, sessions: Iterable[Session], flush_every: int = 0) -> int:
    """Record every session through `writer`, then close it; returns the events recorded.

    A checkpoint follows every CHECKPOINT_EVERY-th event; with `flush_every`
    set, a flush follows every `flush_every`-th event as well.
    """
    total = 0
    for session in sessions:
        writer.start_session(session)
        n = 0
        for n, event in enumerate(session.events, 1):
            writer.record(n - 1, event)
            if n % CHECKPOINT_EVERY == 0:
                writer.checkpoint(n - 1, checkpoint_state(session, n))
            if flush_every and n % flush_every == 0:
                writer.flush()
        writer.end_session(session, n)
        total += n
    writer.close()
    return total

"""What every store under test provides: a writer, a reader, and a way to drop sessions.

The benchmark drives all stores through these three narrow interfaces so
that the loop around them (and its overhead) is identical; each adapter is
written the way that store's own users would write it.

A store lives in a directory of its own, so its size on disk is the sum of
every file it created there (WAL, lock and index files included).
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.workload import Event, Session


def sync_directory(root: Path) -> None:
    """Make a directory's entries durable: a drop that deletes or renames files is
    durable only once its directory is synced, as memseg's compaction syncs its own."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UnavailableError(Exception):
    """The store has no way to perform this operation (reported, not a failure)."""


class SyncMode(enum.Enum):
    """When the writer makes data durable."""

    NONE = "none"  # commit at session end, never fsync
    COMMIT = "commit"  # commit at session end, fsync at each commit
    EVERY_100 = "every100"  # commit and fsync every 100 events as well

    @property
    def fsync(self) -> bool:
        """Whether commits in this mode call fsync."""
        return self is not SyncMode.NONE


@dataclass(frozen=True, slots=True)
class Listed:
    """One row of a session listing: what every store can answer without reading payloads.

    `meta` is the decoded metadata (model, repository, branch): a listing is
    what a session picker shows, and memseg's listing always decodes it.
    """

    key: str
    name: str
    events: int
    status: str
    meta: dict[str, object]


class Writer(ABC):
    """Records sessions one event at a time, as a live recorder receives them."""

    @abstractmethod
    def start_session(self, session: Session) -> None:
        """Begin recording `session` (its events follow)."""

    @abstractmethod
    def record(self, seq: int, event: Event) -> None:
        """Append one event of the current session."""

    @abstractmethod
    def checkpoint(self, seq: int, state: dict[str, object]) -> None:
        """Save a checkpoint of the current session after event `seq`."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything recorded so far durable (a commit, with fsync if the mode says so)."""

    @abstractmethod
    def end_session(self, session: Session, events: int) -> None:
        """Seal the current session and commit."""

    @abstractmethod
    def close(self) -> None:
        """Finish the store; it must be readable afterwards."""


class Reader(ABC):
    """Reads a closed store."""

    @abstractmethod
    def sessions(self) -> list[Listed]:
        """Every session with its name, event count and status."""

    @abstractmethod
    def load(self, key: str) -> int:
        """Load one session's events with their payloads; returns how many."""

    @abstractmethod
    def kind_counts(self) -> dict[str, int]:
        """Count events per kind over the whole store."""

    @abstractmethod
    def close(self) -> None:
        """Release the store."""


class Store(ABC):
    """One storage technology under test."""

    name: str

    @abstractmethod
    def writer(self, root: Path, sync: SyncMode) -> Writer:
        """A writer creating a new store in the empty directory `root`."""

    @abstractmethod
    def reader(self, root: Path) -> Reader:
        """A reader of the store in `root`."""

    @abstractmethod
    def drop(self, root: Path, keys: list[str]) -> None:
        """Delete the sessions `keys` and give their space back to the file system."""


def dir_size(root: Path) -> int:
    """Bytes of all regular files under `root` (apparent size, as `ls` shows)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            total += os.stat(os.path.join(dirpath, f)).st_size
    return total


def event_line(seq: int, event: Event) -> bytes:
    """One event as a JSON object, for the stores that keep JSON lines.

    The payload is already JSON, so it is spliced in rather than decoded and
    re-encoded: the cheapest correct way, which favours these stores.
    """
    return b'{"type":"event","seq":%d,"ts_ns":%d,"kind":"%s","payload":%s,"result":%s}' % (
        seq,
        event.ts_ns,
        event.kind.encode(),
        event.payload,
        event.result if event.result is not None else b"null",
    )


def checkpoint_line(seq: int, state: dict[str, object]) -> bytes:
    """One checkpoint as a JSON object, for the stores that keep JSON lines."""
    return orjson.dumps({"type": "checkpoint", "seq": seq, "state": state})


def session_header(session: Session) -> dict[str, object]:
    """The session's identity and metadata as the JSON-based stores keep it."""
    return {
        "id": str(session.id),
        "name": session.name,
        "meta": session.meta,
        "created_ns": session.created_ns,
    }

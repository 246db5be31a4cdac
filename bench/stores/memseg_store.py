"""memseg, driven only through its public API (`import memseg`).

Nothing here works around the library: a call that fails or is slow shows
up in the report as it is. Payloads and results are passed as the JSON bytes
the generator made, the same bytes every peer stores.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import memseg
from bench.stores.base import Listed, Reader, Store, SyncMode, UnavailableError, Writer
from bench.workload import Event, Session

FILE_NAME = "agent.mseg"


class MemsegWriter(Writer):
    """One Recorder per session on a store opened for appending."""

    def __init__(self, root: Path, sync: SyncMode) -> None:
        self._stack = ExitStack()
        mode: Literal["commit", "none"] = "commit" if sync.fsync else "none"
        self._store = self._stack.enter_context(memseg.open(str(root / FILE_NAME), "a", sync=mode))
        self._rec: Any = None

    def start_session(self, session: Session) -> None:
        meta = dict(session.meta) | {"inputs": session.inputs}
        self._rec = self._store.start_session(name=session.name, meta=meta, session_id=session.id)

    def record(self, seq: int, event: Event) -> None:
        self._rec.record(event.kind, event.payload, result=event.result, ts_ns=event.ts_ns)

    def checkpoint(self, seq: int, state: dict[str, object]) -> None:
        # Committed with the session's next commit, as every peer writes its checkpoints
        # in the transaction that ends the session; checkpoint() alone would commit now.
        self._rec.checkpoint(state, flush=False)

    def flush(self) -> None:
        self._rec.flush()

    def end_session(self, session: Session, events: int) -> None:
        self._rec.end(status="ok")
        self._rec = None

    def close(self) -> None:
        self._stack.close()


class MemsegReader(Reader):
    """A read-only store."""

    def __init__(self, root: Path) -> None:
        self._stack = ExitStack()
        self._store = self._stack.enter_context(memseg.open(str(root / FILE_NAME)))

    def sessions(self) -> list[Listed]:
        return [
            Listed(str(i.id), i.name or "", i.action_count, str(i.state), i.meta)
            for i in self._store.sessions()
        ]

    def load(self, key: str) -> int:
        # Action objects are memseg's natural form, as row tuples are SQLite's: seq,
        # ts_ns, kind, payload and result are plain attributes, built eagerly.
        actions = self._store.session(uuid.UUID(key)).actions
        return len(actions[0 : len(actions)])

    def kind_counts(self) -> dict[str, int]:
        # memseg's own call for the whole store: it reads each session's snapshot.
        return self._store.kind_counts()

    def close(self) -> None:
        self._stack.close()


class MemsegStore(Store):
    """memseg: one append-only file."""

    name = "memseg"

    def writer(self, root: Path, sync: SyncMode) -> Writer:
        return MemsegWriter(root, sync)

    def reader(self, root: Path) -> Reader:
        return MemsegReader(root)

    def drop(self, root: Path, keys: list[str]) -> None:
        # Dropping is archive + compact; either may not have landed yet.
        path = str(root / FILE_NAME)
        compact = getattr(memseg, "compact", None)
        if compact is None:
            raise UnavailableError("memseg.compact is not available")
        with memseg.open(path, "a") as store:
            archive = getattr(store, "archive", None)
            if archive is None:
                raise UnavailableError("Store.archive is not available")
            archive([uuid.UUID(k) for k in keys])
        compact(path)



class SliceReader:
    """Reads windows of one session's actions, for the long-session comparison."""

    def __init__(self, root: Path, key: str) -> None:
        self._stack = ExitStack()
        self._store = self._stack.enter_context(memseg.open(str(root / FILE_NAME)))
        self._sid = uuid.UUID(key)
        self._session = self._store.session(self._sid)

    def read(self, starts: list[int], width: int, *, lookup: bool) -> int:
        """Read `width` actions at each of `starts`; returns how many were read.

        With `lookup`, the session is looked up again for every window, as a
        reader coming in for one window would; otherwise one handle serves all.
        """
        total = 0
        for start in starts:
            session = self._store.session(self._sid) if lookup else self._session
            window = session.actions[start : start + width]
            total += len([(a.seq, a.ts_ns, a.kind, a.payload, a.result) for a in window])
        return total

    def close(self) -> None:
        """Release the store."""
        self._stack.close()

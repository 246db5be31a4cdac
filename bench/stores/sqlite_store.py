"""SQLite peer: stdlib sqlite3 in WAL mode, one transaction per session.

Sessions, actions and checkpoints are three tables; payloads are BLOBs of
the JSON bytes (not TEXT, which would add a decode on every read). The
sessions row carries the event count, kept up to date at session end, so a
listing is a single small query, as a careful user would arrange it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from bench.stores.base import Listed, Reader, Store, SyncMode, Writer
from bench.workload import Event, Session

DB_NAME = "sessions.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    meta TEXT NOT NULL,
    inputs TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    ended_ns INTEGER,
    status TEXT NOT NULL,
    event_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS actions (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    result BLOB,
    PRIMARY KEY (session_id, seq)
);
-- A user who counts events per kind indexes the kind: GROUP BY then scans the
-- index, not every row with its payload (about ten times faster).
CREATE INDEX IF NOT EXISTS actions_kind ON actions(kind);
CREATE TABLE IF NOT EXISTS checkpoints (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
"""


def _connect(root: Path, sync: SyncMode) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun and committed explicitly.
    conn = sqlite3.connect(root / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # In WAL mode FULL syncs the WAL at every commit; NORMAL would not.
    conn.execute("PRAGMA synchronous=" + ("FULL" if sync.fsync else "OFF"))
    return conn


class SqliteWriter(Writer):
    """Inserts one row per event inside the session's transaction."""

    def __init__(self, root: Path, sync: SyncMode) -> None:
        self._conn = _connect(root, sync)
        self._conn.executescript(_SCHEMA)
        self._sid = ""

    def start_session(self, session: Session) -> None:
        self._sid = str(session.id)
        self._conn.execute("BEGIN")
        self._conn.execute(
            "INSERT INTO sessions (id, name, meta, inputs, created_ns, status)"
            " VALUES (?, ?, ?, ?, ?, 'running')",
            (
                self._sid,
                session.name,
                orjson.dumps(session.meta).decode(),
                orjson.dumps(session.inputs).decode(),
                session.created_ns,
            ),
        )

    def record(self, seq: int, event: Event) -> None:
        self._conn.execute(
            "INSERT INTO actions (session_id, seq, ts_ns, kind, payload, result)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (self._sid, seq, event.ts_ns, event.kind, event.payload, event.result),
        )

    def checkpoint(self, seq: int, state: dict[str, object]) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints (session_id, seq, state) VALUES (?, ?, ?)",
            (self._sid, seq, orjson.dumps(state).decode()),
        )

    def flush(self) -> None:
        self._conn.execute("COMMIT")
        self._conn.execute("BEGIN")

    def end_session(self, session: Session, events: int) -> None:
        self._conn.execute(
            "UPDATE sessions SET status = 'ok', ended_ns = ?, event_count = ? WHERE id = ?",
            (session.ended_ns, events, self._sid),
        )
        self._conn.execute("COMMIT")

    def close(self) -> None:
        # The last connection to close checkpoints the WAL into the database file.
        self._conn.close()


class SqliteReader(Reader):
    """Plain queries, as an application would issue them."""

    def __init__(self, root: Path) -> None:
        self._conn = sqlite3.connect(root / DB_NAME, isolation_level=None)

    def sessions(self) -> list[Listed]:
        rows = self._conn.execute(
            "SELECT id, name, event_count, status, meta FROM sessions"
        ).fetchall()
        return [Listed(r[0], r[1], r[2], r[3], orjson.loads(r[4])) for r in rows]

    def load(self, key: str) -> int:
        rows = self._conn.execute(
            "SELECT seq, ts_ns, kind, payload, result FROM actions"
            " WHERE session_id = ? ORDER BY seq",
            (key,),
        ).fetchall()
        return len(rows)

    def kind_counts(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT kind, COUNT(*) FROM actions GROUP BY kind").fetchall()
        return dict(rows)

    def close(self) -> None:
        self._conn.close()


class SqliteStore(Store):
    """SQLite in WAL mode."""

    name = "sqlite"

    def writer(self, root: Path, sync: SyncMode) -> Writer:
        return SqliteWriter(root, sync)

    def reader(self, root: Path) -> Reader:
        return SqliteReader(root)

    def drop(self, root: Path, keys: list[str]) -> None:
        conn = _connect(root, SyncMode.COMMIT)
        try:
            marks = ",".join("?" * len(keys))
            conn.execute("BEGIN")
            for table, column in (("actions", "session_id"), ("checkpoints", "session_id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", keys)
            conn.execute(f"DELETE FROM sessions WHERE id IN ({marks})", keys)
            conn.execute("COMMIT")
            # Deleted pages only go on the free list; VACUUM rebuilds the file
            # and the WAL checkpoint returns the WAL's space too.
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

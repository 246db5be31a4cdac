"""LMDB peer: python lmdb, one write transaction per session.

Events live in the "events" database under key = session UUID (16 bytes) +
big-endian sequence number, so one session's events are one contiguous key
range. The value is the event packed as an LMDB user would pack it: a fixed
header (timestamp, kind length, whether a result follows, payload length), the
kind, the payload and the result, so reading returns bytes without parsing any
JSON (as memseg and SQLite do). Sessions and checkpoints have databases of
their own.
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from pathlib import Path
from typing import Any

import lmdb
import orjson

from bench.stores.base import (
    Listed,
    Reader,
    Store,
    SyncMode,
    Writer,
    checkpoint_line,
    session_header,
    sync_directory,
)
from bench.workload import Event, Session

# LMDB needs the largest size up front; it only reserves address space.
MAP_SIZE = 1 << 40
_SEQ = struct.Struct(">Q")
# ts_ns, kind length, 1 if a result follows the payload, payload length.
_VALUE = struct.Struct(">qBBI")


def _pack_event(event: Event) -> bytes:
    kind = event.kind.encode()
    has_result = event.result is not None
    head = _VALUE.pack(event.ts_ns, len(kind), has_result, len(event.payload))
    return b"".join((head, kind, event.payload, event.result or b""))


def _unpack_event(seq: int, value: bytes) -> tuple[int, int, str, bytes, bytes | None]:
    ts_ns, kind_len, has_result, payload_len = _VALUE.unpack_from(value)
    at = _VALUE.size + kind_len
    kind = value[_VALUE.size : at].decode()
    payload = value[at : at + payload_len]
    result = value[at + payload_len :] if has_result else None
    return seq, ts_ns, kind, payload, result


def _open(root: Path, *, readonly: bool, sync: bool = False) -> Any:
    return lmdb.open(
        str(root),
        map_size=MAP_SIZE,
        max_dbs=3,
        readonly=readonly,
        sync=sync,
        metasync=sync,
        lock=not readonly,
    )


class LmdbWriter(Writer):
    """Puts one key per event inside the session's write transaction."""

    def __init__(self, root: Path, sync: SyncMode) -> None:
        self._env = _open(root, readonly=False, sync=sync.fsync)
        self._events = self._env.open_db(b"events")
        self._sessions = self._env.open_db(b"sessions")
        self._checkpoints = self._env.open_db(b"checkpoints")
        self._txn: Any = None
        self._prefix = b""
        self._header: dict[str, object] = {}

    def start_session(self, session: Session) -> None:
        self._prefix = session.id.bytes
        self._header = session_header(session) | {"inputs": session.inputs, "status": "running"}
        self._txn = self._env.begin(write=True)
        self._txn.put(self._prefix, orjson.dumps(self._header), db=self._sessions)

    def record(self, seq: int, event: Event) -> None:
        self._txn.put(self._prefix + _SEQ.pack(seq), _pack_event(event), db=self._events)

    def checkpoint(self, seq: int, state: dict[str, object]) -> None:
        self._txn.put(
            self._prefix + _SEQ.pack(seq), checkpoint_line(seq, state), db=self._checkpoints
        )

    def flush(self) -> None:
        self._txn.commit()
        self._txn = self._env.begin(write=True)

    def end_session(self, session: Session, events: int) -> None:
        header = self._header | {"status": "ok", "ended_ns": session.ended_ns, "events": events}
        self._txn.put(self._prefix, orjson.dumps(header), db=self._sessions)
        self._txn.commit()
        self._txn = None

    def close(self) -> None:
        self._env.close()


class LmdbReader(Reader):
    """Cursor scans over the key ranges."""

    def __init__(self, root: Path) -> None:
        self._env = _open(root, readonly=True)
        self._events = self._env.open_db(b"events", create=False)
        self._sessions = self._env.open_db(b"sessions", create=False)

    def sessions(self) -> list[Listed]:
        out: list[Listed] = []
        with self._env.begin(db=self._sessions) as txn:
            for _key, value in txn.cursor():
                h = orjson.loads(value)
                out.append(Listed(h["id"], h["name"], h.get("events", 0), h["status"], h["meta"]))
        return out

    def load(self, key: str) -> int:
        prefix = uuid.UUID(key).bytes
        rows = []
        with self._env.begin(db=self._events) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    rows.append(_unpack_event(_SEQ.unpack_from(k, 16)[0], v))
        return len(rows)

    def kind_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._env.begin(db=self._events) as txn:
            for v in txn.cursor().iternext(keys=False, values=True):
                kind = v[_VALUE.size : _VALUE.size + v[8]].decode()  # v[8]: the kind's length
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def close(self) -> None:
        self._env.close()


class LmdbStore(Store):
    """LMDB with one key per event."""

    name = "lmdb"

    def writer(self, root: Path, sync: SyncMode) -> Writer:
        return LmdbWriter(root, sync)

    def reader(self, root: Path) -> Reader:
        return LmdbReader(root)

    def drop(self, root: Path, keys: list[str]) -> None:
        env = _open(root, readonly=False, sync=True)
        try:
            events = env.open_db(b"events")
            sessions = env.open_db(b"sessions")
            checkpoints = env.open_db(b"checkpoints")
            with env.begin(write=True) as txn:
                for key in keys:
                    prefix = uuid.UUID(key).bytes
                    txn.delete(prefix, db=sessions)
                    for db in (events, checkpoints):
                        cur = txn.cursor(db=db)
                        if cur.set_range(prefix):
                            # delete() moves the cursor to the next record.
                            while cur.key().startswith(prefix) and cur.delete():
                                pass
            # Freed pages stay in data.mdb; a compacting copy is LMDB's way to shrink it.
            compacted = root / "compacted"
            compacted.mkdir()
            env.copy(str(compacted), compact=True)
        finally:
            env.close()
        # The copy is not synced by LMDB: made durable before it replaces the store.
        fd = os.open(compacted / "data.mdb", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(compacted / "data.mdb", root / "data.mdb")
        shutil.rmtree(compacted)
        sync_directory(root)

"""JSONL transcripts: one folder per run holding inputs.json, events.jsonl and meta.json.

meta.json is written when the run starts and rewritten when it ends, with
the status and event count, so a listing reads one small file per run.
Checkpoints are lines of events.jsonl with "type": "checkpoint". Only files
are fsynced, not the directories that hold them, as is usual for this format.
A drop syncs the directory after deleting, so that drops compare at equal
durability (memseg's compaction syncs its directory).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO

import orjson

from bench.stores.base import (
    Listed,
    Reader,
    Store,
    SyncMode,
    Writer,
    checkpoint_line,
    event_line,
    session_header,
    sync_directory,
)
from bench.workload import Event, Session


def _write_json(path: Path, value: object, fsync: bool) -> None:
    with open(path, "wb") as f:
        f.write(orjson.dumps(value))
        if fsync:
            f.flush()
            os.fsync(f.fileno())


class JsonlWriter(Writer):
    """Appends one line per event to the run's events.jsonl."""

    def __init__(self, root: Path, sync: SyncMode) -> None:
        self._root = root
        self._fsync = sync.fsync
        self._dir = root
        self._events: IO[bytes] | None = None
        self._meta: dict[str, object] = {}

    def start_session(self, session: Session) -> None:
        self._dir = self._root / str(session.id)
        self._dir.mkdir()
        self._meta = session_header(session) | {"status": "running"}
        _write_json(self._dir / "inputs.json", session.inputs, self._fsync)
        _write_json(self._dir / "meta.json", self._meta, self._fsync)
        self._events = open(self._dir / "events.jsonl", "ab")  # noqa: SIM115 (closed at end)

    def record(self, seq: int, event: Event) -> None:
        assert self._events is not None
        self._events.write(event_line(seq, event) + b"\n")

    def checkpoint(self, seq: int, state: dict[str, object]) -> None:
        assert self._events is not None
        self._events.write(checkpoint_line(seq, state) + b"\n")

    def flush(self) -> None:
        assert self._events is not None
        self._events.flush()
        if self._fsync:
            os.fsync(self._events.fileno())

    def end_session(self, session: Session, events: int) -> None:
        self.flush()
        assert self._events is not None
        self._events.close()
        self._events = None
        meta = self._meta | {"status": "ok", "ended_ns": session.ended_ns, "events": events}
        _write_json(self._dir / "meta.json", meta, self._fsync)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()


def _event_rows(data: bytes) -> list[dict[str, object]]:
    """The event lines of a transcript, decoded; checkpoint lines are skipped."""
    rows = []
    for line in data.splitlines():
        row = orjson.loads(line)
        if row["type"] == "event":
            rows.append(row)
    return rows


def _count_kinds(data: bytes, counts: dict[str, int]) -> None:
    for row in _event_rows(data):
        kind = str(row["kind"])
        counts[kind] = counts.get(kind, 0) + 1


class JsonlReader(Reader):
    """Reads the folders directly."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def sessions(self) -> list[Listed]:
        out: list[Listed] = []
        for entry in os.scandir(self._root):
            if entry.is_dir():
                with open(os.path.join(entry.path, "meta.json"), "rb") as f:
                    m = orjson.loads(f.read())
                out.append(Listed(m["id"], m["name"], m.get("events", 0), m["status"], m["meta"]))
        return out

    def load(self, key: str) -> int:
        return len(_event_rows((self._root / key / "events.jsonl").read_bytes()))

    def kind_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in os.scandir(self._root):
            if entry.is_dir():
                with open(os.path.join(entry.path, "events.jsonl"), "rb") as f:
                    _count_kinds(f.read(), counts)
        return counts

    def close(self) -> None:
        pass


class JsonlStore(Store):
    """A directory of JSONL transcripts."""

    name = "jsonl-dir"

    def writer(self, root: Path, sync: SyncMode) -> Writer:
        return JsonlWriter(root, sync)

    def reader(self, root: Path) -> Reader:
        return JsonlReader(root)

    def drop(self, root: Path, keys: list[str]) -> None:
        for key in keys:
            shutil.rmtree(root / key)
        sync_directory(root)

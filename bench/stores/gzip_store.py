"""gzip-compressed JSONL per session: the archive format.

Each session is one `<id>.jsonl.gz` whose first line is the session header,
then its event and checkpoint lines, then an end line. A gzip stream cannot
be read from the end, so a listing would have to decompress every file; the
writer therefore appends one summary line per finished session to
index.jsonl, and the listing reads that. Compression level 6 is zlib's and
the gzip tool's default (Python's gzip.open defaults to the slower 9). Lines
go through a 64 KiB buffer, as text-mode gzip.open would give, rather than
one compressor call per line.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
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

INDEX = "index.jsonl"
SUFFIX = ".jsonl.gz"
LEVEL = 6
BUFFER = 1 << 16


class GzipWriter(Writer):
    """Streams each session through its own gzip file."""

    def __init__(self, root: Path, sync: SyncMode) -> None:
        self._root = root
        self._fsync = sync.fsync
        self._index = open(root / INDEX, "ab")  # noqa: SIM115 (closed in close())
        self._raw: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None
        self._buf: io.BufferedWriter | None = None
        self._header: dict[str, object] = {}

    def start_session(self, session: Session) -> None:
        self._raw = open(self._root / (str(session.id) + SUFFIX), "wb")  # noqa: SIM115
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=LEVEL)
        self._buf = io.BufferedWriter(self._gz, BUFFER)
        self._header = session_header(session)
        line = self._header | {"type": "session", "inputs": session.inputs}
        self._buf.write(orjson.dumps(line) + b"\n")

    def record(self, seq: int, event: Event) -> None:
        assert self._buf is not None
        self._buf.write(event_line(seq, event) + b"\n")

    def checkpoint(self, seq: int, state: dict[str, object]) -> None:
        assert self._buf is not None
        self._buf.write(checkpoint_line(seq, state) + b"\n")

    def flush(self) -> None:
        assert self._gz is not None and self._buf is not None and self._raw is not None
        self._buf.flush()
        # A sync flush ends the deflate block so everything so far can be decompressed.
        self._gz.flush(zlib.Z_SYNC_FLUSH)
        if self._fsync:
            os.fsync(self._raw.fileno())

    def end_session(self, session: Session, events: int) -> None:
        assert self._gz is not None and self._buf is not None and self._raw is not None
        end = {"type": "end", "status": "ok", "ended_ns": session.ended_ns, "events": events}
        self._buf.write(orjson.dumps(end) + b"\n")
        self._buf.flush()
        self._gz.close()  # writes the gzip trailer; leaves self._raw open
        self._raw.flush()
        if self._fsync:
            os.fsync(self._raw.fileno())
        self._raw.close()
        self._gz = self._raw = self._buf = None
        summary = self._header | {"status": "ok", "ended_ns": session.ended_ns, "events": events}
        self._index.write(orjson.dumps(summary) + b"\n")
        self._index.flush()
        if self._fsync:
            os.fsync(self._index.fileno())

    def close(self) -> None:
        self._index.close()


def _event_rows(data: bytes) -> list[dict[str, object]]:
    rows = []
    for line in data.splitlines():
        row = orjson.loads(line)
        if row["type"] == "event":
            rows.append(row)
    return rows


class GzipReader(Reader):
    """Decompresses whole files; gzip offers no random access."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def sessions(self) -> list[Listed]:
        out: list[Listed] = []
        for line in (self._root / INDEX).read_bytes().splitlines():
            m = orjson.loads(line)
            out.append(Listed(m["id"], m["name"], m["events"], m["status"], m["meta"]))
        return out

    def load(self, key: str) -> int:
        with gzip.open(self._root / (key + SUFFIX), "rb") as f:
            return len(_event_rows(f.read()))

    def kind_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in os.scandir(self._root):
            if entry.name.endswith(SUFFIX):
                with gzip.open(entry.path, "rb") as f:
                    for row in _event_rows(f.read()):
                        kind = str(row["kind"])
                        counts[kind] = counts.get(kind, 0) + 1
        return counts

    def close(self) -> None:
        pass


class GzipStore(Store):
    """One gzip JSONL file per session plus an index."""

    name = "jsonl-gz"

    def writer(self, root: Path, sync: SyncMode) -> Writer:
        return GzipWriter(root, sync)

    def reader(self, root: Path) -> Reader:
        return GzipReader(root)

    def drop(self, root: Path, keys: list[str]) -> None:
        gone = set(keys)
        for key in keys:
            os.remove(root / (key + SUFFIX))
        kept = [
            line
            for line in (root / INDEX).read_bytes().splitlines()
            if orjson.loads(line)["id"] not in gone
        ]
        tmp = root / (INDEX + ".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / INDEX)
        sync_directory(root)

"""MCAP peer: the mcap package, LZ4-compressed chunks, a channel per session.

Each message is the event as a JSON line (message encoding "json"), logged at
the event's timestamp. Checkpoints go to a second channel of the session; the
session's end status is a metadata record. A commit finishes the open chunk
(Writer.flush); the summary, which readers use to find everything, is written
once when the file is finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import orjson
from mcap.reader import McapReader, make_reader
from mcap.summary import Summary
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

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

FILE_NAME = "sessions.mcap"
EVENTS = "session/"
CHECKPOINTS = "checkpoint/"


def _summary(reader: McapReader) -> Summary:
    summary = reader.get_summary()
    if summary is None:
        raise ValueError("the MCAP file has no summary section (was it finished?)")
    return summary


def _new_writer(stream: IO[bytes]) -> Any:
    writer = McapWriter(stream, compression=CompressionType.LZ4)
    writer.start(profile="", library="memseg-bench")
    return writer


class McapStoreWriter(Writer):
    """Adds one message per event to the session's channel."""

    def __init__(self, root: Path, sync: SyncMode) -> None:
        self._file = open(root / FILE_NAME, "wb")  # noqa: SIM115 (closed in close())
        self._writer = _new_writer(self._file)
        self._fsync = sync.fsync
        self._channel = 0
        self._checkpoint_channel = 0

    def start_session(self, session: Session) -> None:
        header = session_header(session) | {"inputs": session.inputs}
        meta = {k: orjson.dumps(v).decode() for k, v in header.items()}
        self._channel = self._writer.register_channel(
            topic=EVENTS + str(session.id), message_encoding="json", schema_id=0, metadata=meta
        )
        self._checkpoint_channel = self._writer.register_channel(
            topic=CHECKPOINTS + str(session.id), message_encoding="json", schema_id=0
        )

    def record(self, seq: int, event: Event) -> None:
        self._writer.add_message(
            self._channel, event.ts_ns, event_line(seq, event), event.ts_ns, sequence=seq
        )

    def checkpoint(self, seq: int, state: dict[str, object]) -> None:
        # Checkpoints carry no timestamp of their own; 0 keeps them out of time queries.
        self._writer.add_message(self._checkpoint_channel, 0, checkpoint_line(seq, state), 0, seq)

    def flush(self) -> None:
        self._writer.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def end_session(self, session: Session, events: int) -> None:
        status = {"status": "ok", "ended_ns": str(session.ended_ns), "events": str(events)}
        self._writer.add_metadata(EVENTS + str(session.id), status)
        self.flush()

    def close(self) -> None:
        self._writer.finish()
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self._file.close()


class McapStoreReader(Reader):
    """A seeking reader over the finished file, guided by its summary."""

    def __init__(self, root: Path) -> None:
        self._file = open(root / FILE_NAME, "rb")  # noqa: SIM115 (closed in close())
        self._reader = make_reader(self._file)

    def sessions(self) -> list[Listed]:
        summary = _summary(self._reader)
        assert summary.statistics is not None, "the writer always writes statistics"
        counts = summary.statistics.channel_message_counts
        status: dict[str, dict[str, str]] = {
            m.name: m.metadata for m in self._reader.iter_metadata()
        }
        out: list[Listed] = []
        for channel in summary.channels.values():
            if channel.topic.startswith(EVENTS):
                end = status.get(channel.topic, {})
                out.append(
                    Listed(
                        channel.topic[len(EVENTS) :],
                        orjson.loads(channel.metadata["name"]),
                        counts.get(channel.id, 0),
                        end.get("status", "running"),
                        orjson.loads(channel.metadata["meta"]),
                    )
                )
        return out

    def load(self, key: str) -> int:
        rows = [orjson.loads(m.data) for _s, _c, m in self._reader.iter_messages(EVENTS + key)]
        return len(rows)

    def kind_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _s, channel, message in self._reader.iter_messages(log_time_order=False):
            if channel.topic.startswith(EVENTS):
                kind = orjson.loads(message.data)["kind"]
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def close(self) -> None:
        self._file.close()


class McapStore(Store):
    """MCAP with LZ4 chunks."""

    name = "mcap"

    def writer(self, root: Path, sync: SyncMode) -> Writer:
        return McapStoreWriter(root, sync)

    def reader(self, root: Path) -> Reader:
        return McapStoreReader(root)

    def drop(self, root: Path, keys: list[str]) -> None:
        # MCAP files are immutable: dropping sessions means rewriting the survivors.
        gone = {EVENTS + k for k in keys} | {CHECKPOINTS + k for k in keys}
        tmp = root / (FILE_NAME + ".tmp")
        with open(root / FILE_NAME, "rb") as src, open(tmp, "wb") as dst:
            reader = make_reader(src)
            summary = _summary(reader)
            writer = _new_writer(dst)
            ids: dict[int, int] = {}
            for channel in summary.channels.values():
                if channel.topic not in gone:
                    ids[channel.id] = writer.register_channel(
                        channel.topic, channel.message_encoding, 0, channel.metadata
                    )
            for meta in reader.iter_metadata():
                if meta.name not in gone:
                    writer.add_metadata(meta.name, meta.metadata)
            for _s, channel, m in reader.iter_messages(log_time_order=False):
                if channel.id in ids:
                    writer.add_message(ids[channel.id], m.log_time, m.data, m.publish_time, m.sequence)
            writer.finish()
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, root / FILE_NAME)
        sync_directory(root)

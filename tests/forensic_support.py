"""Helpers for the forensics and command-line tests: sample stores and what they hold."""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import memseg
from memseg.blocks import BlockView
from memseg.framing import parse_header
from memseg.scan import mapped, walk
from tests.helpers import ModelAction, ModelSession

KINDS = ("user_message", "thinking", "tool_call", "tool_result", "token_usage", "error")


def _payload(rng: random.Random, i: int) -> Any:
    roll = rng.random()
    if roll < 0.5:
        return {"i": i, "tool": rng.choice(["grep", "read_file", "run_tests"]),
                "args": {"path": f"src/m{rng.randrange(50)}.py", "n": rng.randrange(1000)}}
    if roll < 0.8:
        return f"step {i}: " + " ".join(rng.choice(["fix", "parse", "header", "test", "diff"])
                                        for _ in range(rng.randrange(1, 30)))
    return rng.randbytes(rng.randrange(0, 300))


def build_store(path: Path, seed: int = 0, sessions: int = 4,
                actions: int = 60) -> dict[uuid.UUID, ModelSession]:
    """Sessions with several flushes and checkpoints; the last is left active. Returns the model."""
    rng = random.Random(seed)
    model: dict[uuid.UUID, ModelSession] = {}
    ts = 1_700_000_000_000_000_000
    with memseg.open(path, "a", sync="none") as store:
        for s in range(sessions):
            meta = {"n": s, "agent": "test"}
            rec = store.start_session(f"session-{s}", meta=meta)
            m = ModelSession(f"session-{s}", meta)
            model[rec.id] = m
            for i in range(actions):
                ts += rng.randrange(1, 10**9)
                kind = rng.choice(KINDS)
                payload = _payload(rng, i)
                result = {"ok": rng.random() < 0.8} if kind == "tool_call" else None
                rec.record(kind, payload, result=result, ts_ns=ts)
                m.actions.append(ModelAction(kind, ts, payload, result))
                if rng.random() < 0.08:
                    cid = rec.checkpoint({"at": i, "s": s}, ts_ns=ts)
                    m.checkpoints.append((cid, len(m.actions), {"at": i, "s": s}))
                elif rng.random() < 0.1:
                    rec.flush()
            if s < sessions - 1:
                status = "ok" if s % 2 == 0 else "failed"
                rec.end(status)
                m.state, m.status = "ended", status
            else:
                rec.flush()
    return model


def stored_actions(path: Path | str) -> dict[uuid.UUID, list[tuple[int, str, bytes, bytes | None]]]:
    """Every session's actions as (ts, kind, payload, result), via the public reader."""
    out: dict[uuid.UUID, list[tuple[int, str, bytes, bytes | None]]] = {}
    with memseg.open(path, "r") as store:
        for info in store.sessions():
            out[info.id] = [(a.ts_ns, a.kind, a.payload, a.result)
                            for a in store.session(info.id).actions]
    return out


def committed_counts(data: bytes, where: Path) -> dict[uuid.UUID, int]:
    """Action counts per session that a reader sees in ``data`` (the newest intact commit)."""
    where.write_bytes(data)
    try:
        with memseg.open(where, "r") as store:
            return {i.id: i.action_count for i in store.sessions()}
    except memseg.MemsegError:
        return {}
    finally:
        os.remove(where)


@dataclass(frozen=True)
class BlockSpan:
    """Where one BLOCK record lies and which actions it holds."""

    offset: int
    end: int
    session_id: uuid.UUID
    first_seq: int
    count: int


def block_spans(path: Path) -> list[BlockSpan]:
    """The BLOCK records of an intact file."""
    spans = []
    with mapped(path) as m:
        for rec in walk(m):
            if rec.kind == "BLOCK":
                block = BlockView(m.buf, parse_header(m.buf, rec.offset, m.size, m.header.tag))
                spans.append(BlockSpan(rec.offset, rec.end, block.session_id, block.first_seq,
                                       block.count))
                del block
    return spans


def file_state(path: Path) -> tuple[int, int, bytes]:
    """Size, modification time and bytes: what a read-only command must leave alone."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, path.read_bytes()


def is_subsequence(got: list[Any], want: list[Any]) -> bool:
    """``got`` is ``want`` with some items left out, in order."""
    it = iter(want)
    return all(any(g == w for w in it) for g in got)


def with_damaged_header(path: Path, out: Path) -> Path:
    """A copy of ``path`` at ``out`` whose file header fails its CRC (a byte of the file id)."""
    data = bytearray(path.read_bytes())
    data[30] ^= 0xFF
    out.write_bytes(bytes(data))
    return out

"""A plain-Python model of what memseg acknowledged, a workload that keeps it, and the check.

The model holds three views of every session: ``live`` (all recorded, flushed
or not), ``staged`` (what the next commit will show: start_session stages a
session without committing it) and ``acked`` (what the last acknowledged
commit shows). While a call runs, a crash may leave any state in
``candidates``: the acknowledged state or one of the commits the call makes,
each all-or-nothing. Anything else seen after a crash is lost or invented data.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import memseg
from fuzz.targets import freeze
from memseg.fs import FileSystem
from memseg.store import SyncMode

PATH = "/sim/store.mseg"


@dataclass(frozen=True)
class SessionState:
    """Everything a reader can see of one session."""

    name: str | None
    meta: tuple[tuple[str, Any], ...]
    state: str
    status: str | None
    actions: tuple[tuple[str, int, Any, Any], ...]  # kind, ts_ns, payload, result
    checkpoints: tuple[tuple[int, int, Any], ...]  # id, at_seq, value


State = dict[uuid.UUID, SessionState]


class Model:
    """What was recorded, staged and acknowledged; see the module docstring."""

    def __init__(self) -> None:
        self.live: State = {}
        self.staged: State = {}
        self.acked: State = {}
        self.candidates: list[State] = [{}]
        self.commits = 0

    def begin(self) -> None:
        """A call starts: so far a crash can leave only the acknowledged state."""
        self.candidates = [dict(self.acked)]

    def stage(self, sid: uuid.UUID) -> None:
        self.staged[sid] = self.live[sid]

    def commit(self) -> None:
        """The call makes a commit: a crash from here on may show it."""
        self.candidates.append(dict(self.staged))

    def acknowledge(self) -> None:
        """The call returned: its commits are durable."""
        self.acked = self.candidates[-1]
        self.commits += len(self.candidates) - 1
        self.candidates = [dict(self.acked)]


def read_state(store: memseg.Store) -> State:
    """Everything ``store`` shows, in the model's terms (reads every action and checkpoint)."""
    out: State = {}
    for info in store.sessions():
        session = store.session(info.id)
        actions = tuple(
            (a.kind, a.ts_ns, freeze(a.value()), freeze(a.result_value())) for a in session.actions
        )
        assert info.action_count == len(actions)
        checkpoints = tuple((c.id, c.at_seq, freeze(c.value())) for c in session.checkpoints)
        assert info.checkpoint_count == len(checkpoints)
        out[info.id] = SessionState(info.name, freeze(info.meta), str(info.state), info.status,
                                    actions, checkpoints)
    return out


class Workload:
    """Drives a store through the model; every step keeps ``model.candidates`` right."""

    def __init__(self, fs: FileSystem, model: Model, path: str = PATH,
                 sync: SyncMode = "commit") -> None:
        self.fs = fs
        self.sync: SyncMode = sync
        self.model = model
        self.path = path
        self.store: memseg.Store | None = None
        self.recorders: dict[uuid.UUID, memseg.Recorder] = {}
        self.ts = 1_000

    @contextmanager
    def call(self) -> Iterator[None]:
        self.model.begin()
        yield
        self.model.acknowledge()

    def open(self) -> None:
        with self.call():
            self.store = memseg.open(self.path, "a", sync=self.sync, fs=self.fs)

    def close(self) -> None:
        assert self.store is not None
        with self.call():
            # close() flushes every open recorder in one commit.
            for sid in self.recorders:
                self.model.stage(sid)
            self.model.commit()
            self.store.close()
        self.recorders.clear()
        self.store = None

    def start(self, n: int, name: str | None, meta: dict[str, Any] | None = None) -> uuid.UUID:
        assert self.store is not None
        sid = uuid.UUID(int=n + 1)
        with self.call():
            self.recorders[sid] = self.store.start_session(name=name, meta=meta, session_id=sid)
            self.model.live[sid] = SessionState(name, freeze(meta or {}), "active", None, (), ())
            self.model.stage(sid)
        return sid

    def resume(self, sid: uuid.UUID) -> None:
        assert self.store is not None
        with self.call():
            self.recorders[sid] = self.store.resume(sid)

    def record(self, sid: uuid.UUID, kind: str, payload: Any = None, result: Any = None) -> None:
        self.ts += 7
        with self.call():
            self.recorders[sid].record(kind, payload, result=result, ts_ns=self.ts)
            s = self.model.live[sid]
            self.model.live[sid] = replace(
                s, actions=(*s.actions, (kind, self.ts, freeze(payload), freeze(result))))

    def flush(self, sid: uuid.UUID) -> None:
        with self.call():
            self.model.stage(sid)
            self.model.commit()
            self.recorders[sid].flush()

    def checkpoint(self, sid: uuid.UUID, value: Any, *, flush: bool = True) -> None:
        self.ts += 7
        with self.call():
            s = self.model.live[sid]
            self.model.live[sid] = replace(
                s, checkpoints=(*s.checkpoints, (len(s.checkpoints), len(s.actions), freeze(value))))
            if flush:  # otherwise buffered, like an action, until the next commit
                self.model.stage(sid)
                self.model.commit()
            self.recorders[sid].checkpoint(value, ts_ns=self.ts, flush=flush)

    def end(self, sid: uuid.UUID, status: str | None = "ok") -> None:
        with self.call():
            s = self.model.live[sid]
            self.model.live[sid] = replace(s, state="ended", status=status)
            self.model.stage(sid)
            self.model.commit()
            self.recorders.pop(sid).end(status)

    def extra(self, fn: Callable[[memseg.Store], object], changes: Callable[[State], State]) -> None:
        """A store-level call (archive, compact) that makes one commit changing the state."""
        assert self.store is not None
        with self.call():
            self.model.staged = changes(self.model.staged)
            self.model.live.update(self.model.staged)
            self.model.commit()
            fn(self.store)


def standard_workload(w: Workload, *, flushes: int = 3, payload_bytes: int = 40) -> None:
    """Sessions, flushes, checkpoints, ends, a close and a reopen with resume.

    Payloads of every value type; one session is only ever flushed by
    close(), so until then its buffered actions must not be visible.
    """
    w.open()
    a = w.start(0, "alpha", {"who": "a", "n": 1})
    w.record(a, "llm", {"prompt": "hi", "i": 0}, result="hello")
    w.record(a, "tool", b"\x00\x01" * (payload_bytes // 2))
    w.flush(a)
    b = w.start(1, "beta")
    for i in range(flushes):
        w.record(b, "step", {"i": i, "pad": "x" * payload_bytes}, result=i)
        w.record(a, "llm", f"text {i}")
        w.flush(b)
    w.checkpoint(b, {"state": [1, 2, 3]})
    hidden = w.start(2, "closed-by-store")
    w.record(hidden, "lost", "buffered only")
    w.record(a, "tool", None, result=b"r" * payload_bytes)
    w.end(a, "ok")
    w.close()
    w.open()
    w.resume(b)
    w.record(b, "step", "after reopen")
    w.checkpoint(b, {"buffered": True}, flush=False)
    w.flush(b)
    c = w.start(3, None, {"anon": True})
    w.record(c, "x", 1)
    w.end(c, "error")
    w.end(b, "done")
    w.close()


def record_figures(section: str, figures: dict[str, Any]) -> None:
    """Add ``figures`` under ``section`` of the JSON file MEMSEG_FIGURES names (if set).

    RELIABILITY.md quotes this file, so its numbers come from real runs.
    """
    target = os.environ.get("MEMSEG_FIGURES")
    if not target:
        return
    path = Path(target)
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data[section] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _archived(state: State, sid: uuid.UUID) -> State:
    return {**state, sid: replace(state[sid], state="archived")}


def _without_archived(state: State) -> State:
    return {k: v for k, v in state.items() if v.state != "archived"}


def lifecycle_workload(w: Workload) -> None:
    """The standard workload, then archive, compact (store and path), and more recording."""
    standard_workload(w)
    alpha, anon = uuid.UUID(int=1), uuid.UUID(int=4)
    w.open()
    w.extra(lambda store: store.archive(alpha), lambda st: _archived(st, alpha))
    live = w.start(4, "during-compaction")
    w.record(live, "before", "compact")
    w.flush(live)
    w.extra(lambda store: store.compact(), _without_archived)
    w.record(live, "after", "compact")
    w.flush(live)
    w.extra(lambda store: store.archive(anon), lambda st: _archived(st, anon))
    w.end(live, "ok")
    w.close()
    with w.call():
        w.model.staged = _without_archived(w.model.staged)
        w.model.commit()
        memseg.compact(w.path, fs=w.fs)

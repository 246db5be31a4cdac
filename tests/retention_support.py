"""Helpers for the retention and compaction tests: recording, exact dumps, a failing disk."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import memseg
from memseg.fs import OS_FS, Access, Buffer, Data, FileHandle, FileSystem

T = TypeVar("T")
DAY_NS = 86_400 * 1_000_000_000


def record_session(store: memseg.Store, name: str, *, actions: int = 40, flush_every: int = 3,
                   t0: int = 0, end: bool = True, big: bool = False) -> memseg.Recorder:
    """A session with every value type, results, checkpoints and many small flushes."""
    rec = store.start_session(name=name, meta={"name": name, "n": actions})
    for i in range(actions):
        kind = ("call", "output", "note")[i % 3]
        payload: object = (
            {"i": i, "text": "word " * (i % 17)} if i % 4 == 0
            else f"line {i}" if i % 4 == 1
            else bytes(range(i % 256)) * (50 if big else 1) if i % 4 == 2
            else None
        )
        result = {"ok": i % 5 != 0} if i % 2 else None
        rec.record(kind, payload, result=result, ts_ns=t0 + i)
        if i % 10 == 9:
            rec.checkpoint({"at": i, "state": [i, i * i]}, ts_ns=t0 + i)
        elif i % flush_every == flush_every - 1:
            rec.flush()
    if end:
        rec.end(status=f"done {name}")
    return rec


Dump = dict[str, Any]


def dump_session(session: memseg.Session) -> Dump:
    """Everything recorded about a session, bytes exact (storage sizes and offsets aside)."""
    info = session.info
    actions = session.actions
    return {
        "info": (info.id, info.name, info.meta, info.created_ns, info.ended_ns,
                 info.last_activity_ns, info.status, info.action_count, info.checkpoint_count),
        "state": str(info.state),
        "actions": [(a.seq, a.ts_ns, a.kind, a.payload, a.result, a.payload_type, a.result_type)
                    for a in actions],
        "ts": actions.ts_ns.tolist(),
        "kinds": actions.kind_counts(),
        "checkpoints": [(c.id, c.at_seq, c.ts_ns, c.snapshot, c.snapshot_type)
                        for c in session.checkpoints],
    }


def dump_store(store: memseg.Store, *, live_only: bool = False) -> dict[str, Dump]:
    """Every session of the store by id (only non-archived ones with ``live_only``)."""
    return {
        str(info.id): dump_session(store.session(info.id))
        for info in store.sessions()
        if not (live_only and info.state == memseg.SessionState.ARCHIVED)
    }


def dump_path(path: object, *, live_only: bool = False) -> dict[str, Dump]:
    with memseg.open(str(path)) as store:
        return dump_store(store, live_only=live_only)


FaultMode = Literal["before", "after", "die"]


class StepFaultFS:
    """Wraps the real file system and fails its ``fail_at``-th operation (0-based).

    "before": the operation raises EIO without happening; "after": it happens,
    then raises; "die": it and every later operation raise, as if the process
    had been killed there (``kill`` then closes what it left open, releasing
    its locks). Closing a file always works. ``count`` is the operations seen.
    """

    def __init__(self, fail_at: int | None = None, mode: FaultMode = "before",
                 base: FileSystem = OS_FS) -> None:
        self.fail_at = fail_at
        self.mode = mode
        self.base = base
        self.count = 0
        self.fired = False
        self.dead = False
        self._handles: list[FileHandle] = []

    def step(self, what: str, op: Callable[[], T]) -> T:
        k = self.count
        self.count += 1
        if self.dead:
            raise OSError(errno.EIO, f"dead process ({what})")
        if k != self.fail_at:
            return op()
        self.fired = True
        if self.mode == "after":
            op()
        elif self.mode == "die":
            self.dead = True
        raise OSError(errno.EIO, f"injected fault at operation {k} ({what})")

    def kill(self) -> None:
        """Close every file still open through this wrapper, as process exit would."""
        for fh in self._handles:
            fh.close()
        self._handles.clear()

    def open(self, path: str, *, write: bool, create: bool, mode: int = 0o666,
             exclusive: bool = False) -> FileHandle:
        def op() -> FileHandle:
            fh = self.base.open(path, write=write, create=create, mode=mode,
                                exclusive=exclusive)
            self._handles.append(fh)
            return fh
        return _StepFile(self, self.step("open", op))

    def identity(self, path: str) -> tuple[int, int] | None:
        return self.step("identity", lambda: self.base.identity(path))

    def rename(self, src: str, dst: str) -> None:
        self.step("rename", lambda: self.base.rename(src, dst))

    def link(self, src: str, dst: str) -> None:
        self.step("link", lambda: self.base.link(src, dst))

    def remove(self, path: str) -> None:
        self.step("remove", lambda: self.base.remove(path))

    def sync_dir(self, path: str) -> None:
        self.step("sync_dir", lambda: self.base.sync_dir(path))

    def exists(self, path: str) -> bool:
        return self.step("exists", lambda: self.base.exists(path))

    def lexists(self, path: str) -> bool:
        return self.step("lexists", lambda: self.base.lexists(path))


class _StepFile:
    def __init__(self, fs: StepFaultFS, fh: FileHandle) -> None:
        self._fs = fs
        self._fh = fh

    def size(self) -> int:
        return self._fs.step("size", self._fh.size)

    def read(self, offset: int, length: int) -> bytes:
        return self._fs.step("read", lambda: self._fh.read(offset, length))

    def read_into(self, offset: int, buf: memoryview) -> int:
        return self._fs.step("read_into", lambda: self._fh.read_into(offset, buf))

    def write(self, offset: int, data: Data) -> None:
        self._fs.step("write", lambda: self._fh.write(offset, data))

    def sync(self) -> None:
        self._fs.step("sync", self._fh.sync)

    def truncate(self, length: int) -> None:
        self._fs.step("truncate", lambda: self._fh.truncate(length))

    def map(self, length: int) -> Buffer:
        return self._fs.step("map", lambda: self._fh.map(length))

    def lock(self, timeout: float) -> None:
        self._fs.step("lock", lambda: self._fh.lock(timeout))

    def identity(self) -> tuple[int, int]:
        return self._fs.step("fidentity", self._fh.identity)

    def access(self) -> Access:
        return self._fh.access()

    def set_access(self, access: Access) -> None:
        self._fs.step("set_access", lambda: self._fh.set_access(access))

    def close(self) -> None:
        self._fh.close()

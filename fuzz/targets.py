"""Fuzz targets: plain functions over one input file's bytes, importable without atheris.

Invariant for every target: only memseg's own errors (MemsegError subclasses)
may escape memseg; anything else (IndexError, struct.error, ValueError from
numpy, MemoryError, a hang) is a bug. ``ViolationError`` marks a broken higher-level
promise (appending lost committed data). tests/test_fuzz_corpus.py replays the
corpus through these functions; fuzz/run_atheris.py hands them to atheris.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import memseg
from memseg.format import COMPACT_SUFFIX

# On tmpfs when there is one: the writer target fsyncs (creating, cutting a tail),
# and a disk fsync per input would make fuzzing a hundred times slower.
_DIR = tempfile.mkdtemp(prefix="memseg-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _DIR, True)


class ViolationError(AssertionError):
    """memseg raised nothing but broke a promise (lost or changed committed data)."""


def _file(data: bytes, name: str = "input.mseg") -> str:
    path = os.path.join(_DIR, name)
    for stale in (path, path + COMPACT_SUFFIX):
        if os.path.exists(stale):
            os.unlink(stale)
    with open(path, "wb") as f:
        f.write(data)
    return path


def freeze(value: Any) -> Any:
    """Lists become tuples (and dicts sorted pairs) so decoded values compare and hash."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


def read_session(session: memseg.Session) -> tuple[Any, ...]:
    """Read every action, column and checkpoint of ``session`` into a comparable tuple."""
    actions = session.actions
    n = len(actions)
    rows = tuple((a.seq, a.kind, a.ts_ns, freeze(a.value()), freeze(a.result_value()))
                 for a in actions)
    if len(rows) != n:
        raise ViolationError(f"iterating gave {len(rows)} actions, len() says {n}")
    if n:
        if actions[n - 1].seq != n - 1 or len(actions[0:n]) != n:
            raise ViolationError("indexing disagrees with iteration")
        if len(actions.ts_ns) != n or len(actions.kind_codes) != n:
            raise ViolationError("column lengths disagree with the action count")
    actions.kind_counts()
    checkpoints = tuple((c.id, c.at_seq, freeze(c.value())) for c in session.checkpoints)
    info = session.info
    return (info.name, freeze(info.meta), str(info.state), info.status, rows, checkpoints)


class Unreadable(tuple[str, str]):
    """A session that did not read: its error's class and reason (a tuple of its own type,
    so no session that reads, whatever its name, is taken for one)."""


def read_all(store: Any) -> dict[uuid.UUID, Any]:
    """Every session of a store (or store-like view), each read whole or as `Unreadable`."""
    out: dict[uuid.UUID, Any] = {}
    for info in store.sessions():
        try:
            out[info.id] = read_session(store.session(info.id))
        except memseg.MemsegError as exc:
            out[info.id] = Unreadable((type(exc).__name__, exc.reason))
    return out


def open_and_read(data: bytes) -> None:
    """Open read-only, list sessions, read every action and checkpoint, refresh, read again."""
    path = _file(data)
    try:
        with memseg.open(path, "r") as store:
            first = read_all(store)
            store.refresh()
            if read_all(store) != first:
                raise ViolationError("refresh of an unchanged file changed what it shows")
    except memseg.MemsegError:
        pass


def open_for_append(data: bytes) -> None:
    """Open for writing (cutting a torn tail), append a session, and check nothing committed moved."""
    path = _file(data)
    try:
        with memseg.open(path, "r") as store:
            before: dict[uuid.UUID, Any] | None = read_all(store)
    except memseg.MemsegError:
        before = None
    try:
        # No fsync: durability is not what this target checks, and fsync is slow.
        writer = memseg.open(path, "a", sync="none")
    except memseg.MemsegError:
        return
    probe = uuid.uuid4()
    try:
        with writer:
            seen = read_all(writer)
            if before is not None and seen != before:
                raise ViolationError("the writer sees other sessions than a reader did")
            rec = writer.start_session(name="fuzz-probe", session_id=probe)
            rec.record("probe", {"n": 1}, result=b"ok", ts_ns=7)
            rec.end("ok")
    except memseg.MemsegError:
        return  # e.g. a damaged session found while resuming nothing: refused, not lost
    with memseg.open(path, "r") as reader:
        after = read_all(reader)
    got = after.pop(probe, None)
    if got is None or got[4] != ((0, "probe", 7, (("n", 1),), b"ok"),):
        raise ViolationError(f"the appended session reads back wrong: {got!r}")
    if before is not None and after != before:
        raise ViolationError("appending changed sessions committed before it")


def forensics(data: bytes) -> None:
    """info, verify, scan and the damaged-header fallback reader (and salvage, if present)."""
    try:
        import memseg.forensics as fx
    except ImportError:
        return
    path = _file(data)
    calls: list[Callable[[], object]] = [
        lambda: fx.info(path), lambda: fx.verify(path), lambda: fx.scan(path),
    ]
    for call in calls:
        with contextlib.suppress(memseg.MemsegError):
            call()
    try:
        with fx.open_readonly(path) as store:
            read_all(store)
    except memseg.MemsegError:
        pass
    try:
        from memseg.salvage import salvage
    except ImportError:
        return
    _salvage(salvage, path)


def _salvage(salvage: Callable[..., Any], path: str) -> None:
    """Salvage into a new file, which must read cleanly and keep every action a reader
    of the original could read (salvage may add uncommitted ones after them)."""
    try:
        with memseg.open(path, "r") as store:
            committed = read_all(store)
    except memseg.MemsegError:
        committed = {}
    out = os.path.join(_DIR, "salvaged.mseg")
    if os.path.exists(out):
        os.unlink(out)
    try:
        salvage(path, out)
    except memseg.MemsegError:
        return
    if not os.path.exists(out):
        return
    with memseg.open(out, "r") as store:
        rescued = read_all(store)
    for value in rescued.values():
        if isinstance(value, Unreadable):
            raise ViolationError(f"a salvaged file has a damaged session: {value}")
    for sid, value in committed.items():
        if isinstance(value, Unreadable):
            continue
        got = rescued.get(sid)
        if got is None or got[4][: len(value[4])] != value[4]:
            raise ViolationError(f"salvage lost committed actions of session {sid}")


def maintain(data: bytes) -> None:
    """Export, archive and compact: what read whole before reads the same after.

    Half the ended sessions that read whole are exported into a new file and archived,
    then the file is compacted. The copies must read as the originals did, the archived
    sessions must be gone, and every other session that read whole must read the same.
    A refusal (a MemsegError) is allowed at any step; what was committed must survive it.
    """
    path = _file(data)
    try:
        with memseg.open(path, "r") as store:
            before = read_all(store)
    except memseg.MemsegError:
        return  # unreadable: opening for writing is open_for_append's concern
    # Sessions already archived are dropped by a compaction that succeeds.
    whole = [sid for sid, v in before.items()
             if not isinstance(v, Unreadable) and v[2] != memseg.SessionState.ARCHIVED]
    moved = [sid for sid in whole if before[sid][2] == memseg.SessionState.ENDED][::2]
    dest = _file(b"", "exported.mseg")
    os.unlink(dest)
    try:
        with memseg.open(path, "a", sync="none") as writer:
            if moved:
                writer.export(moved, dest)
                writer.archive(moved)
            writer.compact()
    except memseg.MemsegError:
        moved = []  # refused somewhere: then nothing may be lost either
    try:
        with memseg.open(path, "r") as store:
            after = read_all(store)
    except memseg.MemsegError as exc:
        raise ViolationError(f"maintenance made the file unreadable: {exc!r}") from exc
    if moved:
        with memseg.open(dest, "r") as copy:
            copies = read_all(copy)
        for sid in moved:
            if copies.get(sid) != before[sid]:
                raise ViolationError(f"the exported copy of {sid} differs from its original")
            if sid in after:
                raise ViolationError(f"archived session {sid} survived compaction")
    for sid in whole:
        if sid in moved:
            continue
        got = after.get(sid)
        # Archiving may have committed before a refused compaction: only the state moved.
        if got is None or got[:2] + got[3:] != before[sid][:2] + before[sid][3:]:
            raise ViolationError(f"maintenance changed session {sid}: {got!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "open_and_read": open_and_read,
    "open_for_append": open_for_append,
    "forensics": forensics,
    "maintain": maintain,
}

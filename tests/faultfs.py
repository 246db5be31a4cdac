"""A simulated disk for memseg's FileSystem protocol: crashes, lost writes, EIO, ENOSPC.

The model is SQLite's: what the running program sees (the page cache) and what
is on the platter differ until fsync. At a crash every write made since the
file's last fsync is kept, dropped or garbled; or an ordered prefix of them is
kept and the next one is torn at a sector boundary. Directory changes (file
creation, rename, remove) reach the platter only when their directory is
fsynced. ``crash_image`` builds the disk a machine would find on reboot, as a
fresh ``SimFS`` to reopen with ``memseg.open(..., fs=...)``.

Faults: ``crash_at=k`` raises ``Crash`` before the k-th mutating operation
(0-based: open-with-create, write, sync, truncate, rename, remove, sync_dir);
``eio_sync_at``/``eio_write_at``/``enospc_write_at`` raise OSError from the
n-th sync or write (0-based), ENOSPC optionally after writing part of the data.
``sync_delay`` makes each fsync take that long (without blocking other threads).
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from memseg.errors import LockedError
from memseg.fs import Access, Buffer, Data, FileHandle

DamageMode = Literal["keep", "drop", "garble", "mix", "torn", "sectors"]


class Crash(BaseException):
    """The simulated machine lost power; nothing after it runs.

    A BaseException, like a signal, so no ``except Exception`` in the code
    under test can swallow it and carry on as if the machine were still up.
    """


@dataclass(frozen=True)
class Damage:
    """How a crash treats writes that no fsync had made durable yet.

    keep: all survive (a process crash: the page cache reaches the disk);
    drop: none survive; garble: every one is replaced by random bytes;
    mix: each independently survives, vanishes or is garbled;
    torn: the first ``prefix`` survive in order, the next is cut at a random
    sector boundary inside it and the rest vanish;
    sectors: every sector they touch independently holds new, old or random bytes.
    """

    mode: DamageMode
    seed: int = 0
    sector: int = 512
    prefix: int = 0

    @property
    def kind(self) -> str:
        """The variant without its seed: keep, mix, torn512, sectors4096, ..."""
        return self.mode + (str(self.sector) if self.mode in ("torn", "sectors") else "")

    @property
    def name(self) -> str:
        if self.mode in ("keep", "drop", "garble"):
            return self.mode
        if self.mode == "torn":
            return f"torn{self.sector}@{self.prefix}#{self.seed}"
        if self.mode == "sectors":
            return f"sectors{self.sector}#{self.seed}"
        return f"mix#{self.seed}"


@dataclass(frozen=True)
class Write:
    offset: int
    data: bytes


@dataclass(frozen=True)
class Truncate:
    length: int


Op = Write | Truncate


@dataclass
class Inode:
    """One file: what the system sees, what is durable, and what lies between."""

    number: int
    data: bytearray
    durable: bytes = b""
    pending: list[Op] = field(default_factory=list)
    # Permission bits and owner: kept, not enforced (the simulation has one user).
    access: Access = field(default_factory=lambda: Access(0o644, 0, 0))


@dataclass(frozen=True)
class DirOp:
    """A directory change not yet made durable: link (create), unlink or rename."""

    directory: str
    kind: Literal["link", "unlink", "rename"]
    name: str
    target: str = ""
    inode: int = 0


def _apply(base: bytes | bytearray, op: Op, data: bytes | None = None) -> bytearray:
    """``base`` with ``op`` applied; ``data`` replaces a write's bytes (garbling)."""
    out = bytearray(base)
    if isinstance(op, Truncate):
        del out[op.length :]
        out.extend(bytes(max(0, op.length - len(out))))
        return out
    payload = op.data if data is None else data
    end = op.offset + len(payload)
    if end > len(out):
        out.extend(bytes(end - len(out)))
    out[op.offset : end] = payload
    return out


def _noise(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def damaged_image(durable: bytes, pending: list[Op], damage: Damage, rng: random.Random) -> bytes:
    """The bytes a file holds after a crash that ``damage`` describes."""
    mode = damage.mode
    out = bytearray(durable)
    if mode == "keep":
        for op in pending:
            out = _apply(out, op)
    elif mode == "garble":
        for op in pending:
            out = _apply(out, op, _noise(rng, len(op.data)) if isinstance(op, Write) else None)
    elif mode == "mix":
        for op in pending:
            roll = rng.random()
            if roll < 0.45:
                out = _apply(out, op)
            elif roll < 0.8 or isinstance(op, Truncate):
                continue
            else:
                out = _apply(out, op, _noise(rng, len(op.data)))
    elif mode == "torn":
        for op in pending[: damage.prefix]:
            out = _apply(out, op)
        if damage.prefix < len(pending):
            op = pending[damage.prefix]
            if isinstance(op, Write):
                cut = _cut_point(op, damage.sector, rng)
                if cut > op.offset:
                    out = _apply(out, Write(op.offset, op.data[: cut - op.offset]))
    elif mode == "sectors":
        new = bytearray(durable)
        for op in pending:
            new = _apply(new, op)
        out = bytearray(durable[: len(new)])
        out.extend(bytes(len(new) - len(out)))
        # Only the bytes the unsynced writes covered are at risk: writing part
        # of a sector never damages the rest of it (SQLite's "powersafe
        # overwrite", which RELIABILITY.md states as an assumption).
        size = damage.sector
        segments: dict[int, list[tuple[int, int]]] = {}
        for op in pending:
            if isinstance(op, Write):
                start, end = op.offset, min(len(new), op.offset + len(op.data))
                for sector in range(start // size, (end + size - 1) // size):
                    lo, hi = max(start, sector * size), min(end, (sector + 1) * size)
                    if lo < hi:
                        segments.setdefault(sector, []).append((lo, hi))
        for sector in sorted(segments):
            roll = rng.random()
            for lo, hi in segments[sector]:
                if roll < 0.5:
                    out[lo:hi] = new[lo:hi]
                elif roll >= 0.85:
                    out[lo:hi] = _noise(rng, hi - lo)
                # otherwise the old contents stay
    # mode "drop": the durable bytes only
    return bytes(out)


def _cut_point(op: Write, sector: int, rng: random.Random) -> int:
    """A sector boundary strictly inside the write, or its start if it spans none."""
    first = (op.offset // sector + 1) * sector
    end = op.offset + len(op.data)
    inside = list(range(first, end, sector))
    return rng.choice(inside) if inside else op.offset


class SimFile:
    """An open file of a SimFS."""

    def __init__(self, fs: SimFS, inode: Inode, path: str, write: bool) -> None:
        self._fs = fs
        self._inode = inode
        self.path = path
        self._write = write
        self._closed = False

    def size(self) -> int:
        self._fs._alive()
        return len(self._inode.data)

    def read(self, offset: int, length: int) -> bytes:
        with self._fs.guard:
            self._fs._alive()
            return bytes(self._inode.data[offset : offset + length])

    def read_into(self, offset: int, buf: memoryview) -> int:
        with self._fs.guard:
            self._fs._alive()
            data = self._inode.data[offset : offset + len(buf)]
            buf[: len(data)] = data
            return len(data)

    def write(self, offset: int, data: Data) -> None:
        with self._fs.guard:
            self._write_now(offset, bytes(data))

    def _write_now(self, offset: int, data: bytes) -> None:
        fs = self._fs
        fs._step()
        if not self._write:
            raise OSError(errno.EBADF, "file opened read-only")
        number = fs.writes
        fs.writes += 1
        if fs.eio_write_at is not None and number == fs.eio_write_at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        if fs.enospc_write_at is not None and number >= fs.enospc_write_at:
            # The disk stays full: a partial write first (as a real pwrite
            # loop may manage), then ENOSPC, and every later write fails too.
            if number == fs.enospc_write_at and fs.enospc_partial and len(data) > 1:
                self._put(offset, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._put(offset, data)

    def _put(self, offset: int, data: bytes) -> None:
        op = Write(offset, data)
        self._inode.data = _apply(self._inode.data, op)
        self._inode.pending.append(op)

    def drop_cache(self) -> None:
        """The simulated disk has no cache to drop: what is durable does not change."""

    def sync(self) -> None:
        if self._fs.sync_delay:
            # Like a real fsync, take a while without blocking other threads'
            # writes, so concurrent flushes pile up into group commits.
            time.sleep(self._fs.sync_delay)
        # Under the guard: what was written before the sync is durable after
        # it, and a write racing it from another thread is wholly before or after.
        with self._fs.guard:
            fs = self._fs
            fs._step()
            number = fs.syncs
            fs.syncs += 1
            if fs.eio_sync_at is not None and number == fs.eio_sync_at:
                # The written data is in an unknown state: it stays pending, so
                # a crash may keep, drop or garble it.
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            self._inode.durable = bytes(self._inode.data)
            self._inode.pending.clear()

    def truncate(self, length: int) -> None:
        with self._fs.guard:
            self._fs._step()
            op = Truncate(length)
            self._inode.data = _apply(self._inode.data, op)
            self._inode.pending.append(op)

    def map(self, length: int) -> Buffer:
        with self._fs.guard:
            self._fs._alive()
            # A copy: later appends never change what an existing map shows.
            return bytes(self._inode.data[:length])

    def lock(self, timeout: float) -> None:
        self._fs._alive()
        holder = self._fs.locks.get(self._inode.number)
        if holder is not None and holder is not self:
            raise LockedError("locked", f"{self.path} is held by another writer")
        self._fs.locks[self._inode.number] = self

    def identity(self) -> tuple[int, int]:
        return (self._fs.device, self._inode.number)

    def access(self) -> Access:
        return self._inode.access

    def set_access(self, access: Access) -> None:
        self._fs._alive()
        self._inode.access = access

    def close(self) -> None:
        # Closing never fails, even after a crash: it releases only memory.
        if not self._closed:
            self._closed = True
            if self._fs.locks.get(self._inode.number) is self:
                del self._fs.locks[self._inode.number]


class SimFS:
    """An in-memory file system that can crash and fail (see the module docstring)."""

    device = 4242

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        *,
        crash_at: int | None = None,
        eio_sync_at: int | None = None,
        eio_write_at: int | None = None,
        enospc_write_at: int | None = None,
        enospc_partial: bool = True,
        sync_delay: float = 0.0,
    ) -> None:
        self.inodes: dict[int, Inode] = {}
        self.names: dict[str, int] = {}
        self.durable_names: dict[str, int] = {}
        self.dir_pending: list[DirOp] = []
        self.locks: dict[int, SimFile] = {}
        self.crash_at = crash_at
        self.eio_sync_at = eio_sync_at
        self.eio_write_at = eio_write_at
        self.enospc_write_at = enospc_write_at
        self.enospc_partial = enospc_partial
        self.sync_delay = sync_delay
        self.ops = 0
        self.writes = 0
        self.syncs = 0
        self.crashed = False
        # Stores commit from several threads; the disk applies one call at a time.
        self.guard = threading.RLock()
        for path, data in (files or {}).items():
            inode = self._new_inode(bytes(data))
            inode.durable = bytes(data)
            key = _key(path)
            self.names[key] = self.durable_names[key] = inode.number

    # --- the fault clock ------------------------------------------------------

    def _alive(self) -> None:
        if self.crashed:
            raise Crash("the simulated machine is down")

    def _step(self) -> None:
        """Count one mutating operation, crashing first if this is the chosen one."""
        self._alive()
        if self.crash_at is not None and self.ops >= self.crash_at:
            self.crashed = True
            raise Crash(f"power lost before operation {self.ops}")
        self.ops += 1

    def _new_inode(self, data: bytes = b"") -> Inode:
        inode = Inode(len(self.inodes) + 1, bytearray(data))
        self.inodes[inode.number] = inode
        return inode

    # --- the FileSystem protocol ----------------------------------------------

    def open(self, path: str, *, write: bool, create: bool, mode: int = 0o666,
             exclusive: bool = False) -> FileHandle:
        self._alive()
        key = _key(path)
        number = self.names.get(key)
        if number is not None and create and exclusive:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        if number is None:
            if not create:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            self._step()
            number = self._new_inode().number
            self.inodes[number].access = Access(mode & 0o644, 0, 0)  # umask 022
            self.names[key] = number
            self.dir_pending.append(DirOp(os.path.dirname(key), "link", key, inode=number))
        return SimFile(self, self.inodes[number], path, write)

    def identity(self, path: str) -> tuple[int, int] | None:
        self._alive()
        number = self.names.get(_key(path))
        return None if number is None else (self.device, number)

    def rename(self, src: str, dst: str) -> None:
        self._step()
        s, d = _key(src), _key(dst)
        if s not in self.names:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), src)
        self.names[d] = self.names.pop(s)
        self.dir_pending.append(DirOp(os.path.dirname(d), "rename", s, target=d))

    def link(self, src: str, dst: str) -> None:
        self._step()
        s, d = _key(src), _key(dst)
        if s not in self.names:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), src)
        if d in self.names:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
        self.names[d] = self.names[s]
        self.dir_pending.append(DirOp(os.path.dirname(d), "link", d, inode=self.names[d]))

    def remove(self, path: str) -> None:
        self._step()
        key = _key(path)
        if key not in self.names:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        del self.names[key]
        self.dir_pending.append(DirOp(os.path.dirname(key), "unlink", key))

    def sync_dir(self, path: str) -> None:
        self._step()
        directory = _key(path)
        keep: list[DirOp] = []
        for op in self.dir_pending:
            if op.directory == directory:
                _apply_dir(self.durable_names, op)
            else:
                keep.append(op)
        self.dir_pending = keep

    def exists(self, path: str) -> bool:
        self._alive()
        return _key(path) in self.names

    def lexists(self, path: str) -> bool:
        return self.exists(path)  # the simulation has no symlinks

    # --- after the crash --------------------------------------------------------

    def pending_count(self) -> int:
        """The most writes and truncates one file has not made durable (sizes the torn variants)."""
        return max((len(i.pending) for i in self.inodes.values()), default=0)

    def crash_image(self, damage: Damage) -> SimFS:
        """The disk a reboot finds after a crash now, damaged as ``damage`` says."""
        rng = random.Random(f"{damage.name}/{self.ops}")
        names = dict(self.durable_names)
        if damage.mode == "keep":
            kept = len(self.dir_pending)
        elif damage.mode in ("drop", "garble"):
            kept = 0
        else:
            kept = rng.randint(0, len(self.dir_pending))
        for op in self.dir_pending[:kept]:
            _apply_dir(names, op)
        files: dict[str, bytes] = {}
        for name, number in names.items():
            inode = self.inodes[number]
            files[name] = damaged_image(inode.durable, inode.pending, damage, rng)
        return SimFS(files)

    def files(self) -> dict[str, bytes]:
        """Every file's current contents, by path (to build another disk from this one)."""
        return {name: bytes(self.inodes[number].data) for name, number in self.names.items()}

    def read_file(self, path: str) -> bytes:
        """The current contents of ``path`` (as the running system sees them)."""
        return bytes(self.inodes[self.names[_key(path)]].data)


def _apply_dir(names: dict[str, int], op: DirOp) -> None:
    if op.kind == "link":
        names[op.name] = op.inode
    elif op.kind == "unlink":
        names.pop(op.name, None)
    elif op.name in names:
        names[op.target] = names.pop(op.name)


def _key(path: str) -> str:
    return os.path.abspath(os.fspath(path))


def damage_variants(fs: SimFS, *, seeds: int = 2) -> list[Damage]:
    """The damage variants worth trying for a crash of ``fs``: the fixed ones,
    ``seeds`` random mixes, and torn prefixes at 512-byte and 4 KiB sectors."""
    out = [Damage("keep"), Damage("drop"), Damage("garble")]
    out += [Damage("mix", seed=s) for s in range(seeds)]
    pending = fs.pending_count()
    for sector in (512, 4096):
        out += [Damage("torn", sector=sector, prefix=p) for p in range(pending)]
        out += [Damage("sectors", sector=sector, seed=s) for s in range(max(1, seeds // 2))]
    return out

"""The file-system layer: every OS call memseg makes goes through here.

Tests replace ``OS_FS`` with a simulated disk (tests/faultfs.py) that crashes,
drops unsynced writes and injects EIO/ENOSPC, so this interface is kept narrow.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable
from typing import NamedTuple, Protocol

from memseg.errors import LockedError

Buffer = bytes | memoryview | mmap.mmap
# What writes accept: copies hand over views of a reused read buffer.
Data = bytes | bytearray | memoryview


class Access(NamedTuple):
    """Who may use a file: its permission bits, owner and POSIX ACL. A compaction gives
    the new file the old one's, so rewriting a private store does not open it to others."""

    mode: int
    uid: int
    gid: int
    acl: bytes | None = None  # the system.posix_acl_access attribute, if the file has one


_ACL = "system.posix_acl_access"


class FileHandle(Protocol):
    """An open file: positional reads and writes, fsync, truncate, map, lock."""

    def size(self) -> int: ...
    def read(self, offset: int, length: int) -> bytes: ...
    def read_into(self, offset: int, buf: memoryview) -> int: ...
    def write(self, offset: int, data: Data) -> None: ...
    def sync(self) -> None: ...
    # Optional, so that a caller's own handles need not have it: ``drop_cache()``, advice
    # to drop the file's cached pages (OsFile has it; compaction uses it when present).
    def truncate(self, length: int) -> None: ...
    def map(self, length: int) -> Buffer: ...
    def lock(self, timeout: float) -> None: ...
    def identity(self) -> tuple[int, int]: ...
    def access(self) -> Access: ...
    def set_access(self, access: Access) -> None: ...
    def close(self) -> None: ...


class FileSystem(Protocol):
    """Path-level operations."""

    def open(self, path: str, *, write: bool, create: bool,
             mode: int = 0o666, exclusive: bool = False) -> FileHandle: ...
    def identity(self, path: str) -> tuple[int, int] | None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def link(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def lexists(self, path: str) -> bool: ...


class OsFile:
    """A real file descriptor."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path

    def _give_up_inherited(self) -> None:
        """In a forked child: put a fresh read-only descriptor of the same file where the
        copy of the writer's was (see _WRITE_HANDLES). Reads go on working; a write fails
        with EBADF, though the store refuses it first (``Store._check_writable``)."""
        if self._fd < 0:
            return
        try:
            fresh = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self._fd)  # no /proc: no reads either, but the lock is let go
            self._fd = -1
            return
        os.dup2(fresh, self._fd, inheritable=False)  # closes the copy of the locked one
        os.close(fresh)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; returns the bytes read (fewer only at end of file)."""
        done = 0
        while done < len(buf):
            got = os.preadv(self._fd, [buf[done:]], offset + done)
            if got <= 0:
                break
            done += got
        return done

    def write(self, offset: int, data: Data) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            if written <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[written:]
            offset += written

    def sync(self) -> None:
        # fdatasync suffices: the size change is metadata fdatasync does flush.
        os.fdatasync(self._fd)

    def drop_cache(self) -> None:
        """Advise the kernel to drop the file's cached pages. Advice only: pages in use stay,
        dirty ones are first written back, and the file's contents never change."""
        advise = getattr(os, "posix_fadvise", None)
        if advise is not None:
            with contextlib.suppress(OSError):
                advise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def truncate(self, length: int) -> None:
        os.ftruncate(self._fd, length)

    def map(self, length: int) -> Buffer:
        if length == 0:
            return b""
        # mmap keeps a dup() of the descriptor it maps, and a dup shares our
        # flock: a map that outlives close() (the caller still holds arrays)
        # would keep the writer's lock. So map through a fresh, unlocked
        # descriptor of the same inode.
        proc = f"/proc/self/fd/{self._fd}"
        fd = os.open(proc if os.path.exists(proc) else self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self.identity():
                raise OSError(errno.ESTALE, "file was replaced while mapping", self.path)
            return mmap.mmap(fd, length, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def lock(self, timeout: float) -> None:
        # flock, not fcntl/lockf: POSIX record locks vanish when *any* descriptor
        # of the file is closed in this process; flock locks belong to this open
        # file description only, and also conflict within one process.
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError("locked", f"{self.path} is held by another writer") from None
                time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def identity(self) -> tuple[int, int]:
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def access(self) -> Access:
        st = os.fstat(self._fd)
        try:
            acl: bytes | None = os.getxattr(self._fd, _ACL)
        except OSError:  # none, or no extended attributes here
            acl = None
        return Access(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, acl)

    def set_access(self, access: Access) -> None:
        """Give the file ``access`` as far as this process may. Never fails: the file
        keeps the (private) mode it was created with where a change is refused."""
        st = os.fstat(self._fd)
        if (st.st_uid, st.st_gid) != (access.uid, access.gid):
            # Only root may give a file away; the group alone may still be kept when this
            # user belongs to it. Owner first: a chown may clear set-id bits the chmod
            # then restores. (EINVAL too: an owner unmapped in this user namespace.)
            for uid, gid in ((access.uid, access.gid), (-1, access.gid)):
                try:
                    os.fchown(self._fd, uid, gid)
                    break
                except OSError:
                    continue
            st = os.fstat(self._fd)
        mode = access.mode
        group_kept = st.st_gid == access.gid
        if not group_kept:
            # The file is in another group now: what the old group might do, the new one
            # may not (a 0660 store must not become writable by the compacting user's
            # group), and the old group's members count as others now: others keep only
            # what both had (a 0606 store denied its group).
            others = mode & 0o007 & (mode >> 3)
            mode = (mode & ~0o077) | others
        with contextlib.suppress(OSError):
            os.fchmod(self._fd, mode)
        if access.acl is None:
            # The directory's default ACL may have given the new file one the old lacked.
            with contextlib.suppress(OSError):
                os.removexattr(self._fd, _ACL)
        else:
            # Named users and groups, and the mask over them; its group entry means the
            # old group, so it is copied only if that group was kept.
            try:
                if not group_kept:
                    raise OSError(errno.EPERM, "the file's group changed")
                os.setxattr(self._fd, _ACL, access.acl)
            except OSError:
                with contextlib.suppress(OSError):
                    os.fchmod(self._fd, mode & ~0o077)  # nobody the ACL did not name

    def close(self) -> None:
        # Under the fork guard: a child forked between the two would take the number
        # of a closed descriptor, maybe reused by another file, for this one's.
        with _FORK_GUARD:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class OsFileSystem:
    """The real file system."""

    def open(self, path: str, *, write: bool, create: bool,
             mode: int = 0o666, exclusive: bool = False) -> FileHandle:
        """``mode`` for a file it creates, less the umask: 0o666 as open() asks, or less
        for a file that must never be readable by others, not even for a moment.
        ``exclusive``: create it, or fail if anything, a symlink too, has the name."""
        flags = os.O_RDWR if write else os.O_RDONLY
        if create:
            flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0)
        if not write:
            return _open_regular(path, flags, mode, _reader_handle, contextlib.nullcontext())
        # A fork must not copy a writer's descriptor before it is registered: the open
        # and the registration happen in one hold of the guard.
        return _open_regular(path, flags, mode, _registered, _FORK_GUARD)

    def identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def link(self, src: str, dst: str) -> None:
        """A second name for ``src``; FileExistsError if ``dst`` exists (never replaces)."""
        os.link(src, dst)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        except OSError as exc:
            # EINVAL: a directory that cannot be synced (/proc/self/fd, some file
            # systems); there is nothing to make durable there.
            if exc.errno != errno.EINVAL:
                raise
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def lexists(self, path: str) -> bool:
        """Whether anything has the name, a dangling symlink too."""
        return os.path.lexists(path)


OS_FS: FileSystem = OsFileSystem()


def resolve_path(path: str) -> str:
    """``path`` absolute, with symlinks resolved: the name of the file itself."""
    real = os.path.realpath(path)
    if not os.path.exists(real) and os.path.exists(path):
        # /proc/self/fd/N (or /dev/fd/N) of an unlinked file or a memfd: the link reads
        # "... (deleted)" or "/memfd:...", which names nothing; the link itself still opens.
        return os.path.abspath(path)
    return real


def require_regular_file(path: str) -> None:
    """OSError unless ``path`` names a regular file, checked without opening it (every
    open checks too: this is for commands that look at a file before opening it)."""
    _refuse_irregular(os.stat(path).st_mode, path)


def _refuse_irregular(st_mode: int, path: str) -> None:
    if not stat.S_ISREG(st_mode):
        raise OSError(errno.EISDIR if stat.S_ISDIR(st_mode) else errno.EINVAL,
                      "not a regular file", path)


def _wrapped(fd: int, path: str, wrap: Callable[[int, str], OsFile]) -> OsFile:
    """``wrap`` of ``fd`` once it is known to be a regular file in blocking mode; on any
    failure, interrupts included, the descriptor is closed and, for a writer (whose
    ``wrap`` registers it, under the fork guard the caller holds), its registration taken
    back, so that no fork swaps whatever file takes its number next."""
    try:
        _refuse_irregular(os.fstat(fd).st_mode, path)
        os.set_blocking(fd, True)
        return wrap(fd, path)
    except BaseException:
        try:
            if wrap is not _reader_handle:
                for f in [f for f in _WRITE_HANDLES if f._fd == fd]:
                    _WRITE_HANDLES.discard(f)
                    f._fd = -1
        finally:
            os.close(fd)
        raise


# Tries of an open, each after a blocking one found a lease broken or after the path was
# renamed over, before giving up on a file that keeps being leased or replaced.
_LEASE_TRIES = 20


def _open_regular(path: str, flags: int, mode: int, wrap: Callable[[int, str], OsFile],
                  guard: contextlib.AbstractContextManager[object]) -> OsFile:
    """``wrap`` of a descriptor of the regular file at ``path``, opened inside ``guard``;
    a FIFO, device, socket or directory is refused without being opened (unless one is
    put at the path between a writer's check and its open: see below).

    The file is first pinned with O_PATH, which opens nothing (opening a device can act:
    a tty becomes the controlling terminal, a tape rewinds; opening a FIFO for reading
    waits for a writer, forever if none comes), and its type checked. A reader then opens
    it through /proc/self/fd: the very inode checked, whatever the path names by then. A
    writer opens the path itself, with O_CREAT as asked, so the kernel's rules for
    creating in sticky directories (fs.protected_regular) apply, and checks that it got
    the inode it pinned: if not, the next try starts over (its O_RDWR open does not
    block on a FIFO, and what it opened is refused if it is not a regular file). These
    opens do not block inside the guard: a file with a lease on it (Samba's oplocks, NFS
    delegations) answers EAGAIN, and a blocking open outside the guard, closed at once,
    waits for the lease's holder to let go before the next try. A file system that
    answers EAGAIN for another reason answers that open so too, which fails."""
    if flags & os.O_EXCL:  # creates a file or fails: opens nothing that is there already
        with guard:
            return _wrapped(os.open(path, flags | os.O_CLOEXEC, mode), path, wrap)
    for _ in range(_LEASE_TRIES):
        opened = _open_pinned(path, flags, mode, wrap, guard)
        if opened is not None:
            return opened
    raise OSError(errno.EAGAIN, "the file kept being leased or replaced while it was opened",
                  path)


def _open_pinned(path: str, flags: int, mode: int, wrap: Callable[[int, str], OsFile],
                 guard: contextlib.AbstractContextManager[object]) -> OsFile | None:
    """One try of `_open_regular`: the file wrapped, or None once the lease that was in
    the way has been waited for, or when the path was found to name another file."""
    try:
        pinned = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
        pinned = -1  # made by the open below, or by someone else meanwhile: checked after
    try:
        if pinned >= 0:
            pin = os.fstat(pinned)
            _refuse_irregular(pin.st_mode, path)
        via_proc = f"/proc/self/fd/{pinned}"
        target = path if flags & os.O_CREAT or pinned < 0 or not os.path.exists(via_proc) \
            else via_proc
        with guard:
            try:
                fd = os.open(target, flags | os.O_CLOEXEC | os.O_NONBLOCK, mode)
            except BlockingIOError:
                fd = -1
            except OSError as exc:
                raise _named(exc, target, path) from None
            if fd >= 0:
                if pinned >= 0 and target == path:
                    got = os.fstat(fd)
                    if (got.st_dev, got.st_ino) != (pin.st_dev, pin.st_ino):
                        # Renamed over meanwhile (a compaction does that): the next try
                        # pins and checks the new file.
                        os.close(fd)
                        return None
                return _wrapped(fd, path, wrap)
        # A lease. Outside the guard, which every fork and every writer's open and close
        # waits for, since its holder may take its time (45 s by default) to let go: an
        # open that blocks until then, of the pinned inode, closed at once.
        wait_on = via_proc if pinned >= 0 and os.path.exists(via_proc) else path
        try:
            os.close(os.open(wait_on, (flags & ~os.O_CREAT) | os.O_CLOEXEC))
        except OSError as exc:
            raise _named(exc, wait_on, path) from None
        return None
    finally:
        if pinned >= 0:
            os.close(pinned)


def _named(exc: OSError, opened: str, path: str) -> OSError:
    """``exc`` naming ``path`` where it names the /proc/self/fd link opened instead."""
    if exc.filename == opened and opened != path:
        exc.filename = path
    return exc


# Every descriptor opened for writing (a writer's, which holds its lock, and a
# compaction's new file). A forked child gets copies of them, and an flock belongs to
# the open file description they share: a child outliving its killed parent would keep
# the file locked, and a child that went on writing would interleave its records with
# the parent's. So the child swaps its copies for read-only ones at once (O_CLOEXEC
# covers exec, not fork). _FORK_GUARD keeps a fork from landing between an open and its
# registration, and the registration before the lock is taken.
_WRITE_HANDLES: weakref.WeakSet[OsFile] = weakref.WeakSet()


def _reader_handle(fd: int, path: str) -> OsFile:
    """A reader's descriptor: nothing to register (a child may keep reading through it)."""
    return OsFile(fd, path)


def _registered(fd: int, path: str) -> OsFile:
    """A writer's descriptor, registered for the fork hook; the caller holds _FORK_GUARD."""
    f = OsFile(fd, path)
    _WRITE_HANDLES.add(f)
    return f


_FORK_GUARD = threading.Lock()


def _after_fork_in_child() -> None:
    _FORK_GUARD.release()
    for f in list(_WRITE_HANDLES):
        # One that fails must not keep the others locked.
        with contextlib.suppress(OSError):
            f._give_up_inherited()


os.register_at_fork(before=_FORK_GUARD.acquire, after_in_parent=_FORK_GUARD.release,
                    after_in_child=_after_fork_in_child)

# How often map_whole measures again before giving up.
_MAP_ATTEMPTS = 16


def map_whole(fh: FileHandle) -> tuple[int, Buffer]:
    """The file's current size and a read-only map of that many bytes.

    Readers take no lock, so a writer may cut a torn tail (SPEC section 11)
    between the size and the map, and mmap refuses a length past the end of
    the file (its only ValueError for a length that fstat gave). The file may
    have grown again by the time we look (the writer went on recording), so
    measure again and retry whatever the new size: the bytes before the newest
    commit never change, so any size measured after the cut is as good.
    """
    for _ in range(_MAP_ATTEMPTS):
        size = fh.size()
        try:
            return size, fh.map(size)
        except ValueError:
            continue
    raise OSError(errno.EAGAIN, "the file kept changing size while being mapped")


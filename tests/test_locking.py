"""One writer, many readers: locks across processes, snapshots, refresh, closing."""

from __future__ import annotations

import os
import select
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import memseg
from memseg import fs

HOLD_LOCK = textwrap.dedent("""
    import sys, time, memseg
    store = memseg.open(sys.argv[1], "a")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    store.close()
""")

TRY_LOCK = textwrap.dedent("""
    import sys, memseg
    try:
        memseg.open(sys.argv[1], "a", lock_timeout=float(sys.argv[2])).close()
        print("got")
    except memseg.LockedError:
        print("locked")
""")


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _stop(proc: subprocess.Popen[str], *, kill: bool) -> None:
    if kill:
        proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def _try_lock(path: Path, timeout: float) -> str:
    out = subprocess.run([sys.executable, "-c", TRY_LOCK, str(path), str(timeout)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_second_writer_in_another_process_is_refused(store_path: Path) -> None:
    proc = _holder(store_path, 30)
    try:
        with pytest.raises(memseg.LockedError):
            memseg.open(store_path, "a")
        assert _try_lock(store_path, 0) == "locked"
    finally:
        _stop(proc, kill=True)
    # The lock dies with its holder, even when killed.
    assert _try_lock(store_path, 0) == "got"


def test_lock_timeout_waits_for_the_holder(store_path: Path) -> None:
    proc = _holder(store_path, 0.5)
    try:
        started = time.monotonic()
        with memseg.open(store_path, "a", lock_timeout=20) as store:
            assert time.monotonic() - started > 0.1
            store.start_session(name="after-wait").end()
    finally:
        _stop(proc, kill=False)


def test_second_writer_in_the_same_process_is_refused(store_path: Path) -> None:
    with memseg.open(store_path, "a"), pytest.raises(memseg.LockedError):
        memseg.open(store_path, "a")


def test_closing_another_handle_keeps_the_writer_lock(store_path: Path) -> None:
    with memseg.open(store_path, "a") as writer:
        writer.start_session(name="s").end()
        memseg.open(store_path).close()  # a reader opening and closing the same file
        assert _try_lock(store_path, 0) == "locked"


def test_lock_is_released_even_while_arrays_are_held(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store, store.start_session(name="s") as rec:
        rec.record("k", "v", ts_ns=5)
    store = memseg.open(store_path, "a")
    ts = store.session("s").actions.ts_ns
    store.close()  # must not raise although `ts` still views the map
    assert list(ts) == [5]
    memseg.open(store_path, "a").close()  # and the lock is free again


def test_reader_snapshot_is_fixed_until_refresh(store_path: Path) -> None:
    with memseg.open(store_path, "a") as writer:
        rec = writer.start_session(name="live")
        rec.record("k", "first")
        rec.flush()
        with memseg.open(store_path) as reader:
            before = reader.session("live")
            ts_before = before.actions.ts_ns
            for i in range(5):
                rec.record("k", f"more {i}")
                rec.flush()
            assert reader.session("live").info.action_count == 1
            assert len(before.actions) == 1 and len(ts_before) == 1
            reader.refresh()
            assert reader.session("live").info.action_count == 6
            assert [a.value() for a in reader.session("live").actions][-1] == "more 4"
            assert len(before.actions) == 1  # old Session objects keep their snapshot


def test_read_only_file_opens_for_reading(store_path: Path) -> None:
    with memseg.open(store_path, "a") as store:
        store.start_session(name="s").end()
    before = store_path.read_bytes(), store_path.stat().st_mtime_ns
    os.chmod(store_path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        with memseg.open(store_path) as reader:
            assert [i.name for i in reader.sessions()] == ["s"]
            with pytest.raises(memseg.ReadOnlyError):
                reader.start_session()
    finally:
        os.chmod(store_path, 0o644)
    assert (store_path.read_bytes(), store_path.stat().st_mtime_ns) == before


def test_use_after_close_is_a_clear_error(store_path: Path) -> None:
    store = memseg.open(store_path, "a")
    rec = store.start_session()
    rec.end()
    with pytest.raises(memseg.ClosedError):
        rec.record("k", "v")
    store.close()
    with pytest.raises(memseg.ClosedError):
        store.sessions()


_FORKING_WRITER = textwrap.dedent("""
    import os, sys, time, memseg
    path, marker = sys.argv[1], sys.argv[2]
    store = memseg.open(path, "a")
    rec = store.start_session(name="s")
    rec.record("k", "parent")
    rec.flush()
    pid = os.fork()
    if pid == 0:  # a helper process that happens to inherit the store
        seen = [a.value() for a in store.session("s").actions]  # reading still works
        def record_and_flush():
            rec.record("k", "child")
            rec.flush()
        outcome = str(seen)
        for attempt in (store.compact, record_and_flush):
            try:
                attempt()
                outcome += " wrote"
            except memseg.WriteFailedError:
                outcome += " refused"
        try:  # closing the copy writes nothing, so it does not fail either
            store.close()
            outcome += " closed"
        except memseg.MemsegError as exc:
            outcome += f" close failed: {exc.reason}"
        with open(marker, "w") as f:
            f.write(outcome)
        time.sleep(60)
        os._exit(0)
    print(pid, flush=True)
    time.sleep(60)
""")


def test_a_forked_child_neither_keeps_the_lock_nor_writes(tmp_path: Path) -> None:
    """A child forked by the writer shared its locked descriptor: after a kill -9 of the
    writer the file stayed locked as long as the child lived. At the fork the child now
    swaps its copy for a read-only descriptor: its inherited store reads, and refuses
    to write, compaction included (a child's compaction renamed a new file over the
    parent's store, and the parent's later commits went to the replaced inode). Closing
    the inherited store in the child writes nothing, and so does not raise."""
    path, marker = tmp_path / "s.mseg", tmp_path / "child"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen([sys.executable, "-c", _FORKING_WRITER, str(path), str(marker)],
                              env=env, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    child = int(writer.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.kill()
        writer.wait()
        assert marker.read_text() == "['parent'] refused refused closed"
        with memseg.open(path, "a") as store:  # the child still runs; the lock is free
            assert [a.value() for a in store.session("s").actions] == ["parent"]
    finally:
        os.kill(child, 9)
        writer.stdout.close()  # the child held it open too


_LEASE_HOLDER = textwrap.dedent("""
    import fcntl, os, select, signal, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    slow = sys.argv[2] == "slow"
    def broken(*_):  # as Samba or an NFS server does: give the lease up when asked
        if slow:  # tell the test, then hold on until it says to let go (or 20 s pass)
            print("broken", flush=True)
            select.select([sys.stdin.fileno()], [], [], 20)
            print("released", flush=True)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    signal.signal(signal.SIGIO, broken)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        print("unsupported", exc, flush=True)
        sys.exit(0)
    print("taken", flush=True)
    time.sleep(60)
""")


def test_a_writer_waits_for_a_lease_to_be_broken(tmp_path: Path) -> None:
    """An open that does not block (once used to refuse FIFOs) fails at once with EAGAIN
    on a file another process holds a lease on, as Samba's oplocks and NFS delegations
    are; a writer must wait for the lease holder to let go, as open() does."""
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a") as store, store.start_session(name="s") as rec:
        rec.record("k", "v")
    holder = subprocess.Popen([sys.executable, "-c", _LEASE_HOLDER, str(path), "quick"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        said = holder.stdout.readline()
        if not said.startswith("taken"):
            pytest.skip(f"no file leases here: {said.strip()}")
        with memseg.open(path, "a") as store:
            assert store.session("s").actions[0].value() == "v"
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_waiting_for_a_lease_holds_up_no_other_writer(tmp_path: Path) -> None:
    """A writer waiting for a lease to be broken once did so holding the lock every
    writer's open and close and every fork takes: an unrelated store could not be
    opened or closed until the lease holder let go (up to 45 s)."""
    leased, other = tmp_path / "leased.mseg", tmp_path / "other.mseg"
    with memseg.open(leased, "a") as store, store.start_session(name="s") as rec:
        rec.record("k", "v")
    holder = subprocess.Popen([sys.executable, "-c", _LEASE_HOLDER, str(leased), "slow"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    opened: list[memseg.Store] = []
    waiter = threading.Thread(target=lambda: opened.append(memseg.open(leased, "a")))
    try:
        said = holder.stdout.readline()
        if not said.startswith("taken"):
            pytest.skip(f"no file leases here: {said.strip()}")
        waiter.start()
        assert holder.stdout.readline().startswith("broken")  # the waiter is waiting now
        with memseg.open(other, "a") as store, store.start_session(name="o") as rec:
            rec.record("k", "v")
        # Opened and closed while the lease is still held: the holder has not let go.
        assert not select.select([holder.stdout], [], [], 0)[0], holder.stdout.readline()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().startswith("released")
        waiter.join(30)
        assert opened and opened[0].session("s").actions[0].value() == "v"
    finally:
        for store in opened:
            store.close()
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()


def test_a_socket_is_refused_without_being_opened(tmp_path: Path) -> None:
    """Anything but a regular file is refused before it is opened: opening a device can act
    (a tty becomes the controlling terminal, a tape rewinds). A socket shows it: opened,
    it fails with ENXIO instead."""
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        for mode in ("r", "a"):
            with pytest.raises(OSError, match="not a regular file"):
                memseg.open(path, mode)


def test_a_fifo_swapped_in_while_waiting_for_a_lease_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait for a lease once ended in a blocking open of the path, which a FIFO put
    there meanwhile hung for good. The wait opens the inode pinned and checked, and the
    next try pins and checks the path again."""
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a") as store, store.start_session(name="s") as rec:
        rec.record("k", "v")
    real_open, events = os.open, list[str]()

    def leased_once(p: str, flags: int, mode: int = 0o777) -> int:
        if p.startswith("/proc/self/fd/") and flags & os.O_NONBLOCK and not events:
            events.append("lease")
            raise BlockingIOError(11, "a lease")
        if p.startswith("/proc/self/fd/") and not flags & os.O_NONBLOCK and events == ["lease"]:
            events.append("swap")  # while waiting for the lease
            path.rename(tmp_path / "moved.mseg")
            os.mkfifo(path)
        return real_open(p, flags, mode)

    monkeypatch.setattr("memseg.fs.os.open", leased_once)
    with pytest.raises(OSError, match="not a regular file"):
        memseg.open(path, "r")
    assert events == ["lease", "swap"]


def test_an_interrupt_while_registering_a_writer_closes_its_descriptor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.mseg"
    path.write_bytes(b"")
    before = set(os.listdir("/proc/self/fd"))

    real_registered, held = fs._registered, []

    def interrupted(fd: int, p: str) -> fs.OsFile:
        held.append(real_registered(fd, p))  # kept alive, as a traceback would keep it
        raise KeyboardInterrupt  # just after the registration

    monkeypatch.setattr(fs, "_registered", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fs.OS_FS.open(str(path), write=True, create=False)
    assert set(os.listdir("/proc/self/fd")) == before
    # Nor is it left registered: a fork would swap whatever file reuses its number.
    assert held and held[0] not in fs._WRITE_HANDLES


def test_eagain_that_is_no_lease_fails_at_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A FUSE server or a fanotify listener may answer every open with EAGAIN: the wait
    for a lease is a blocking open, which then fails as well, naming the file."""
    path = tmp_path / "s.mseg"
    path.write_bytes(b"")
    real_open = os.open

    def refused(p: str, flags: int, mode: int = 0o777) -> int:
        if p.startswith("/proc/self/fd/") or (p == str(path) and flags & os.O_NONBLOCK):
            raise BlockingIOError(11, "Resource temporarily unavailable", p)
        return real_open(p, flags, mode)

    monkeypatch.setattr("memseg.fs.os.open", refused)
    for mode in ("r", "a"):
        with pytest.raises(BlockingIOError, match="temporarily unavailable") as raised:
            memseg.open(path, mode)
        assert raised.value.filename == str(path)


def test_an_exclusive_create_over_any_name_says_it_exists(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    for target in (tmp_path / "dir", tmp_path / "loop", Path("/dev/null")):
        link = tmp_path / f"link-{target.name}"
        link.symlink_to(target)
        with pytest.raises(FileExistsError):
            fs.OS_FS.open(str(link), write=True, create=True, mode=0o600, exclusive=True)


def test_a_writer_opens_an_existing_file_by_its_path_with_o_creat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel refuses an O_CREAT open of another user's file in a sticky directory
    such as /tmp (fs.protected_regular, on by default with systemd). Opening the pinned
    inode through /proc/self/fd without O_CREAT once bypassed that, and a store someone
    planted in /tmp took this user's records; a writer opens the path with O_CREAT."""
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a"):
        pass
    real_open, opens = os.open, list[tuple[str, int]]()

    def recorded(p: str, flags: int, mode: int = 0o777) -> int:
        opens.append((p, flags))
        return real_open(p, flags, mode)

    monkeypatch.setattr("memseg.fs.os.open", recorded)
    fs.OS_FS.open(str(path), write=True, create=True).close()
    writes = [(p, f) for p, f in opens if f & os.O_ACCMODE == os.O_RDWR]
    assert writes == [(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK)]


def test_a_file_renamed_over_while_a_writer_opens_it_is_opened_anew(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction renames its new file over the path; a writer opening the path just
    then finds another inode than the one it pinned, and tries again on the new one."""
    path, other = tmp_path / "s.mseg", tmp_path / "new.mseg"
    with memseg.open(path, "a"):
        pass
    with memseg.open(other, "a") as store, store.start_session(name="new") as rec:
        rec.record("k", "v")
    real_open, renamed = os.open, list[str]()

    def renamed_once(p: str, flags: int, mode: int = 0o777) -> int:
        if p == str(path) and flags & os.O_CREAT and not renamed:
            renamed.append(p)
            os.rename(other, path)
        return real_open(p, flags, mode)

    monkeypatch.setattr("memseg.fs.os.open", renamed_once)
    with memseg.open(path, "a") as store:
        assert [i.name for i in store.sessions()] == ["new"]
    assert renamed

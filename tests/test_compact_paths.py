"""Compaction replaces the file the store was opened on, keeping who may read it."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest

import memseg
from memseg.format import COMPACT_SUFFIX
from memseg.fs import OS_FS, FileHandle
from tests.retention_support import record_session


def _store_with_archived(path: Path | str) -> None:
    with memseg.open(path, "a", sync="none") as store:
        record_session(store, "keep", actions=5)
        record_session(store, "old", actions=5)
        store.archive(["old"])


def _names(path: Path | str) -> list[str | None]:
    with memseg.open(path) as store:
        return sorted(i.name for i in store.sessions())  # type: ignore[type-var]


def test_compacting_through_a_symlink_rewrites_its_target(tmp_path: Path) -> None:
    real, link = tmp_path / "real.mseg", tmp_path / "current.mseg"
    _store_with_archived(real)
    link.symlink_to("real.mseg")
    memseg.compact(link)
    with memseg.open(link, "a") as store:
        record_session(store, "after", actions=3)
    assert link.is_symlink()
    assert _names(real) == _names(link) == ["after", "keep"]


def test_a_relative_path_still_names_the_store_after_chdir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here, elsewhere = tmp_path / "a", tmp_path / "b"
    here.mkdir()
    elsewhere.mkdir()
    (elsewhere / "agent.mseg").write_bytes(b"someone else's file\n")
    monkeypatch.chdir(here)
    store = memseg.open("agent.mseg", "a")
    try:
        record_session(store, "keep", actions=5)
        record_session(store, "old", actions=5)
        store.archive(["old"])
        monkeypatch.chdir(elsewhere)
        store.compact()
        record_session(store, "after", actions=3)
    finally:
        store.close()
    assert (elsewhere / "agent.mseg").read_bytes() == b"someone else's file\n"
    assert _names(here / "agent.mseg") == ["after", "keep"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_compaction_keeps_the_file_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "private.mseg"
    _store_with_archived(path)
    os.chmod(path, mode)
    before = path.stat()
    memseg.compact(path)
    after = path.stat()
    assert after.st_ino != before.st_ino  # a new file really replaced it
    assert stat.S_IMODE(after.st_mode) == mode
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert _names(path) == ["keep"]


def test_the_compacted_copy_is_private_from_the_moment_it_exists(tmp_path: Path) -> None:
    """The temporary file was created 0644 and made 0600 only later: another user could
    open it in between and keep a descriptor that reads the whole private store."""
    path = tmp_path / "private.mseg"
    _store_with_archived(path)
    os.chmod(path, 0o600)
    created: list[int] = []

    class Watching:
        def open(self, name: str, *, write: bool, create: bool, mode: int = 0o666,
                 exclusive: bool = False) -> FileHandle:
            fh = OS_FS.open(name, write=write, create=create, mode=mode, exclusive=exclusive)
            if name.endswith(COMPACT_SUFFIX):
                created.append(stat.S_IMODE(os.stat(name).st_mode))
            return fh

        def __getattr__(self, attr: str) -> Any:
            return getattr(OS_FS, attr)

    memseg.compact(path, fs=Watching())
    assert created and all(mode & 0o077 == 0 for mode in created), [oct(m) for m in created]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


_ALICE, _BOB, _DEVS, _BOBS_GROUP = 41000, 41001, 42000, 42001


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")
@pytest.mark.parametrize(("bob_in_devs", "before", "after"), [
    (True, 0o660, 0o660),  # the group is kept
    (False, 0o666, 0o606),  # the group cannot be: its rights go to no other group
    (False, 0o606, 0o600),  # devs were denied: as others now, they still are
])
def test_compaction_by_another_user_never_opens_the_store_to_a_new_group(
        bob_in_devs: bool, before: int, after: int) -> None:
    """Alice's store is alice:devs 0660; Bob, who may write it, compacts it. Bob cannot
    give the file to Alice; the group was dropped with the owner, and the 0660 then
    applied to Bob's own group. Now the group is kept where Bob belongs to it, and the
    group's rights are withheld where it cannot be."""
    # Not under pytest's tmp_path: its parents are private to root.
    shared = Path(tempfile.mkdtemp(prefix="memseg-shared-"))
    os.chmod(shared, 0o777)
    path = shared / "shared.mseg"
    _store_with_archived(path)
    os.chown(path, _ALICE, _DEVS)
    os.chmod(path, before)
    pid = os.fork()
    if pid == 0:  # Bob
        code = 1
        try:
            os.setgroups([_DEVS] if bob_in_devs else [])
            os.setgid(_BOBS_GROUP)
            os.setuid(_BOB)
            memseg.compact(path)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    st = path.stat()
    assert st.st_uid == _BOB  # only root may give a file away
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (_DEVS if bob_in_devs else _BOBS_GROUP, after)
    assert _names(path) == ["keep"]
    shutil.rmtree(shared)


def test_a_store_reached_through_its_descriptor_opens(tmp_path: Path) -> None:
    """/proc/self/fd/N of an unlinked file resolves to a name ending "(deleted)", which
    names nothing: such a path is kept as given. A new store there is made too (its
    directory, /proc/self/fd, cannot be synced)."""
    path = tmp_path / "gone.mseg"
    _store_with_archived(path)
    fd = os.open(path, os.O_RDONLY)
    empty = os.memfd_create("store")
    try:
        path.unlink()
        assert _names(f"/proc/self/fd/{fd}") == ["keep", "old"]
        _store_with_archived(f"/proc/self/fd/{empty}")
        assert _names(f"/proc/self/fd/{empty}") == ["keep", "old"]
    finally:
        os.close(fd)
        os.close(empty)


def test_a_failed_export_into_a_dangling_symlink_keeps_the_link(tmp_path: Path) -> None:
    """The export created the link's target, then on failure removed the link instead."""
    src, target, link = tmp_path / "src.mseg", tmp_path / "target.mseg", tmp_path / "archive.mseg"
    with memseg.open(src, "a") as store:
        record_session(store, "s0", actions=20)
        record_session(store, "s1", actions=20)
    with memseg.open(src) as store:
        last_block = int(store.session("s1").actions.refs["offset"][-1])
    data = bytearray(src.read_bytes())
    data[last_block + 200] ^= 0xFF  # inside the block's payload bytes
    src.write_bytes(bytes(data))
    link.symlink_to(target)
    with memseg.open(src) as store, pytest.raises(memseg.CorruptError):
        store.export(["s0", "s1"], link)
    assert link.is_symlink() and not target.exists()


def test_a_symlink_left_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    """A dangling symlink at path + COMPACT_SUFFIX was kept (exists() is False for it) and
    followed: the compacted store went to its target and the link replaced the store."""
    path, elsewhere = tmp_path / "s.mseg", tmp_path / "elsewhere.mseg"
    _store_with_archived(path)
    Path(str(path) + COMPACT_SUFFIX).symlink_to(elsewhere)
    memseg.compact(path)
    assert not path.is_symlink() and not elsewhere.exists()
    assert not Path(str(path) + COMPACT_SUFFIX).is_symlink()
    assert _names(path) == ["keep"]


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A system.posix_acl_access value: version 2, then (tag, permissions, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_compaction_keeps_the_files_acl(tmp_path: Path) -> None:
    """Only the mode was copied: the ACL's named users lost access, and its mask became
    the group's permissions."""
    path = tmp_path / "s.mseg"
    _store_with_archived(path)
    anyone, user_obj, user, group_obj, mask, other = 0xFFFFFFFF, 1, 2, 4, 0x10, 0x20
    acl = _acl([(user_obj, 6, anyone), (user, 6, 50203), (group_obj, 4, anyone),
                (mask, 6, anyone), (other, 0, anyone)])
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")
    mode = stat.S_IMODE(path.stat().st_mode)
    memseg.compact(path)
    assert os.getxattr(path, "system.posix_acl_access") == acl
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_directory_default_acl_does_not_reach_the_compacted_copy(tmp_path: Path) -> None:
    """A default ACL given to the directory after the store was made would have given the
    compacted copy named users the old file did not have."""
    path = tmp_path / "s.mseg"
    _store_with_archived(path)
    anyone, user_obj, user, group_obj, mask, other = 0xFFFFFFFF, 1, 2, 4, 0x10, 0x20
    try:
        os.setxattr(tmp_path, "system.posix_acl_default",
                    _acl([(user_obj, 7, anyone), (user, 7, 50203), (group_obj, 5, anyone),
                          (mask, 7, anyone), (other, 5, anyone)]))
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")
    mode = stat.S_IMODE(path.stat().st_mode)
    memseg.compact(path)
    assert "system.posix_acl_access" not in os.listxattr(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode

"""Compaction replaces the file the store was opened on, keeping who may read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import memseg
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

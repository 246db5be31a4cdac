"""Bugs the crash, fault and fuzz suites found in memseg core, each kept as a scenario."""

from __future__ import annotations

import errno
import uuid

import pytest

import memseg
from memseg.format import FILE_HEADER
from tests.faultfs import SimFS

PATH = "/sim/regression.mseg"


def test_creation_cut_after_the_magic_is_recreated_by_the_next_writer() -> None:
    """ENOSPC while writing a new file's header left 32 bytes; every later open("a") failed
    with short_header although the file could never have held a commit."""
    fs = SimFS(enospc_write_at=0)
    with pytest.raises(OSError) as info:
        memseg.open(PATH, "a", fs=fs)
    assert info.value.errno == errno.ENOSPC
    assert 8 < len(fs.read_file(PATH)) < FILE_HEADER.size
    fs.enospc_write_at = None
    with memseg.open(PATH, "a", fs=fs) as store:
        store.start_session(session_id=uuid.UUID(int=1)).end()
    with memseg.open(PATH, "r", fs=fs) as reader:
        assert [s.id for s in reader.sessions()] == [uuid.UUID(int=1)]

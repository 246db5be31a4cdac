"""A file cut at any byte opens at exactly the commits that end before the cut."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import memseg
from memseg.format import FILE_HEADER, MAGIC, RECORD_HEADER, TRAILER, TRAILER_RECORD_SIZE


def _state(store: memseg.Store) -> list[tuple[str | None, str, int, list[object]]]:
    out = []
    for info in store.sessions():
        actions = store.session(info.id).actions
        out.append((info.name, str(info.state), info.action_count, [a.value() for a in actions]))
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, object]]]:
    """A small file with several commits, and the state a reader sees at each commit's end."""
    path = tmp_path_factory.mktemp("cut") / "s.mseg"
    with memseg.open(path, "a") as store:
        a = store.start_session(name="a", meta={"m": 1})
        a.record("msg", "hello", ts_ns=1)
        a.flush()
        b = store.start_session(name="b")
        b.record("tool", {"x": 1}, result={"ok": True}, ts_ns=2)
        b.checkpoint({"c": 1}, ts_ns=3)
        a.record("msg", "world" * 30, ts_ns=4)
        a.end()
        b.record("tool", b"\x00\x01", ts_ns=5)
        b.flush()
    states: list[tuple[int, object]] = []
    with memseg.open(path) as reader:
        commit = reader.commit
        assert commit is not None
        ends = []
        # Walk the trailer chain back to list every commit's end offset.
        data = path.read_bytes()
        trailer = commit.trailer_offset
        while trailer:
            ends.append(trailer + TRAILER_RECORD_SIZE)
            _toc, _seq, trailer, *_ = TRAILER.unpack_from(data, trailer + RECORD_HEADER.size)
    for end in sorted(ends):
        prefix = path.parent / f"prefix-{end}.mseg"
        prefix.write_bytes(data[:end])
        with memseg.open(prefix) as reader:
            states.append((end, _state(reader)))
    assert len(states) >= 4
    return path, states


def test_every_cut_shows_the_last_commit_before_it(
    history: tuple[Path, list[tuple[int, object]]], tmp_path: Path
) -> None:
    path, states = history
    data = path.read_bytes()
    cut_path = tmp_path / "cut.mseg"
    for cut in range(len(data) + 1):
        cut_path.write_bytes(data[:cut])
        if cut < len(MAGIC) or cut == 0:
            with pytest.raises(memseg.NotMemsegError):
                memseg.open(cut_path)
            continue
        if cut < FILE_HEADER.size:
            with pytest.raises(memseg.CorruptError) as err:
                memseg.open(cut_path)
            assert err.value.reason == "short_header"
            continue
        expected: object = []
        committed_end = FILE_HEADER.size
        for end, state in states:
            if end <= cut:
                expected, committed_end = state, end
        with memseg.open(cut_path) as reader:
            assert _state(reader) == expected, cut
            assert reader.tail_bytes == cut - committed_end


def test_writer_cuts_the_torn_tail_and_continues(
    history: tuple[Path, list[tuple[int, object]]], tmp_path: Path
) -> None:
    path, states = history
    end, state = states[-2]
    torn = tmp_path / "torn.mseg"
    shutil.copy(path, torn)
    with open(torn, "r+b") as f:
        f.truncate(end + 100)  # a commit that died part way
    with memseg.open(torn, "a") as store:
        assert os.path.getsize(torn) == end
        assert _state(store) == state
        store.start_session(name="after").end()
    with memseg.open(torn) as reader:
        assert reader.tail_bytes == 0
        assert [i.name for i in reader.sessions()][-1] == "after"


def test_header_only_file_is_an_empty_store(store_path: Path) -> None:
    memseg.open(store_path, "a").close()
    assert store_path.stat().st_size == FILE_HEADER.size
    with memseg.open(store_path) as reader:
        assert reader.sessions() == [] and reader.commit is None

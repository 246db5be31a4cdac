"""The public API where its documentation was ahead of it: each case once failed.

Negative block indices, str-subclass keys, lone surrogates, a None snapshot, search's
arguments, a sweep that leaves its archive file alone, and a NaN lock timeout.
"""

from __future__ import annotations

import enum
import errno
import os
import re
from pathlib import Path

import pytest

import memseg


class Tool(enum.StrEnum):
    CMD = "cmd"


def _two_blocks(path: Path) -> None:
    with memseg.open(path, "a") as store, store.start_session(name="a") as rec:
        rec.record("tool_call", {"cmd": "pytest -x"})
        rec.flush()
        rec.record("message", "pytest passed")
        rec.flush()


def test_a_negative_block_index_counts_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    _two_blocks(path)
    with memseg.open(path) as store:
        actions = store.session("a").actions
        assert len(actions.refs) == 2
        assert actions.block(-1).first_seq == actions.block(1).first_seq == 1
        assert actions.block(-2).first_seq == 0
        for index in (2, -3):
            with pytest.raises(IndexError):
                actions.block(index)
    assert memseg.verify(path).ok


def test_str_subclass_keys_are_stored_as_their_text(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    value = {Tool.CMD: [{Tool.CMD: 1}]}
    with memseg.open(path, "a") as store:
        rec = store.start_session(name="a", meta={Tool.CMD: "x"})
        rec.record("tool_call", value, result=value)
        rec.checkpoint(value)
        rec.end()
    with memseg.open(path) as store:
        s = store.session("a")
        plain = {"cmd": [{"cmd": 1}]}
        assert s.actions[0].value() == s.actions[0].result_value() == plain
        assert s.checkpoints[0].value() == plain
        assert s.info.meta == {"cmd": "x"}
        assert type(next(iter(s.info.meta))) is str


@pytest.mark.parametrize("value", [{1: 2}, {"a": {(1, 2): 3}}, {"a": [{Tool.CMD: {None: 1}}]}])
def test_keys_that_are_not_strings_are_still_refused(tmp_path: Path, value: object) -> None:
    with (memseg.open(tmp_path / "s.mseg", "a") as store, store.start_session() as rec,
          pytest.raises(TypeError)):
        rec.record("k", value)


@pytest.mark.parametrize("value", ["\ud800", {"t": "\udfff"}, ["ok", "\ud83d"]])
def test_a_lone_surrogate_is_a_type_error_wherever_it_is(tmp_path: Path, value: object) -> None:
    with memseg.open(tmp_path / "s.mseg", "a") as store, store.start_session(name="a") as rec:
        with pytest.raises(TypeError, match="UTF-8"):
            rec.record("k", value)
        with pytest.raises(TypeError, match="UTF-8"):
            rec.record("k", "fine", result=value)
        rec.record("k", "kept")
    with memseg.open(tmp_path / "s.mseg") as store:  # the refusals left nothing behind
        assert [a.value() for a in store.session("a").actions] == ["kept"]


def test_a_none_snapshot_reads_back_as_none(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    with memseg.open(path, "a") as store, store.start_session(name="a") as rec:
        assert rec.checkpoint(None) == 0
        rec.record("k", 1)
        assert rec.checkpoint(None, flush=False) == 1
    with memseg.open(path) as store:
        checkpoints = store.session("a").checkpoints
        assert [(c.at_seq, c.value()) for c in checkpoints] == [(0, None), (1, None)]


def test_search_takes_bytes_and_single_keys_and_checks_its_arguments_when_called(
        tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    _two_blocks(path)
    by_str = [(h.seq, h.part) for h in memseg.search(path, "pytest")]
    assert by_str == [(0, "payload"), (1, "payload")]
    assert [(h.seq, h.part) for h in memseg.search(path, b"pytest")] == by_str
    # One session or one kind alone, as archive() takes one key.
    assert [h.seq for h in memseg.search(path, "pytest", sessions="a")] == [0, 1]
    assert [h.seq for h in memseg.search(path, "pytest", kinds="tool_call")] == [0]
    assert [h.seq for h in memseg.search(path, "pytest", kinds=["message"])] == [1]
    # Refused by the call itself, before any iteration.
    with pytest.raises(TypeError, match="str or bytes"):
        memseg.search(path, 42)  # type: ignore[arg-type]
    with pytest.raises(re.error):
        memseg.search(path, "(", regex=True)


def test_a_sweep_that_leaves_its_archive_alone_reports_its_size(tmp_path: Path) -> None:
    """archive_bytes_after is None only when the sweep appended to the archive file."""
    path, archive = tmp_path / "s.mseg", tmp_path / "old.mseg"
    with memseg.open(archive, "a") as a, a.start_session(name="old") as rec:
        rec.record("k", 1)
    size = os.path.getsize(archive)
    with memseg.open(path, "a") as store:
        with store.start_session(name="fresh") as rec:
            rec.record("k", 1)
        for dry_run in (True, False):
            report = store.sweep(30, archive_to=archive, dry_run=dry_run)
            assert report.exported == ()
            assert report.archive_bytes_before == report.archive_bytes_after == size
        # Due sessions appended without a cap: the size after is not computed.
        report = store.sweep(0, archive_to=archive)
        assert len(report.exported) == 1 and report.archive_bytes_after is None
    assert os.path.getsize(archive) > size


@pytest.mark.parametrize("timeout", [float("nan"), -1.0])
def test_a_lock_timeout_must_be_a_number_of_seconds(tmp_path: Path, timeout: float) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        memseg.open(tmp_path / "s.mseg", "a", lock_timeout=timeout)
    assert not (tmp_path / "s.mseg").exists()


def test_search_refuses_kinds_and_sessions_of_the_wrong_type_when_called(tmp_path: Path) -> None:
    path = tmp_path / "s.mseg"
    _two_blocks(path)
    for kwargs in ({"kinds": b"tool_call"}, {"kinds": [b"tool_call"]}, {"sessions": [5]}):
        with pytest.raises(TypeError):
            memseg.search(path, "pytest", **kwargs)
    with pytest.raises(TypeError, match="UTF-8"):
        memseg.search(path, "\udcff")


def test_creating_in_a_missing_folder_names_the_path_given(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "x.mseg"
    with pytest.raises(FileNotFoundError) as caught:
        memseg.open(path, "a")
    assert caught.value.filename == str(path)  # not the temporary name memseg creates through
    assert not path.parent.exists()


def test_an_error_that_is_not_about_the_folder_keeps_the_name_that_failed(tmp_path: Path) -> None:
    # A legal name, too long once the temporary suffix is added: the error must name
    # what was too long, not blame the path the caller gave.
    path = tmp_path / ("x" * 245)
    with pytest.raises(OSError) as caught:
        memseg.open(path, "a")
    assert caught.value.errno == errno.ENAMETOOLONG
    assert caught.value.filename != str(path) and str(caught.value.filename).endswith(".create-tmp")


def test_creating_under_a_symlink_loop_names_the_path_given(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    path = loop / "x.mseg"
    with pytest.raises(OSError) as caught:
        memseg.open(path, "a")
    assert caught.value.errno == errno.ELOOP
    assert caught.value.filename == str(path)

"""Work that must not be repeated per key: counted here, never timed.

Looking up K sessions by name once scanned every session per name, so archiving or
exporting by name was quadratic (3.5 s for 4,000 names among 40,000 sessions), and the
command line listed every session again for each id prefix it resolved.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import memseg
import memseg.retention
import memseg.toc
import memseg.view
from memseg.cli_common import UsageError, resolve_sessions


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


def _named_sessions(path: Path, n: int) -> list[str]:
    names = [f"run-{i}" for i in range(n)]
    with memseg.open(path, "a", sync="none") as store:
        for name in names:
            with store.start_session(name=name) as rec:
                rec.record("k", name)
    return names


def test_archiving_by_many_names_indexes_the_names_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.mseg"
    names = _named_sessions(path, 40)
    calls = _counting(monkeypatch, memseg.retention, "name_index")
    with memseg.open(path, "a") as store:
        assert store.archive(names[::2]) == 20
        assert len(calls) == 1
        states = {i.name: i.state for i in store.sessions()}
    assert [n for n in names if states[n] == "archived"] == names[::2]


def test_a_reader_indexes_names_once_per_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.mseg"
    names = _named_sessions(path, 30)
    calls = _counting(monkeypatch, memseg.view, "name_index")
    with memseg.open(path) as store:
        assert [store.session(n).actions[0].value() for n in names] == names
        store.session(str(store.session(names[0]).info.id))  # an id needs no index
        assert len(calls) == 1
        with pytest.raises(KeyError):
            store.session("no-such-run")
        assert len(calls) == 1


class _Listing:
    """A reader whose lookups all miss, counting how often it lists its sessions."""

    def __init__(self, ids: list[uuid.UUID]) -> None:
        self.ids = ids
        self.listed = 0

    def session(self, key: str) -> Any:
        raise KeyError(key)

    def sessions(self) -> list[Any]:
        self.listed += 1
        return [_Info(i) for i in self.ids]


class _Info:
    def __init__(self, sid: uuid.UUID) -> None:
        self.id = sid
        self.name: str | None = None


def test_the_command_line_lists_sessions_once_for_many_id_prefixes() -> None:
    ids = [uuid.uuid4() for _ in range(50)]
    reader = _Listing(ids)
    assert resolve_sessions(reader, [str(i)[:8] for i in ids], "f.mseg") == ids  # type: ignore[arg-type]
    assert reader.listed == 1
    with pytest.raises(UsageError, match="no session"):
        resolve_sessions(reader, ["zzzz"], "f.mseg")  # type: ignore[arg-type]


def _listing(store: memseg.Store) -> list[tuple[str | None, str, int]]:
    return [(i.name, str(i.state), i.action_count) for i in store.sessions()]


def test_a_polling_reader_decodes_only_new_toc_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """refresh() decoded every TOC record again, changed or not: 675 ms per poll of an
    unchanged file with 100,000 sessions. Committed records never change, so only new
    ones are decoded; a record is reused only if its bytes are the same, which also
    covers a file replaced by a compaction."""
    path = tmp_path / "s.mseg"
    names = _named_sessions(path, 30)
    decodes = _counting(monkeypatch, memseg.toc, "decode_toc")
    with memseg.open(path) as reader, memseg.open(path, "a") as writer:
        opened = len(decodes)
        assert opened >= 1
        for _ in range(3):
            reader.refresh()
        assert len(decodes) == opened  # nothing changed: nothing decoded
        with writer.start_session(name="new") as rec:
            rec.record("k", "new")
        reader.refresh()
        assert 1 <= len(decodes) - opened < opened + 1
        assert reader.session("new").actions[0].value() == "new"
        assert _listing(reader) == _listing(writer)
        writer.archive(names[:10])
        writer.compact()  # a new file at the same path: offsets now hold other records
        reader.refresh()
        assert _listing(reader) == _listing(writer)
        assert len(reader.sessions()) == 21
        with memseg.open(path) as fresh:
            assert _listing(reader) == _listing(fresh)

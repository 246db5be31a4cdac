"""Search at the edges of a block's blob: patterns that look past the bytes they match,
patterns that match the empty string, and the block references a session hands out."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import memseg
from memseg.cli import main
from memseg.search import _local, _matches


def _record(path: Path, actions: list[tuple[str, str | None, str | None]], *, flush_every: int = 0,
            end: bool = True) -> None:
    with memseg.open(path, "a", sync="none") as store:
        rec = store.start_session("s")
        for i, (kind, payload, result) in enumerate(actions):
            rec.record(kind, payload, result=result)
            if flush_every and i % flush_every == flush_every - 1:
                rec.flush()
        if end:
            rec.end()


def _expected(actions: list[tuple[str, str | None, str | None]], rx: re.Pattern[bytes],
              kinds: set[str] | None = None, results: bool = False) -> list[tuple[int, str, int, int]]:
    """What re.search finds on each payload (and result) on its own."""
    out = []
    for seq, (kind, payload, result) in enumerate(actions):
        if kinds is not None and kind not in kinds:
            continue
        m = rx.search((payload or "").encode())
        if m:
            out.append((seq, "payload", m.start(), m.end()))
        if results and result is not None:
            m = rx.search(result.encode())
            if m:
                out.append((seq, "result", m.start(), m.end()))
    return out


def _found(path: Path, pattern: str, *, regex: bool = True, kinds: set[str] | None = None,
           results: bool = False) -> list[tuple[int, str, int, int]]:
    return [(h.seq, h.part, h.start, h.end)
            for h in memseg.search(path, pattern, regex=regex, kinds=kinds, results=results)]


# Each pattern gives a different answer on the joined bytes "xa" + "b" (or "a" + "b")
# than on each payload alone.
@pytest.mark.parametrize(("pattern", "payloads"), [
    ("a(?=b)", ["xa", "b"]),             # lookahead would see the next payload: a false hit
    ("a(?!b)", ["xa", "b"]),             # ... and a missed one
    ("(?<=a)b", ["a", "b"]),             # lookbehind would see the previous payload
    ("(?<!a)b", ["a", "b"]),
    ("(?:a*b)?+a", ["a", "b"]),          # a possessive repeat would take the next payload's b
    ("(?>(?:a*b)?)a", ["a", "b"]),       # so would an atomic group
    ("a$", ["xa", "b"]),
    ("^b", ["a", "b"]),
    (r"a\b", ["xa", "b"]),
    (r"(?m)a$", ["xa", "b"]),
    (r"(a)\1", ["a", "a"]),              # backreference and conditional: searched alone too
    (r"(a)?(?(1)a|b)", ["a", "ab"]),
])
def test_lookaround_and_anchors_see_only_their_own_payload(
        tmp_path: Path, pattern: str, payloads: list[str]) -> None:
    path = tmp_path / "look.mseg"
    actions: list[tuple[str, str | None, str | None]] = [("msg", p, None) for p in payloads]
    _record(path, actions)
    assert _found(path, pattern) == _expected(actions, re.compile(pattern.encode()))


def test_a_lookahead_sees_neither_the_next_payload_nor_misses_for_it(tmp_path: Path) -> None:
    path = tmp_path / "look.mseg"
    _record(path, [("msg", "xa", None), ("msg", "b", None)])
    assert _found(path, "a(?=b)") == []
    assert _found(path, "a(?!b)") == [(0, "payload", 1, 2)]


@pytest.mark.parametrize(("pattern", "regex"), [("", False), ("x*", True), ("(?:)", True)])
def test_a_pattern_matching_empty_hits_empty_payloads_and_results(
        tmp_path: Path, pattern: str, regex: bool) -> None:
    path = tmp_path / "empty.mseg"
    _record(path, [("msg", "", ""), ("msg", "abc", None), ("msg", None, "r"), ("msg", "", None),
                   ("msg", "", "")])
    assert _found(path, pattern, regex=regex) == [(seq, "payload", 0, 0) for seq in range(5)]
    assert _found(path, pattern, regex=regex, results=True) == [
        (0, "payload", 0, 0), (0, "result", 0, 0), (1, "payload", 0, 0), (2, "payload", 0, 0),
        (2, "result", 0, 0), (3, "payload", 0, 0), (4, "payload", 0, 0), (4, "result", 0, 0)]


def test_cli_search_for_the_empty_string_lists_every_action(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.mseg"
    _record(path, [("msg", "", None), ("msg", "abc", None), ("msg", None, None), ("msg", "", None)])
    assert main(["search", str(path), "", "--json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert [h["seq"] for h in data["hits"]] == [0, 1, 2, 3]


def _mixed_actions(seed: int) -> list[tuple[str, str | None, str | None]]:
    r = random.Random(seed)
    actions: list[tuple[str, str | None, str | None]] = []
    for _ in range(300):
        payload = "".join(r.choice("abc\n") for _ in range(r.randrange(0, 6)))
        result = "".join(r.choice("abc") for _ in range(r.randrange(0, 4))) if r.random() < 0.5 else None
        actions.append((r.choice(["k1", "k2"]), payload if r.random() < 0.9 else None, result))
    return actions


_PATTERNS = ["", "a", "ab", "abc", "a(?=b)", "a(?!b)", "(?<=a)b", "(?<!c)a", "b*", "c+", "(a|bc)",
             "a.c", "(?s)a.c", "[ab]{3}", "x?", "^a", "c$", "(?m)^b", r"\bab", r"\Bb", r"a\Z", r"\Ab",
             "(?=c)", "a*+b", "(?>a|ab)c", r"(a|b)\1", "(a)?(?(1)b|c)", "(?i:A)b", "a*?c", "[^a]+"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, list[tuple[str, str | None, str | None]]]:
    """Several blocks of short payloads and results, some empty, some None."""
    path = tmp_path_factory.mktemp("mixed") / "mixed.mseg"
    actions = _mixed_actions(5)
    _record(path, actions, flush_every=37)
    return path, actions


@pytest.mark.parametrize("pattern", _PATTERNS)
def test_search_equals_searching_each_value_alone(
        mixed: tuple[Path, list[tuple[str, str | None, str | None]]], pattern: str) -> None:
    path, actions = mixed
    rx = re.compile(pattern.encode())
    for kinds in (None, {"k1"}):
        for results in (False, True):
            assert _found(path, pattern, kinds=kinds, results=results) == _expected(
                actions, rx, kinds, results), (kinds, results)


@given(st.lists(st.text(alphabet="ab\n", max_size=4), min_size=1, max_size=8),
       st.sampled_from(_PATTERNS))
def test_blob_matcher_equals_re_search_on_each_value(values: list[str], pattern: str) -> None:
    parts = [v.encode() for v in values]
    ends: list[int] = []
    for p in parts:
        ends.append((ends[-1] if ends else 0) + len(p))
    starts = [0, *ends[:-1]]
    rx = re.compile(pattern.encode())
    want = []
    for i, p in enumerate(parts):
        m = rx.search(p)
        if m:
            want.append((i, starts[i] + m.start(), starts[i] + m.end()))
    assert list(_matches(rx, b"".join(parts), starts, ends, None, [0] * len(parts))) == want


@pytest.mark.parametrize("end", [True, False])
def test_block_refs_are_read_only_and_kept(tmp_path: Path, end: bool) -> None:
    path = tmp_path / "refs.mseg"
    actions: list[tuple[str, str | None, str | None]] = [("k", f"p{i}", None) for i in range(6)]
    _record(path, actions, flush_every=1, end=end)  # one block per action
    with memseg.open(path) as store:
        got = store.session("s").actions
        refs = got.refs
        assert len(refs) == 6
        assert got.refs is refs  # handed out as kept, not copied on each access
        with pytest.raises(ValueError, match="read-only"):
            refs["offset"][0] = refs["offset"][1]
        assert [a.value() for a in got] == [p for _, p, _ in actions]
        assert got[4].value() == "p4"


@pytest.mark.parametrize(("pattern", "joined"), [
    (b"pytest", True),
    (b"fail(ed|ure)", True),
    (b"[0-9]{1,4}ms", True),
    (b".*zzz", False),                  # one attempt would run on across every later value
    (rb"\d+ passed", False),
    (b"(?:.*?)+.*?[\\b]A", False),      # nested unbounded repeats backtrack exponentially
    (b"a{2,}", False),
])
def test_only_patterns_of_bounded_width_search_the_joined_values(pattern: bytes,
                                                                 joined: bool) -> None:
    """An unbounded repeat over a block's joined values (up to 1 MiB) costs far more than
    over each value: `.*zzz` took over a second on 64 KiB joined, milliseconds value by
    value, and a nested one never finished. Such patterns go value by value."""
    assert _local(pattern, 0) is joined

"""A few realistic recorded sessions of a coding agent, for trying the tools out."""

from __future__ import annotations

import os
import time
from typing import Any

from memseg.recorder import Recorder
from memseg.store import open as open_store

_MS = 1_000_000
_DIFF = """--- a/src/parser.py
+++ b/src/parser.py
@@ -41,7 +41,9 @@ def parse_header(data: bytes) -> Header:
-    if len(data) < 16:
-        raise ValueError("short header")
+    if len(data) < HEADER_SIZE:
+        raise ParseError("short_header", offset=0,
+                         expected=HEADER_SIZE, actual=len(data))
     magic, version, flags = HEADER.unpack_from(data)
"""


# More than the demo's actions span in all, so that they all lie in the past.
_DEMO_SPAN_NS = 30 * 1_000_000_000


class _Clock:
    """Timestamps that advance like a real run, so replay pacing has something to show."""

    def __init__(self, start_ns: int) -> None:
        self.now = start_ns

    def tick(self, ms: int) -> int:
        self.now += ms * _MS
        return self.now


def _turn(rec: Recorder, clock: _Clock, tokens: dict[str, int], prompt: str, thought: str,
          calls: list[tuple[str, dict[str, Any], Any]]) -> None:
    rec.record("user_message", {"role": "user", "content": prompt}, ts_ns=clock.tick(5))
    rec.record("thinking", thought, ts_ns=clock.tick(900))
    for tool, args, result in calls:
        rec.record("tool_call", {"tool": tool, "args": args}, result=result, ts_ns=clock.tick(350))
    used = {"input_tokens": 1200 + 40 * len(prompt), "output_tokens": 150 + 3 * len(thought)}
    for key, value in used.items():
        tokens[key] = tokens.get(key, 0) + value
    rec.record("token_usage", dict(used, total=dict(tokens)), ts_ns=clock.tick(10))


def _fix_parser(rec: Recorder, clock: _Clock) -> None:
    tokens: dict[str, int] = {}
    _turn(rec, clock, tokens, "The parser crashes on short headers. Please fix it and add a test.",
          "Let me look at parse_header and the existing tests before changing anything.", [
              ("read_file", {"path": "src/parser.py"},
               {"ok": True, "lines": 212, "content": "def parse_header(data: bytes) -> Header: ..."}),
              ("grep", {"pattern": "ValueError", "path": "src/"},
               {"ok": True, "matches": ["src/parser.py:43", "src/cli.py:88"]}),
          ])
    rec.checkpoint({"phase": "investigated", "files_read": ["src/parser.py"], "plan": [
        "raise ParseError with offsets", "add a regression test"]}, ts_ns=clock.tick(5))
    _turn(rec, clock, tokens, "Go ahead.",
          "The header size is hard-coded as 16; use HEADER_SIZE and raise ParseError with fields.", [
              ("apply_diff", {"path": "src/parser.py", "diff": _DIFF}, {"ok": True, "hunks": 1}),
              ("write_file", {"path": "tests/test_parser.py", "content":
                              "def test_short_header_is_refused():\n"
                              "    with pytest.raises(ParseError) as info:\n"
                              "        parse_header(b'abc')\n"
                              "    assert info.value.reason == 'short_header'\n"},
               {"ok": True, "bytes": 187}),
              ("run_tests", {"command": "pytest -q tests/test_parser.py"},
               {"exit_code": 1, "passed": 11, "failed": 1,
                "output": "FAILED tests/test_parser.py::test_short_header_is_refused - NameError: "
                          "name 'pytest' is not defined"}),
              ("apply_diff", {"path": "tests/test_parser.py", "diff": "+import pytest\n"},
               {"ok": True, "hunks": 1}),
              ("run_tests", {"command": "pytest -q"},
               {"exit_code": 0, "passed": 148, "failed": 0, "output": "148 passed in 3.21s"}),
          ])
    rec.checkpoint({"phase": "fixed", "tests": "148 passed", "diff_lines": 5}, ts_ns=clock.tick(5))
    rec.record("assistant_message", "Fixed: parse_header now raises ParseError('short_header') "
               "with offsets, and a regression test covers it. All 148 tests pass.",
               ts_ns=clock.tick(700))


def _failed_refactor(rec: Recorder, clock: _Clock) -> None:
    tokens: dict[str, int] = {}
    _turn(rec, clock, tokens, "Rename Header.flags to Header.options everywhere.",
          "A rename across the package; check every use first.", [
              ("grep", {"pattern": r"\.flags\b", "path": "."},
               {"ok": True, "matches": [f"src/mod{i}.py:{10 * i}" for i in range(1, 9)]}),
              ("run_command", {"command": "sed -i 's/\\.flags/.options/g' src/*.py"},
               {"exit_code": 0, "stdout": ""}),
              ("run_tests", {"command": "pytest -q"},
               {"exit_code": 1, "passed": 131, "failed": 17,
                "output": "AttributeError: 'Namespace' object has no attribute 'options'"}),
          ])
    rec.record("error", {"type": "TestFailure", "message": "17 tests fail after the rename; "
                         "sed also renamed argparse's .flags"}, ts_ns=clock.tick(20))
    rec.record("tool_call", {"tool": "run_command", "args": {"command": "git checkout -- src"}},
               result={"exit_code": 0}, ts_ns=clock.tick(300))


def _active(rec: Recorder, clock: _Clock) -> None:
    tokens: dict[str, int] = {}
    _turn(rec, clock, tokens, "Profile the importer; it takes 40 s on the big fixture.",
          "Start with a profile of one run on the big fixture.", [
              ("run_command", {"command": "python -m cProfile -s cumtime import.py big.csv"},
               {"exit_code": 0, "stdout": "  ncalls  tottime  cumtime\n  1200000  18.3  31.0 "
                "csv_row_to_model\n  1200000   6.1   6.1 validate"}),
              ("binary_blob", {"path": "profile.prof"}, bytes(range(256)) * 4),
          ])
    rec.checkpoint({"phase": "profiled", "hotspot": "csv_row_to_model"}, ts_ns=clock.tick(5))
    rec.record("thinking", "csv_row_to_model builds a dict per row; batching with numpy may help.",
               ts_ns=clock.tick(800))


def record_demo(path: str | os.PathLike[str], start_ns: int | None = None) -> None:
    """Append the demo sessions to ``path`` (created if missing); one is left active."""
    # The sessions' actions span about ten seconds of made-up time; that span ends
    # before now, so no action is newer than its session's end (and a sweep right
    # after the demo sees sessions that are already inactive).
    clock = _Clock(time.time_ns() - _DEMO_SPAN_NS if start_ns is None else start_ns)
    with open_store(path, "a") as store:
        rec = store.start_session("fix-short-header", meta={
            "agent": "coder", "model": "demo-model-1", "repo": "example/parser", "branch": "main"})
        _fix_parser(rec, clock)
        rec.end("ok")
        rec = store.start_session("rename-flags", meta={
            "agent": "coder", "model": "demo-model-1", "repo": "example/parser"})
        _failed_refactor(rec, clock)
        rec.end("error: tests failed, rename reverted")
        rec = store.start_session("profile-importer", meta={
            "agent": "coder", "model": "demo-model-2", "repo": "example/importer"})
        _active(rec, clock)
        rec.flush()
        # Closing the store with the recorder open leaves the session active.

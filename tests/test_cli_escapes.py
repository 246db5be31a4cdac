"""Human output never hands the terminal a control sequence taken from the file.

Names, kinds, statuses, metadata and values are data, and a file may come from anywhere.
Printed raw, an escape sequence in a session name could retitle the terminal, clear the
screen or hide text (SGR 8), a carriage return could overwrite what a line said, and a
line break could forge a table row. Every human-output command is run on a file whose
strings carry all of these, with colour off (a pipe) and on (a terminal).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

import memseg
from memseg.cli import main
from memseg.cliout import Out, display_width, preview
from memseg.format import ValueType

# OSC title, erase display, conceal, CR, LF, TAB, NUL, C1 CSI, a bidi override, a line
# separator, and a colour memseg uses itself (green), which must not pass for memseg's own.
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[8m\r\n\t\x00\x9b31m\u202e\u2028\x1b[32mend"
# What a terminal could act on; tabs and line breaks are checked separately.
_ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                     "\u2066-\u2069]")
# memseg's own colour codes: bold, dim and the six colours, or a reset.
_OWN_SGR = re.compile(r"\x1b\[(?:0|(?:1|2|3[1-6])(?:;(?:1|2|3[1-6]))*)m")

# The progress bar memseg draws on a terminal's stderr, and the sequence that clears it.
_PROGRESS = re.compile("\r[a-z]+ [\u2588\u2591]+ +[0-9.]+%|\r\x1b\\[K")


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so memseg writes colour to it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, list[str]]:
    """A file whose strings all carry HOSTILE; the ids of its three sessions."""
    path = tmp_path / "hostile.mseg"
    with memseg.open(path, "a") as store:
        a = store.start_session(name="a" + HOSTILE, meta={"k" + HOSTILE: "v" + HOSTILE})
        a.record("kind" + HOSTILE, "text" + HOSTILE, result="res" + HOSTILE)
        a.record("tool", {"x": "json" + HOSTILE}, result=b"\x1b[2J")
        a.checkpoint("snap" + HOSTILE)
        a.end("status" + HOSTILE)
        b = store.start_session(name="b" + HOSTILE)
        b.record("kind" + HOSTILE, "other" + HOSTILE)
        b.end()
        c = store.start_session(name="c" + HOSTILE)
        c.record("kind" + HOSTILE, "text" + HOSTILE)
        c.flush()
        ids = [str(a.id), str(b.id), str(c.id)]
    return path, ids


def _commands(path: Path, ids: list[str], tmp: Path) -> list[list[str]]:
    """Every command with human output that shows the file's strings (and `info`)."""
    a, b, _ = ids
    return [
        ["info", str(path)],
        ["ls", str(path)],
        ["show", str(path), a],
        ["show", str(path), a, "--payload"],
        ["cat", str(path), a, "0"],
        ["cat", str(path), a, "1"],
        ["diff", str(path), a, b],
        ["replay", str(path), a],
        ["search", str(path), "text"],
        ["search", str(path), "json"],
        ["verify", str(path)],
        ["scan", str(path)],
        ["salvage", str(path), str(tmp / "rescued.mseg")],
        ["sweep", str(path), "--days", "0", "--dry-run"],
        ["show", str(path), "no-such\x1b[2J-session"],
    ]


@pytest.mark.parametrize("colour", [False, True], ids=["pipe", "terminal"])
def test_no_control_sequence_from_the_file_reaches_the_terminal(
        hostile: tuple[Path, list[str]], tmp_path: Path, colour: bool) -> None:
    path, ids = hostile
    coloured = 0
    for argv in _commands(path, ids, tmp_path):
        stdout, stderr = (Terminal(), Terminal()) if colour else (io.StringIO(), io.StringIO())
        main(argv, stdout=stdout, stderr=stderr)
        written = stdout.getvalue() + stderr.getvalue()
        if colour:
            coloured += "\x1b[" in written
            written = _OWN_SGR.sub("", _PROGRESS.sub("", written))
        assert not _ACTIVE.findall(written), (argv, written)
        shows_data = argv[0] not in ("info", "verify", "scan") and "no-such" not in argv[-1]
        if shows_data:
            # The file's strings are shown, escaped (by memseg, or as JSON), not dropped.
            shown = stdout.getvalue() + stderr.getvalue()
            assert re.search(r"\\(x1b|u001b)\]0;owned", shown), (argv, shown)
            assert re.search(r"\\(x1b|u001b)\[32mend", shown), (argv, shown)
    assert coloured >= 10 if colour else coloured == 0  # the terminal did get colour


def test_a_name_stays_on_its_own_row(hostile: tuple[Path, list[str]]) -> None:
    path, _ = hostile
    stdout = io.StringIO()
    assert main(["ls", str(path)], stdout=stdout) == 0
    rows = stdout.getvalue().splitlines()
    assert len(rows) == 4  # the header and three sessions: no row forged by a line break
    assert all("\\x0d\\x0a\\x09\\x00\\x9b31m\\u202e\\u2028\\x1b[32mend" in row for row in rows[1:])
    # Columns still line up: every row's STATE cell starts where the header's does.
    at = rows[0].index("STATE")
    assert sorted(row[at:].split()[0] for row in rows[1:]) == ["active", "ended", "ended"]


def test_a_value_shown_whole_keeps_its_lines(hostile: tuple[Path, list[str]]) -> None:
    path, ids = hostile
    stdout = io.StringIO()
    assert main(["cat", str(path), ids[0], "0", "--part", "payload"], stdout=stdout) == 0
    text = stdout.getvalue()
    # The payload's line break and tab are kept as such; everything else is escaped.
    assert text == "text\\x1b]0;owned\\x07\\x1b[2J\\x1b[8m\\x0d\n\t\\x00\\x9b31m\\u202e\\u2028\\x1b[32mend\n"
    raw = io.StringIO()
    main(["cat", str(path), ids[0], "0", "--part", "payload", "--raw"], stdout=raw)
    assert raw.getvalue() == "text" + HOSTILE  # --raw is for piping the exact bytes


def test_a_cut_preview_never_ends_inside_an_escape() -> None:
    for tail in ("\x1b", "\u202e", "\x1b\x1b\x1b"):
        data = ("ab" * 10 + tail).encode()
        for width in range(18, 30):
            text = preview(ValueType.STR, data, width)
            assert len(text) <= width
            assert re.fullmatch(r"(ab)*a?(\\x1b|\\u202e)*(…)?", text), (tail, width, text)


def test_table_columns_line_up_with_wide_and_combining_characters() -> None:
    stdout = io.StringIO()
    Out(stdout).table(["NAME", "N"], [["plain", 1], ["日本語の名前", 2], ["e\u0301\u0301x", 3]])
    rows = stdout.getvalue().splitlines()
    # The second column starts at the same terminal column on every row.
    assert {display_width(row[: row.rindex(" ") + 1]) for row in rows} == {14}

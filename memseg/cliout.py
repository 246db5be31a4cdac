"""Output for the command line: tables, colour, JSON, a progress bar, value rendering."""

from __future__ import annotations

import base64
import codecs
import dataclasses
import datetime as dt
import enum
import os
import re
import secrets
import shutil
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import orjson

from memseg.format import ValueType

_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
           "magenta": "35", "cyan": "36"}
_STATE_STYLE = {"active": "green", "ended": "blue", "archived": "dim"}
_TYPE_NAMES = {ValueType.BYTES: "bytes", ValueType.STR: "str", ValueType.JSON: "json",
               ValueType.NONE: "none"}
# Characters a terminal acts on instead of showing: C0 and C1 controls, DEL, the line and
# paragraph separators, and the bidirectional marks, overrides and isolates that reorder
# a line as displayed. Names, kinds, metadata and values come from the file, which may be
# a copy from anywhere: printed raw, they could move the cursor, clear the screen, retitle
# the terminal, hide text or start new table rows. Human output shows them escaped.
_UNSAFE_REST = r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_INLINE = re.compile(rf"[\x00-\x1f{_UNSAFE_REST}]")
# A block of text (a payload shown whole) keeps its line breaks and tabs.
_UNSAFE_BLOCK = re.compile(rf"[\x00-\x08\x0b-\x1f{_UNSAFE_REST}]")


# The start of an escape `printable` writes, cut short at the end of a string.
_CUT_ESCAPE = re.compile(r"\\(?:x[0-9a-f]?|u[0-9a-f]{0,3})?$")


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (CJK) characters take two, combining
    marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF"
               else 1 for c in text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, block: bool = False) -> str:
    """``text`` with the characters a terminal would act on written as ``\\xNN``/``\\uNNNN``.

    ``block`` keeps line breaks and tabs (a multi-line value); otherwise they are escaped
    too, so one name stays on one line. Backslashes are left alone: --json gives exact values.
    """
    return (_UNSAFE_BLOCK if block else _UNSAFE_INLINE).sub(_escape_char, text)


def _default(obj: object) -> Any:
    """JSON for what orjson does not know: bytes as base64, enums by value."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(obj: object, *, indent: bool = True) -> bytes:
    """Serialise dataclasses, UUIDs, bytes and the like for --json output."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    opts = orjson.OPT_INDENT_2 if indent else 0
    try:
        return orjson.dumps(obj, default=_default, option=opts | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # A str JSON's UTF-8 cannot hold: a file name that is not UTF-8, which Python keeps
        # with surrogates. orjson refuses those, so each goes through as a marker made with
        # a token no string holds, which becomes JSON's own escape (\udcff): a reader
        # decodes the exact name back, and a name that holds the text "\xff" stays apart.
        token = secrets.token_hex(8)
        data = orjson.dumps(_mark_surrogates(obj, token), default=_default,
                            option=opts | orjson.OPT_NON_STR_KEYS)
        marker = re.escape(f"\ue000{token}".encode()) + rb"([0-9a-f]{4})" + re.escape(
            "\ue001".encode())
        return re.sub(marker, rb"\\u\1", data)


def _mark_surrogates(obj: object, token: str) -> object:
    """``obj`` with each surrogate in its strings written as a marker (see `to_json`)."""
    if isinstance(obj, str):
        return _SURROGATE.sub(lambda m: f"\ue000{token}{ord(m.group()):04x}\ue001", obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {_mark_surrogates(k, token): _mark_surrogates(v, token) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_mark_surrogates(v, token) for v in obj]
    return obj


_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_ASCII = re.compile("[^\x00-\x7f]")


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:  # as a surrogate pair, as JSON writes it
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _json_text(data: bytes, stream: TextIO) -> str:
    """JSON for ``stream``: as is when it writes UTF-8, else with every character beyond
    ASCII as a JSON escape, so that it stays valid JSON on any terminal's encoding."""
    text = data.decode()
    if text.isascii() or _writes_utf8(stream):
        return text
    return _NON_ASCII.sub(_json_escape, text)


def _writes_utf8(stream: TextIO) -> bool:
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name == "utf-8"
    except LookupError:
        return False


def type_name(value_type: int) -> str:
    """The name of a stored value's type (bytes, str, json, none)."""
    return _TYPE_NAMES.get(ValueType(value_type), "?") if 0 <= value_type <= 3 else "?"


def value_json(value_type: int, data: bytes | None) -> Any:
    """A stored value as JSON: JSON as itself, text as a string, bytes as base64."""
    if data is None or value_type == ValueType.NONE:
        return None
    if value_type == ValueType.JSON:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return {"base64": base64.b64encode(data).decode()}
    if value_type == ValueType.STR:
        return data.decode("utf-8", "replace")
    return {"base64": base64.b64encode(data).decode()}


def preview(value_type: int, data: bytes | None, width: int) -> str:
    """A one-line rendering of a value, cut to ``width`` characters."""
    if data is None or value_type == ValueType.NONE:
        return ""
    if value_type == ValueType.BYTES:
        text = f"<{plural(len(data), 'byte')}> {data[:16].hex(' ')}"
    else:
        text = data.decode("utf-8", "replace")
    text = printable(" ".join(text.split()))
    if display_width(text) <= width:
        return text
    cut, room = [], width - 1
    for c in text:  # by terminal columns: a CJK character takes two
        room -= display_width(c)
        if room < 0:
            break
        cut.append(c)
    # Not in the middle of an escape: a cut "\x1" would read as other text.
    return _CUT_ESCAPE.sub("", "".join(cut)) + "…"


def pretty(value_type: int, data: bytes) -> str:
    """A value for reading: JSON indented, text as is, bytes as a hex dump."""
    if value_type == ValueType.JSON:
        try:
            return orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            pass
    if value_type in (ValueType.JSON, ValueType.STR):
        return data.decode("utf-8", "replace")
    if value_type == ValueType.NONE:
        return ""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {text}")
    return "\n".join(lines)


def plural(n: int, word: str, many: str = "") -> str:
    """``n`` and ``word``, in the plural unless ``n`` is 1 ("1 session", "2 sessions"); ``many``
    is the plural when adding "s" does not make it."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def when(ns: int | None) -> str:
    """A timestamp in UTC, to the second."""
    if ns is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ns)


def size(n: int) -> str:
    """Bytes in a human unit."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def duration(ns: int) -> str:
    """A time span, compactly."""
    s = ns / 1e9
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


class Out:
    """Where a command writes: stdout for results, stderr for messages and progress."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        tty = _isatty(self.stdout)
        self.color = tty and not os.environ.get("NO_COLOR")
        self.show_progress = tty and _isatty(self.stderr)
        # With --json or --jsonl, messages on stderr are JSON objects too, one a line.
        self.json_errors = False
        # `style` marks its colour codes with a token drawn now, which no file can hold
        # ahead of time; output escapes every control character but the marked codes.
        mark = f"\ue000{secrets.token_hex(8)}\ue001"
        self._mark = mark
        self._own_style = re.compile(re.escape(mark) + r"(\x1b\[[0-9;]*m)")

    def line(self, text: str = "") -> None:
        """Write one line to stdout; what it holds from the file is shown escaped."""
        self.stdout.write(self._emit(text) + "\n")

    def block(self, text: str) -> None:
        """Write lines of text (a value shown whole): line breaks and tabs are kept."""
        self.stdout.write(self._emit(text, block=True) + "\n")

    def style(self, text: str, *styles: str) -> str:
        """``text`` in colour when writing to a terminal."""
        if not self.color or not styles:
            return text
        codes = ";".join(_STYLES[s] for s in styles if s in _STYLES)
        return f"{self._mark}\x1b[{codes}m{text}{self._mark}\x1b[0m"

    def _clean(self, text: str, *, block: bool = False) -> str:
        """``text`` made printable, keeping the colour codes `style` marked (still marked)."""
        if self._mark not in text:
            return printable(text, block=block)
        parts, at = [], 0
        for m in self._own_style.finditer(text):
            parts.append(printable(text[at : m.start()], block=block))
            parts.append(m.group())
            at = m.end()
        parts.append(printable(text[at:], block=block))
        return "".join(parts)

    def _emit(self, text: str, *, block: bool = False) -> str:
        """``text`` as written: printable, with `style`'s colour codes unmarked."""
        return self._own_style.sub(r"\1", self._clean(text, block=block))

    def _visible_len(self, text: str) -> int:
        """Length of a cleaned ``text`` as shown, without colour codes."""
        return display_width(self._own_style.sub("", text))

    def state(self, state: str) -> str:
        """A session state, coloured."""
        return self.style(state, _STATE_STYLE.get(state, ""))

    def json(self, obj: object) -> None:
        """Write ``obj`` as indented JSON."""
        self.stdout.write(_json_text(to_json(obj), self.stdout) + "\n")

    def jsonl(self, obj: object) -> None:
        """Write ``obj`` as one JSON line."""
        self.stdout.write(_json_text(to_json(obj, indent=False), self.stdout) + "\n")

    def error(self, text: str, record: Mapping[str, object] | None = None) -> None:
        """A message on stderr: ``text``, or with --json ``record`` as one JSON line."""
        if self.json_errors:
            obj = dict(record) if record else {"message": text}
            self.stderr.write(_json_text(to_json(obj, indent=False), self.stderr) + "\n")
        else:
            self.stderr.write(f"memseg: {self._emit(text)}\n")

    def fields(self, pairs: Sequence[tuple[str, object]]) -> None:
        """Aligned ``name: value`` lines."""
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            self.line(f"{self.style(key.ljust(width), 'bold')}  {value}")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]],
              right: Sequence[int] = ()) -> None:
        """A plain-text table; columns in ``right`` are right-aligned."""
        cells = [[self._clean(str(c)) for c in row] for row in rows]
        widths = [len(h) for h in headers]
        for row in cells:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], self._visible_len(cell))
        head = "  ".join(h.rjust(w) if i in right else h.ljust(w)
                         for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
        self.line(self.style(head.rstrip(), "bold"))
        for row in cells:
            parts = []
            for i, cell in enumerate(row):
                pad = " " * (widths[i] - self._visible_len(cell))
                parts.append(pad + cell if i in right else cell + pad)
            self.line("  ".join(parts).rstrip())

    def progress(self, label: str) -> Callable[[int, int], None] | None:
        """A progress callback drawing a bar on stderr, or None when not on a terminal."""
        if not self.show_progress:
            return None
        return _Bar(self.stderr, label)

    def end_progress(self, bar: Callable[[int, int], None] | None) -> None:
        """Clear the progress bar's line."""
        if isinstance(bar, _Bar):
            bar.close()


def width() -> int:
    """The terminal's width, or 100 when not on one."""
    return shutil.get_terminal_size((100, 24)).columns


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Bar:
    """A one-line progress bar, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        frac = min(1.0, done / total) if total > 0 else 1.0
        cells = 30
        full = int(frac * cells)
        bar = "█" * full + "░" * (cells - full)
        self._stream.write(f"\r{self._label} {bar} {frac * 100:5.1f}%")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar's line."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def short_id(sid: uuid.UUID) -> str:
    """The first 8 hex digits of a session id (commands accept a unique prefix)."""
    return str(sid)[:8]

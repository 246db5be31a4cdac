"""What the command-line modules share: exit codes, errors, opening files, sessions."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import re
import shlex
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

from memseg.cliout import Out, plural
from memseg.errors import (
    ClosedError,
    CorruptError,
    LockedError,
    MemsegError,
    NotMemsegError,
    ReadOnlyError,
    StateError,
    VersionError,
    WriteFailedError,
)
from memseg.forensics import Rescued, open_readonly
from memseg.store import Store

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Out], int]
# Subscripted only for the type checker: at run time the class is not generic.
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"
Reader = Store | Rescued

# Help for the arguments most commands share.
FILE_HELP = "the memseg file"
SESSION_HELP = "id, unique id prefix (at least 4 hex digits), or unique name"
JSON_HELP = "machine-readable output: JSON on stdout, messages as JSON lines on stderr"


_HEX = re.compile("[0-9a-f]+")


class UsageError(Exception):
    """A bad argument or a session that is not there: exit 2 with this message, naming
    ``file`` when the argument was looked up in one."""

    def __init__(self, message: str, usage: str = "", *, file: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage
        self.file = file


class FileError(Exception):
    """A memseg error raised while working on ``path``, so the message can name that file."""

    def __init__(self, path: str, error: MemsegError) -> None:
        super().__init__(f"{path}: {error}")
        self.path = path
        self.error = error


@contextlib.contextmanager
def about(path: str, *only: type[MemsegError]) -> Iterator[None]:
    """Name ``path`` in the memseg errors raised inside (only errors of ``only``, if given)."""
    try:
        yield
    except MemsegError as exc:
        if only and not isinstance(exc, only):
            raise
        raise FileError(path, exc) from exc


# --- errors as the command line reports them -------------------------------------------

# What each error class means to someone at the command line, and its exit status. Only
# damage found in the data is a problem found (1); the rest refuse the request (2).
_CATEGORIES: tuple[tuple[type[BaseException], str, int], ...] = (
    (CorruptError, "damaged data", EXIT_PROBLEMS),
    (NotMemsegError, "not a memseg file", EXIT_USAGE),
    (VersionError, "unsupported format version", EXIT_USAGE),
    (LockedError, "file locked", EXIT_USAGE),
    (StateError, "wrong session state", EXIT_USAGE),
    (WriteFailedError, "write failed", EXIT_USAGE),
    (ReadOnlyError, "read-only", EXIT_USAGE),
    (ClosedError, "closed", EXIT_USAGE),
    (MemsegError, "error", EXIT_PROBLEMS),
    (UsageError, "usage", EXIT_USAGE),
    (OSError, "file access", EXIT_USAGE),
)


def category(exc: BaseException) -> tuple[str, int]:
    """The label of an error's class and the exit status it ends a command with."""
    for cls, label, code in _CATEGORIES:
        if isinstance(exc, cls):
            return label, code
    return "error", EXIT_USAGE


def describe(exc: MemsegError, file: str | None) -> str:
    """A memseg error as the command line says it, after the file's name: its category, then
    its reason code, offset, detail and expected/found values, each said once. (The reason
    and detail were written for library callers, who see no category and may not know the
    file: "locked" under "file locked", or a detail naming the file, would say it twice.)"""
    label = category(exc)[0]
    words = _words(label)
    head = "" if _words(exc.reason) in words else exc.reason
    if exc.offset is not None:
        head = f"{head} at offset {exc.offset}".strip()
    detail = _without_file(exc.detail, file)
    if _words(detail) == words:
        detail = ""
    text = ": ".join(p for p in (label, head, detail) if p)
    if exc.expected is not None or exc.actual is not None:
        text += f" (expected {exc.expected!r}, found {exc.actual!r})"
    return text


def _words(text: str) -> str:
    """``text`` as lower-case words between spaces ("read_only", "Read-only": "read only"),
    padded, so that one phrase can be looked for inside another as whole words."""
    return f" {' '.join(re.split(r'[^a-z0-9]+', text.lower())).strip()} "


def _without_file(detail: str, file: str | None) -> str:
    """``detail`` without a leading name of ``file`` (as given, absolute or resolved), which
    the message already names: "/abs/f.mseg is held by ..." becomes "held by ..."."""
    if not file or not detail:
        return detail
    for name in dict.fromkeys((file, os.path.abspath(file), os.path.realpath(file))):
        if detail.startswith(name + " "):
            return detail[len(name) + 1 :].removeprefix("is ")
    return detail


def error_record(exc: BaseException, file: str | None = None) -> dict[str, object]:
    """An error as --json reports it: the same keys for every error, null where absent."""
    record: dict[str, object] = {
        "error": type(exc).__name__, "category": category(exc)[0], "file": file,
        "message": str(exc), "reason": None, "detail": None, "offset": None,
        "expected": None, "actual": None}
    if isinstance(exc, MemsegError):
        record.update(reason=exc.reason, detail=exc.detail or None, offset=exc.offset,
                      expected=exc.expected, actual=exc.actual)
    elif isinstance(exc, OSError):
        record.update(message=exc.strerror or str(exc),
                      reason=errno.errorcode.get(exc.errno or 0), detail=str(exc))
    return record


# --- files and sessions ----------------------------------------------------------------


def open_reader(path: str) -> Reader:
    """Open for reading only: memseg.open(path, "r"), or a rescued view of a damaged header."""
    return open_readonly(path)


def resolve_session(store: Reader, key: str, path: str) -> uuid.UUID:
    """A session id from a UUID, a unique name or a unique id prefix; UsageError (naming
    ``path``, the file as the user gave it) if none."""
    return resolve_sessions(store, [key], path)[0]


def resolve_sessions(store: Reader, keys: Iterable[str], path: str) -> list[uuid.UUID]:
    """`resolve_session` of each key; the ids prefixes are matched against are listed once."""
    listed: list[str] = []

    def ids() -> list[str]:  # as 32 hex digits
        if not listed:
            listed.extend(i.id.hex for i in store.sessions())
        return listed

    return [_resolve(store, key, ids, path) for key in keys]


def _resolve(store: Reader, key: str, ids: Callable[[], list[str]], path: str) -> uuid.UUID:
    prefix = key.lower().replace("-", "")
    # The ids ``key`` starts (as `ls` shows them, with or without hyphens).
    def by_prefix() -> list[str]:
        if len(prefix) < 4 or not _HEX.fullmatch(prefix):
            return []
        return [i for i in ids() if i.startswith(prefix)]

    try:
        found = store.session(key).info.id
    except KeyError as exc:
        why = str(exc.args[0]) if exc.args and "sessions are named" in str(exc.args[0]) else ""
        if why:
            raise UsageError(why, file=path) from None
    else:
        # A name that is also the start of another session's id must not stand in for it
        # (a crafted file could name a decoy after the id `ls` shows for the real one).
        others = [i for i in by_prefix() if i != found.hex] if found.hex != prefix else []
        if others:
            raise UsageError(f"{key!r} names session {found} and starts the id of "
                             f"{plural(len(others), 'other')}; give the full id", file=path)
        return found
    matches = by_prefix()
    if len(matches) == 1:
        return uuid.UUID(matches[0])
    if len(matches) > 1:
        raise UsageError(f"{len(matches)} sessions start with {key!r}; give more of the id",
                         file=path)
    raise UsageError(f"no session {key!r} ({'; '.join(_hints(store, key, prefix, path))})",
                     file=path)


def _hints(store: Reader, key: str, prefix: str, path: str) -> list[str]:
    """What may help someone whose ``key`` names no session: the prefix rule if it reads as
    a short id prefix, where the sessions are listed, and the names it is close to."""
    hints = []
    if _HEX.fullmatch(prefix) and len(prefix) < 4:
        hints.append("an id prefix needs at least 4 hex digits")
    hints.append(f"`memseg ls {shlex.quote(path)}` lists the sessions")
    try:
        names = dict.fromkeys(i.name for i in store.sessions() if i.name)
    except MemsegError:
        # Another session's damage (its metadata, say) is not this command's business:
        # the key still names no session, with fewer hints.
        names = {}
    close = difflib.get_close_matches(key, list(names), n=3)
    if close:
        hints.append(f"did you mean {' or '.join(map(repr, close))}?")
    return hints

"""What the command-line modules share: exit codes, usage errors, opening files, sessions."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

from memseg.cliout import Out
from memseg.forensics import Rescued, open_readonly
from memseg.store import Store

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Out], int]
# Subscripted only for the type checker: at run time the class is not generic.
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"
Reader = Store | Rescued


class UsageError(Exception):
    """A bad argument or a session that is not there: exit 2 with this message."""


def open_reader(path: str) -> Reader:
    """Open for reading only: memseg.open(path, "r"), or a rescued view of a damaged header."""
    return open_readonly(path)


def resolve_session(store: Reader, key: str) -> uuid.UUID:
    """A session id from a UUID, a unique name or a unique id prefix; UsageError if none."""
    try:
        return store.session(key).info.id
    except KeyError as exc:
        why = str(exc.args[0]) if exc.args and "sessions are named" in str(exc.args[0]) else ""
        if why:
            raise UsageError(why) from None
    prefix = key.lower()
    found = [i.id for i in store.sessions() if str(i.id).startswith(prefix)]
    if len(found) == 1 and len(prefix) >= 4:
        return found[0]
    if len(found) > 1:
        raise UsageError(f"{len(found)} sessions start with {key!r}; give more of the id")
    raise UsageError(f"no session {key!r}")



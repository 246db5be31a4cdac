"""The ``memseg`` command line: look into, check, search and repair memseg files.

Exit codes: 0 fine, 1 problems found (damaged data, differences, no match), 2 usage
error, unreadable input or a refused request (locked file, session in the wrong
state). Commands that only read open the file O_RDONLY and never write, lock or
truncate it. The logic lives in library modules (forensics, scan, salvage, search,
compare); this module only parses and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from memseg import cli_admin, cli_forensic, cli_read
from memseg.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    Command,
    FileError,
    UsageError,
    category,
    describe,
    error_record,
)
from memseg.cliout import Out
from memseg.errors import MemsegError

EXIT_STATUS = (
    "exit status: 0 fine; 1 problems found (damaged data, differences, no match); 2 usage "
    "error, unreadable input, or a refused request (locked file, session in the wrong state).")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on its own; raising lets main() return the code instead.
        raise UsageError(message, usage=self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="memseg", description="Look into, check, search and repair memseg files.",
        epilog=f"{EXIT_STATUS} Commands that only read never write, lock or truncate the file. "
               "Every command takes --json (replay: --jsonl); with it, messages on stderr are "
               "JSON objects, one a line.")
    from memseg import __version__

    parser.add_argument("--version", action="version", version=f"memseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    cli_admin.register_demo(sub)
    cli_read.register(sub)
    cli_forensic.register(sub)
    cli_admin.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = Out(stdout, stderr)
    _tolerant_streams(out.stdout, out.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Until the arguments parse, guess: a bad argument is reported as --json asks too.
    out.json_errors = bool({"--json", "--jsonl"} & set(argv))
    parser = build_parser()
    args = argparse.Namespace()
    try:
        args = parser.parse_args(argv)
        out.json_errors = bool(getattr(args, "json", False) or getattr(args, "jsonl", False))
        run: Command | None = getattr(args, "run", None)
        if run is None:
            parser.print_help(out.stdout)
            return EXIT_USAGE
        return run(args, out)
    except UsageError as exc:
        if exc.usage and not out.json_errors:
            out.stderr.write(exc.usage)
        return _fail(out, exc, exc.file)
    except FileError as exc:
        return _fail(out, exc.error, exc.path)
    except MemsegError as exc:
        return _fail(out, exc, _file_of(args))
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            _quiet_stdout()
            return EXIT_OK
        return _fail(out, exc, exc.filename or _file_of(args))
    except KeyboardInterrupt:
        return 130


def _file_of(args: argparse.Namespace) -> str | None:
    """The file a command works on (salvage's is its source)."""
    name = getattr(args, "file", None) or getattr(args, "src", None)
    return os.fspath(name) if name is not None else None


def _fail(out: Out, exc: UsageError | MemsegError | OSError, file: str | None) -> int:
    """Report the error that ended a command, naming its file; returns the exit status."""
    code = category(exc)[1]
    if isinstance(exc, MemsegError):
        parts = [file, describe(exc, file)]
    elif isinstance(exc, OSError):
        parts = [file, exc.strerror or str(exc)]
    else:
        parts = [file, str(exc)]
    out.error(": ".join(p for p in parts if p), error_record(exc, file))
    return code


def _tolerant_streams(*streams: TextIO) -> None:
    """Let the streams the command writes to show what their encoding cannot encode as
    escapes: a file name that is not UTF-8 (held as surrogates) or a "…" on a Latin-1
    terminal must not end a command with a traceback. (JSON output escapes such
    characters itself, as JSON.)"""
    for stream in streams:
        # The process's own streams only: a caller's stream is the caller's to configure.
        if (stream is sys.stdout or stream is sys.stderr) and isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError):  # closed: writing to it fails later, in the try
                stream.reconfigure(errors="backslashreplace")


def _quiet_stdout() -> None:
    """After a closed pipe (``memseg ... | head``), keep the interpreter from complaining."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

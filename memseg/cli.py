"""The ``memseg`` command line: look into, check, search and repair memseg files.

Exit codes: 0 fine, 1 problems found (damage, differences, no match), 2 usage
error or unreadable input. Commands that only read open the file O_RDONLY and
never write, lock or truncate it. The logic lives in library modules
(forensics, scan, salvage, search, compare); this module only parses and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from memseg import cli_admin, cli_forensic, cli_read
from memseg.cli_common import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, Command, UsageError
from memseg.cliout import Out
from memseg.errors import LockedError, MemsegError, NotMemsegError, VersionError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on its own; raising lets main() return the code instead.
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="memseg", description="Look into, check, search and repair memseg files.",
        epilog="exit status: 0 fine, 1 problems found (damage, differences, no match), "
               "2 usage error or unreadable input. Commands that only read never write, lock "
               "or truncate the file. Every command takes --json (replay: --jsonl).")
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
    parser = build_parser()
    args = argparse.Namespace()
    try:
        args = parser.parse_args(argv)
        run: Command | None = getattr(args, "run", None)
        if run is None:
            parser.print_help(out.stdout)
            return EXIT_USAGE
        return run(args, out)
    except UsageError as exc:
        out.error(str(exc))
        return EXIT_USAGE
    except (NotMemsegError, VersionError) as exc:
        out.error(f"{getattr(args, 'file', '')}: {exc}")
        return EXIT_USAGE
    except LockedError as exc:
        out.error(f"{exc}")
        return EXIT_USAGE
    except FileExistsError as exc:
        out.error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            _quiet_stdout()
            return EXIT_OK
        name = exc.filename or getattr(args, "file", None) or getattr(args, "src", "")
        out.error(f"{name}: {exc.strerror or exc}".lstrip(": "))
        return EXIT_USAGE
    except MemsegError as exc:
        out.error(f"damaged data: {exc}")
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return 130


def _quiet_stdout() -> None:
    """After a closed pipe (``memseg ... | head``), keep the interpreter from complaining."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

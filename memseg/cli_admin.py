"""Subcommands that write: demo, compact, archive, unarchive, end, sweep, export, import.

Each is the command-line face of one library call; they take the writer's lock
like any writer and exit 2 if another process holds it.
"""

from __future__ import annotations

import argparse
import errno
import os

import memseg
from memseg.cli_common import (
    EXIT_OK,
    FILE_HELP,
    JSON_HELP,
    SESSION_HELP,
    Subparsers,
    UsageError,
    about,
    open_reader,
    resolve_sessions,
)
from memseg.cli_read import print_info, print_sessions
from memseg.cliout import Out, plural, short_id, size
from memseg.demo import record_demo
from memseg.errors import LockedError, NotMemsegError, StateError, VersionError
from memseg.forensics import info
from memseg.format import MAGIC
from memseg.fs import require_regular_file
from memseg.model import SessionInfo

# Errors that, once the source is open, can only concern the file copied into.
_DEST_ERRORS = (NotMemsegError, VersionError, LockedError, StateError)


def register_demo(sub: Subparsers) -> None:
    """Add ``demo`` (listed first: it is the first command a newcomer runs)."""
    p = sub.add_parser("demo", help="record a few example agent sessions into FILE (a new file) "
                       "and show them")
    p.add_argument("file", help="the new file to record into (must not exist)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_demo)


def register(sub: Subparsers) -> None:
    """Add the maintenance subcommands."""
    p = sub.add_parser("compact", help="rewrite the file without archived sessions and dead bytes")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_compact)

    for name, undo in (("archive", False), ("unarchive", True)):
        p = sub.add_parser(name, help="mark ended sessions archived (dropped by the next compact)"
                           if not undo else "bring archived sessions back to ended")
        p.add_argument("file", help=FILE_HELP)
        p.add_argument("sessions", nargs="+", metavar="SESSION", help=SESSION_HELP)
        p.add_argument("--json", action="store_true", help=JSON_HELP)
        p.set_defaults(run=cmd_archive, undo=undo)

    p = sub.add_parser("end", help="end active sessions whose writer is gone (finished or died)")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("sessions", nargs="+", metavar="SESSION", help=SESSION_HELP)
    p.add_argument("--status", help="the status to record (default: none)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_end)

    p = sub.add_parser("sweep", help="archive ended sessions inactive for some days")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("--days", type=float, required=True, help="inactive for at least this many days")
    p.add_argument("--archive-to", metavar="PATH", help="copy them into this memseg file first")
    p.add_argument("--max-archive-bytes", type=int, metavar="N",
                   help="keep the archive file under this size (oldest dropped first)")
    p.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_sweep)

    p = sub.add_parser("export", help="copy sessions into another memseg file")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("dest", help="the memseg file to copy into (created if missing)")
    p.add_argument("sessions", nargs="*", metavar="SESSION",
                   help=f"{SESSION_HELP}; default: every session")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("import", help="copy sessions of another memseg file into FILE")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("src", help="the memseg file to copy from")
    p.add_argument("sessions", nargs="*", metavar="SESSION",
                   help=f"{SESSION_HELP}; default: every session")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_import)


def cmd_demo(args: argparse.Namespace, out: Out) -> int:
    """memseg demo: record the example sessions into a new file, then show the file."""
    if os.path.lexists(args.file):
        # A second run would add sessions of the same names, and the examples that look
        # sessions up by name would then refuse the ambiguous names.
        raise FileExistsError(errno.EEXIST, "exists; the demo records into a new file", args.file)
    record_demo(args.file)
    fi = info(args.file)
    if args.json:
        out.json(fi)
        return EXIT_OK
    print_info(out, fi)
    out.line()
    with open_reader(args.file) as store:
        print_sessions(out, store.sessions())
    out.line()
    out.line(f"next: memseg show {args.file} fix-short-header   "
             f"memseg search {args.file} pytest   memseg verify {args.file}")
    return EXIT_OK


def _report(out: Out, as_json: bool, report: object, lines: list[str]) -> None:
    if as_json:
        out.json(report)
    else:
        for line in lines:
            out.line(line)


def cmd_compact(args: argparse.Namespace, out: Out) -> int:
    """memseg compact: the compactor, with a progress bar."""
    _must_exist(args.file)
    bar = out.progress("compacting")
    try:
        r = memseg.compact(args.file, progress=bar)
    finally:
        out.end_progress(bar)
    _report(out, args.json, r, [
        f"compacted {r.path}: {size(r.bytes_before)} -> {size(r.bytes_after)} in {r.seconds:.2f}s",
        f"sessions kept {r.sessions_kept}, dropped {len(r.dropped)} archived; "
        f"blocks {r.blocks_before} -> {r.blocks_after}",
    ])
    return EXIT_OK


def _sessions(path: str, keys: list[str]) -> list[SessionInfo]:
    """The sessions the keys name (ids, unique prefixes or names), each once."""
    with open_reader(path) as store:
        return [store.session(sid).info for sid in dict.fromkeys(resolve_sessions(store, keys, path))]


def _refuse_active(path: str, infos: list[SessionInfo]) -> None:
    """Archiving an active session is refused; say how to end it from here."""
    for i in infos:
        if i.state.value == "active":
            raise StateError(
                "active", f"session {i.id} is still active (being recorded, or its writer died); "
                f"once no process writes the file, `memseg end {path} {i.id}` ends it",
                expected="ended", actual="active")


def cmd_archive(args: argparse.Namespace, out: Out) -> int:
    """memseg archive / unarchive: change sessions' state in the TOC."""
    _must_exist(args.file)
    infos = _sessions(args.file, args.sessions)
    if not args.undo:
        _refuse_active(args.file, infos)
    keys = [str(i.id) for i in infos]
    with memseg.open(args.file, "a") as store:
        changed = store.unarchive(keys) if args.undo else store.archive(keys)
    verb = "unarchived" if args.undo else "archived"
    _report(out, args.json, {verb: changed, "sessions": keys}, [
        f"{verb} {changed} of {plural(len(keys), 'session')}"])
    return EXIT_OK


def cmd_end(args: argparse.Namespace, out: Out) -> int:
    """memseg end: seal active sessions, as their writer would have."""
    _must_exist(args.file)
    infos = _sessions(args.file, args.sessions)
    for i in infos:
        if i.state.value != "active":
            raise StateError("not_active", f"session {i.id} is {i.state.value}; only active "
                             "sessions end", expected="active", actual=i.state.value)
    keys = list(dict.fromkeys(str(i.id) for i in infos))
    # The writer's lock: refused (LockedError) while a process still records into the file.
    with memseg.open(args.file, "a") as store:
        for key in keys:
            store.resume(key).end(args.status)
    _report(out, args.json, {"ended": len(keys), "sessions": keys},
            [f"ended {plural(len(keys), 'session')}"])
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace, out: Out) -> int:
    """memseg sweep: archive sessions inactive for some days (or say which, with --dry-run)."""
    _must_exist(args.file)
    if not args.days >= 0:  # refuses NaN too
        raise UsageError("--days must be a number >= 0")
    if args.max_archive_bytes is not None and (not args.archive_to or args.max_archive_bytes < 0):
        raise UsageError("--max-archive-bytes needs --archive-to and must be >= 0")
    if args.archive_to:
        _must_differ(args.file, args.archive_to)
    archive_file = args.archive_to or args.file
    # A dry run reads only: no writer lock, no torn tail cut (SPEC: it changes nothing).
    mode = "r" if args.dry_run else "a"
    with memseg.open(args.file, mode) as store, about(archive_file, *_DEST_ERRORS):
        r = store.sweep(args.days, archive_to=args.archive_to,
                        max_archive_bytes=args.max_archive_bytes, dry_run=args.dry_run)
    head = "would archive" if r.dry_run else "archived"
    lines = [f"{head} {plural(len(r.archived), 'session')}, {size(r.archived_bytes)}"]
    lines += [f"  {short_id(i.id)}  {i.name or '-'}  {size(i.bytes)}" for i in r.archived]
    if r.exported:
        lines.append(f"{'would copy' if r.dry_run else 'copied'} {len(r.exported)} to {args.archive_to}")
    if r.dropped:
        lines.append(f"{'would drop' if r.dry_run else 'dropped'} {len(r.dropped)} from the archive file")
    if r.still_active:
        lines.append(f"{plural(len(r.still_active), 'old session')} still active (never archived)")
    _report(out, args.json, r, lines)
    return EXIT_OK


def _copy_sessions(src: str, dest: str, sessions: list[str]) -> tuple[int, list[str]]:
    """Copy the named sessions (all when none are named) of ``src`` into ``dest``."""
    _must_differ(src, dest)
    with about(src):  # an empty source is named as such, not the destination
        _must_exist(src)
    with about(src), memseg.open(src, "r") as store:
        keys = list(dict.fromkeys(str(sid) for sid in resolve_sessions(store, sessions, src))) or [
            str(i.id) for i in store.sessions()]
        with about(dest, *_DEST_ERRORS):
            return store.export(keys, dest), keys


def cmd_export(args: argparse.Namespace, out: Out) -> int:
    """memseg export: copy sessions into another file."""
    copied, keys = _copy_sessions(args.file, args.dest, args.sessions)
    _report(out, args.json, {"copied": copied, "dest": args.dest, "sessions": keys},
            [f"copied {plural(copied, 'session')} into {args.dest}"])
    return EXIT_OK


def cmd_import(args: argparse.Namespace, out: Out) -> int:
    """memseg import: copy sessions of another file into this one."""
    copied, keys = _copy_sessions(args.src, args.file, args.sessions)
    _report(out, args.json, {"copied": copied, "src": args.src, "sessions": keys},
            [f"copied {plural(copied, 'session')} from {args.src} into {args.file}"])
    return EXIT_OK


def _must_differ(src: str, dest: str) -> None:
    """Copies need two files; a link or another spelling of the same path is one file."""
    same = os.path.abspath(src) == os.path.abspath(dest)
    if not same and os.path.exists(src) and os.path.exists(dest):
        same = os.path.samefile(src, dest)
    if same:
        raise UsageError("the source and destination files must differ")


def _must_exist(path: str) -> None:
    """Writers create missing files, and give an empty one a header; maintenance commands
    must do neither (an empty file is more likely a failed copy than a new store)."""
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    require_regular_file(path)
    if os.path.getsize(path) == 0:
        raise NotMemsegError("bad_magic", "the file is empty", offset=0,
                             expected=MAGIC, actual=b"")

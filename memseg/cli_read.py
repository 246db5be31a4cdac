"""Read-only subcommands: info, ls, show, cat, diff, replay, search."""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from memseg.cli_common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    FILE_HELP,
    JSON_HELP,
    SESSION_HELP,
    Subparsers,
    UsageError,
    category,
    error_record,
    open_reader,
    resolve_session,
    resolve_sessions,
)
from memseg.cliout import (
    Out,
    duration,
    plural,
    pretty,
    preview,
    short_id,
    size,
    type_name,
    value_json,
    when,
    width,
)
from memseg.compare import diff_sessions
from memseg.errors import MemsegError
from memseg.forensics import FileInfo, info
from memseg.model import Action, Checkpoint, SessionInfo
from memseg.search import search
from memseg.view import Actions

_STATES = ("active", "ended", "archived")


def register(sub: Subparsers) -> None:
    """Add the read-only subcommands."""
    p = sub.add_parser("info", help="what a file holds: header, commits, sessions, bytes")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("ls", help="list sessions")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("--state", action="append", choices=_STATES, help="only sessions in this state")
    p.add_argument("--name", help="only sessions whose name contains this (a regex with --regex)")
    p.add_argument("--regex", action="store_true", help="--name is a regular expression")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_ls)

    p = sub.add_parser("show", help="a session's metadata, checkpoints and actions",
                       description="A session's metadata, checkpoints and actions. The AT column "
                       "is each action's time since the session's first action, the same whichever actions "
                       "--from, --to and --kind pick.")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("session", help=SESSION_HELP)
    p.add_argument("--kind", action="append", help="only actions of this kind (repeatable)")
    p.add_argument("--from", dest="seq_from", type=_seq, default=0, metavar="SEQ",
                   help="first seq to show (default 0)")
    p.add_argument("--to", dest="seq_to", type=_seq, default=None, metavar="SEQ",
                   help="last seq to show (inclusive)")
    p.add_argument("--payload", action="store_true", help="print whole payloads and results")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help=JSON_HELP)
    g.add_argument("--jsonl", action="store_true", help="one JSON object per action")
    p.set_defaults(run=cmd_show)

    p = sub.add_parser("cat", help="one action's payload (and result)")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("session", help=SESSION_HELP)
    p.add_argument("seq", type=int, help="the action's seq, counted from 0 (as show lists them)")
    p.add_argument("--part", choices=("both", "payload", "result"), default=None,
                   help="what to print: both (the default), payload or result; with --raw, "
                   "payload or result only (default payload)")
    p.add_argument("--raw", action="store_true",
                   help="write one value's stored bytes, unformatted: the payload, or the result "
                   "with --part result")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_cat)

    p = sub.add_parser("diff", help="compare two sessions action by action (exit 1 if they differ)")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("a", help=f"the first session: {SESSION_HELP}")
    p.add_argument("b", help="the session to compare with it, named the same ways")
    p.add_argument("--timestamps", action="store_true", help="timestamps must match too")
    p.add_argument("--limit", type=int, default=20, help="differences to print (default 20)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_diff)

    p = sub.add_parser("replay", help="stream a session's actions in order",
                       description="Stream a session's actions in order, each with its time since "
                       "the session's first action.")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("session", help=SESSION_HELP)
    p.add_argument("--speed", type=float, default=0.0,
                   help="pace by the recorded timestamps at this speed (1 = real time; 0 = no pacing)")
    p.add_argument("--max-wait", type=float, default=5.0, metavar="SECONDS",
                   help="longest pause between two actions when pacing (default 5)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per action")
    p.set_defaults(run=cmd_replay)

    p = sub.add_parser(
        "search", help="actions whose payload matches (exit 1 if none)",
        description="Actions whose payload (or, with --results, result) matches PATTERN.",
        epilog="exit status: 0 matches found; 1 no match, or a damaged block could not be "
               "searched (it is named on stderr); 2 usage error or unreadable input.")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("pattern", help="the text to look for, as bytes (a regular expression with -E)")
    p.add_argument("-E", "--regex", action="store_true", help="PATTERN is a regular expression")
    p.add_argument("-i", "--ignore-case", action="store_true", help="fold ASCII letters' case")
    p.add_argument("--kind", action="append", help="only actions of this kind (repeatable)")
    p.add_argument("--session", action="append", help="only this session (repeatable)")
    p.add_argument("--results", action="store_true", help="search results too")
    p.add_argument("--limit", type=int, default=None, help="stop after this many matches")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_search)


# --- info and ls ---------------------------------------------------------------


def print_info(out: Out, fi: FileInfo) -> None:
    """The human form of ``memseg info``."""
    states = fi.sessions_by_state
    total = sum(states.values())
    by_state = ", ".join(f"{n} {out.state(s)}" for s, n in states.items())
    if fi.tail_bytes:
        tail = out.style(f"{size(fi.tail_bytes)} after the last commit (uncommitted or torn; "
                         "`memseg salvage` recovers its intact actions)", "yellow")
    else:
        tail = "none"
    pairs: list[tuple[str, object]] = [
        ("file", fi.path),
        ("size", f"{size(fi.size)} ({plural(fi.size, 'byte')})"),
        ("format", f"memseg {fi.version}"),
        ("file id", fi.file_id),
        ("created", when(fi.created_ns) if fi.created_ns else "-"),
        ("commit", f"#{fi.commit_seq} at {when(fi.commit_time_ns)} ({fi.committed_bytes} bytes)"
         if fi.commit_seq is not None else out.style("none", "yellow")),
        ("sessions", f"{total}: {by_state}"),
        ("actions", f"{fi.actions} ({plural(fi.checkpoints, 'checkpoint')})"),
        ("bytes", f"live {size(fi.bytes_live)}, archived {size(fi.bytes_archived)}, "
                  f"TOC {size(fi.bytes_toc)}, dead {size(fi.bytes_dead)}"),
        ("torn tail", tail),
    ]
    if fi.header_error:
        pairs.append(("header", out.style(f"damaged: {fi.header_error}", "red")))
    for offset, why in fi.damaged_commits:
        pairs.append(("damaged", out.style(f"commit at {offset}: {why}", "red")))
    for offset in fi.unverified_commits:
        pairs.append(("unverified", out.style(f"commit at {offset}: its bytes did not all reach "
                                              "the disk, or were damaged since", "red")))
    out.fields(pairs)


def cmd_info(args: argparse.Namespace, out: Out) -> int:
    """memseg info: the file summary; exit 1 if the header or a commit is damaged."""
    fi = info(args.file)
    if args.json:
        out.json(fi)
    else:
        print_info(out, fi)
    return EXIT_PROBLEMS if fi.header_error or fi.damaged_commits or fi.unverified_commits \
        else EXIT_OK


def _info_json(s: SessionInfo) -> dict[str, Any]:
    return {"id": s.id, "name": s.name, "state": s.state.value, "status": s.status,
            "meta": s.meta, "created_ns": s.created_ns, "ended_ns": s.ended_ns,
            "last_activity_ns": s.last_activity_ns, "action_count": s.action_count,
            "checkpoint_count": s.checkpoint_count, "stored_bytes": s.stored_bytes}


def print_sessions(out: Out, infos: list[SessionInfo]) -> None:
    """The sessions table of ``ls`` (also printed by ``demo``)."""
    rows = []
    for s in infos:
        rows.append([short_id(s.id), s.name or "-", out.state(s.state.value), s.action_count,
                     s.checkpoint_count, when(s.created_ns),
                     duration(s.last_activity_ns - s.created_ns), size(s.stored_bytes),
                     s.status or ""])
    out.table(["ID", "NAME", "STATE", "ACTIONS", "CKPTS", "CREATED", "SPAN", "SIZE", "STATUS"],
              rows, right=(3, 4, 6, 7))


def cmd_ls(args: argparse.Namespace, out: Out) -> int:
    """memseg ls: the sessions table, filtered by state and name."""
    with open_reader(args.file) as store:
        infos = store.sessions()
    if args.state:
        infos = [s for s in infos if s.state.value in args.state]
    if args.name is not None:
        try:
            rx = re.compile(args.name if args.regex else re.escape(args.name))
        except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}, deep nesting
            raise UsageError(f"bad --name pattern: {exc}") from None
        infos = [s for s in infos if s.name is not None and rx.search(s.name)]
    if args.json:
        out.json([_info_json(s) for s in infos])
    elif infos:
        print_sessions(out, infos)
    else:
        out.line("no sessions")
    return EXIT_OK


# --- show and cat --------------------------------------------------------------


def action_json(a: Action) -> dict[str, Any]:
    """An action as JSON: payload and result decoded (bytes as base64)."""
    return {"seq": a.seq, "ts_ns": a.ts_ns, "kind": a.kind,
            "payload_type": type_name(a.payload_type), "payload": value_json(a.payload_type, a.payload),
            "result_type": type_name(a.result_type) if a.result is not None else None,
            "result": value_json(a.result_type, a.result)}


def _checkpoint_json(c: Checkpoint) -> dict[str, Any]:
    return {"id": c.id, "at_seq": c.at_seq, "ts_ns": c.ts_ns, "type": type_name(c.snapshot_type),
            "snapshot": value_json(c.snapshot_type, c.snapshot)}


Damage = list[tuple[int, int, MemsegError]]


def _seq(text: str) -> int:
    """An action's seq number as an option's value: an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a seq number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seq number is 0 or more, not {value}")
    return value


def cmd_show(args: argparse.Namespace, out: Out) -> int:
    """memseg show: a session's metadata, checkpoints and actions."""
    if args.seq_to is not None and args.seq_from > args.seq_to:
        raise UsageError(f"--from {args.seq_from} is after --to {args.seq_to}")
    damage: Damage = []
    with open_reader(args.file) as store:
        session = store.session(resolve_session(store, args.session, args.file))
        s = session.info
        actions = session.actions
        stop = len(actions) if args.seq_to is None else min(len(actions), args.seq_to + 1)
        start = args.seq_from
        kinds = set(args.kind) if args.kind else None
        picked = (a for a in _window(actions, start, stop, damage) if kinds is None or a.kind in kinds)
        try:
            checkpoints = session.checkpoints
        except MemsegError as exc:
            checkpoints = []
            damage.append((0, 0, exc))
        if args.jsonl or args.json:
            if args.jsonl:
                for a in picked:
                    out.jsonl(action_json(a))
            else:
                out.json({"session": _info_json(s),
                          "checkpoints": [_checkpoint_json(c) for c in checkpoints],
                          "actions": [action_json(a) for a in picked]})
            _report_damage(out, damage, to_stderr=args.file)
            return EXIT_PROBLEMS if damage else EXIT_OK
        out.fields([
            ("session", f"{s.id}  {out.style(s.name or '-', 'bold')}"),
            ("state", out.state(s.state.value) + (f"  ({s.status})" if s.status else "")),
            ("created", when(s.created_ns)),
            ("ended", when(s.ended_ns)),
            ("last activity", when(s.last_activity_ns)),
            ("actions", f"{s.action_count}  " + ", ".join(
                f"{k} {n}" for k, n in sorted(actions.kind_counts().items(), key=lambda kv: -kv[1]))),
            ("stored", size(s.stored_bytes)),
            ("meta", " ".join(f"{k}={v}" for k, v in s.meta.items()) or "-"),
        ])
        if checkpoints:
            out.line()
            out.line(out.style("checkpoints", "bold"))
            out.table(["ID", "AT SEQ", "TIME", "SNAPSHOT"], [
                [c.id, c.at_seq, when(c.ts_ns), preview(c.snapshot_type, c.snapshot, width() - 40)]
                for c in checkpoints], right=(0, 1))
        out.line()
        shown = list(picked)
        if shown:
            _print_actions(out, shown, _first_action_ns(session.actions, s), args.payload)
        elif not any(hi > lo for lo, hi, _ in damage):  # else the damage report says why
            out.line(_none_shown(len(actions), start, args.seq_to, kinds))
    _report_damage(out, damage, to_stderr=None)
    return EXIT_PROBLEMS if damage else EXIT_OK


def _none_shown(count: int, start: int, seq_to: int | None, kinds: set[str] | None) -> str:
    """Why `show` lists no action: what was asked for, and which seqs the session has."""
    if count == 0:
        return "no actions"
    text = "no action"
    if kinds:
        text += f" of kind {', '.join(sorted(kinds))}"
    if seq_to is not None:
        text += f" in seqs {start}..{seq_to}"
    elif start > 0:
        text += f" from seq {start} on"
    return f"{text} (the session has {plural(count, 'action')}: seqs 0..{count - 1})"


def _window(actions: Actions, start: int, stop: int, damage: Damage) -> Iterator[Action]:
    """Actions ``start``..``stop``, one block at a time, so --jsonl streams a session of any
    size and a damaged block costs only its own actions (noted in ``damage``)."""
    counts = actions.refs["actions"].astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    for b in range(len(counts)):
        lo, hi = max(start, bounds[b]), min(stop, bounds[b + 1])
        if lo >= hi:
            continue
        try:
            chunk = actions[lo:hi]
        except MemsegError as exc:
            damage.append((lo, hi, exc))
            continue
        yield from chunk


def _report_damage(out: Out, damage: Damage, *, to_stderr: str | None) -> None:
    """Damage after the output, or on stderr naming the file ``to_stderr``."""
    for lo, hi, exc in damage:
        what = f"actions {lo}..{hi - 1}" if hi > lo else "checkpoints"
        text = f"{what} unreadable: {exc}"
        if to_stderr is not None:
            _warn(out, to_stderr, text, exc)
        else:
            out.line(out.style(text, "red"))


def _warn(out: Out, path: str, text: str, exc: MemsegError) -> None:
    """Damage a command read past, on stderr: named, labelled, and as JSON with --json."""
    label, _ = category(exc)
    out.error(f"{path}: {label}: {text}", error_record(exc, path) | {"message": text})


def _first_action_ns(actions: Actions, info: SessionInfo) -> int:
    """When the session's first action happened: what its times count from. (The time a
    session was created is the store's clock; actions carry the recorder's, which may be
    given.) Read from its block's timestamp column alone, so no payload is decompressed for
    it; if that block cannot be read, the creation time stands in."""
    try:
        holding = np.flatnonzero(actions.refs["actions"])
        if not len(holding):
            return info.created_ns
        return int(actions.block(int(holding[0])).ts[0])
    except MemsegError:
        return info.created_ns


def _since(ts_ns: int, t0: int) -> str:
    """A time as an offset from ``t0``, signed: "+2.5s" (a timestamp the recorder was given
    may lie before the session's first action's, "-1.0s")."""
    return ("-" if ts_ns < t0 else "+") + duration(abs(ts_ns - t0))


def _print_actions(out: Out, actions: list[Action], t0: int, full: bool) -> None:
    """Actions as a table, or whole with ``full``; their times count from ``t0`` (the session's
    first action, so that a filter never changes the time shown for an action)."""
    rows = []
    room = max(20, width() - 60)
    for a in actions:
        text = "" if full else preview(a.payload_type, a.payload, room)
        rows.append([a.seq, _since(a.ts_ns, t0), a.kind, len(a.payload),
                     "-" if a.result is None else len(a.result), text])
    if not full:
        out.table(["SEQ", "AT", "KIND", "PAYLOAD", "RESULT", "PREVIEW"], rows, right=(0, 1, 3, 4))
        return
    for a, row in zip(actions, rows, strict=True):
        out.line(out.style(f"#{row[0]}  {row[1]}  {row[2]}", "bold"))
        out.block(pretty(a.payload_type, a.payload))
        if a.result is not None:
            out.line(out.style("-> result", "dim"))
            out.block(pretty(a.result_type, a.result))
        out.line()


def cmd_cat(args: argparse.Namespace, out: Out) -> int:
    """memseg cat: one action's payload and result."""
    if args.raw and args.part == "both":
        # Two values written back to back could not be told apart.
        raise UsageError("--raw writes one value: give --part payload or --part result")
    part = args.part or ("payload" if args.raw else "both")
    with open_reader(args.file) as store:
        session = store.session(resolve_session(store, args.session, args.file))
        n = len(session.actions)
        if not 0 <= args.seq < n:
            raise UsageError(f"session {session.info.id} has no action {args.seq} ({plural(n, 'action')})",
                             file=args.file)
        a = session.actions[args.seq]
    if part == "result" and a.result is None and not args.json:
        # Said, not written as nothing: an empty result and no result must differ.
        raise UsageError(f"action {args.seq} of session {session.info.id} has no result",
                         file=args.file)
    if args.json:
        out.json(action_json(a))
        return EXIT_OK
    parts = []
    if part in ("both", "payload"):
        parts.append(("payload", a.payload_type, a.payload))
    if part in ("both", "result") and a.result is not None:
        parts.append(("result", a.result_type, a.result))
    if args.raw:
        out.stdout.flush()
        binary = getattr(out.stdout, "buffer", None)
        for _, _, data in parts:
            if binary is not None:
                binary.write(data)
                binary.flush()
            else:
                out.stdout.write(data.decode("utf-8", "replace"))
        return EXIT_OK
    for i, (name, vtype, data) in enumerate(parts):
        if part == "both":
            out.line(out.style(f"--- {name} ({type_name(vtype)}, {plural(len(data), 'byte')})", "dim"))
        out.block(pretty(vtype, data))
        if i + 1 < len(parts):
            out.line()
    return EXIT_OK


# --- diff, replay, search --------------------------------------------------------


def cmd_diff(args: argparse.Namespace, out: Out) -> int:
    """memseg diff: compare two sessions; exit 1 if they differ."""
    with open_reader(args.file) as store:
        a = store.session(resolve_session(store, args.a, args.file))
        b = store.session(resolve_session(store, args.b, args.file))
        report = diff_sessions(a, b, limit=args.limit if args.limit >= 0 else None,
                               timestamps=args.timestamps)
    if args.json:
        out.json({"a": _info_json(report.a), "b": _info_json(report.b), "same": report.same,
                  "compared": report.compared, "differing": report.differing,
                  "checkpoints_differ": report.checkpoints_differ,
                  "differences": [{"seq": d.seq, "parts": list(d.parts),
                                   "a": action_json(d.a) if d.a else None,
                                   "b": action_json(d.b) if d.b else None}
                                  for d in report.differences]})
        return EXIT_OK if report.same else EXIT_PROBLEMS
    for tag, s in (("a", report.a), ("b", report.b)):
        out.line(f"{tag}: {s.id}  {s.name or '-'}  ({plural(s.action_count, 'action')})")
    room = max(20, width() - 30)
    for d in report.differences:
        if d.a is None or d.b is None:  # parts == ("missing",): one session is shorter
            head = f"seq {d.seq}: only in {'a' if d.b is None else 'b'}"
        else:
            head = f"seq {d.seq}: {', '.join(d.parts)} {'differs' if len(d.parts) == 1 else 'differ'}"
        out.line(out.style(head, "yellow"))
        for tag, act in (("a", d.a), ("b", d.b)):
            if act is None:
                out.line(f"  {tag}: (no action)")
            else:
                out.line(f"  {tag}: {act.kind}  {preview(act.payload_type, act.payload, room)}")
                if "result" in d.parts:
                    shown = "(no result)" if act.result is None else preview(
                        act.result_type, act.result, room)
                    out.line(f"     -> {shown}")
    if report.differing > len(report.differences):
        out.line(f"... {report.differing - len(report.differences)} more")
    if report.checkpoints_differ:
        out.line(out.style("checkpoints differ", "yellow"))
    if report.same:
        out.line(out.style(f"same: {plural(report.compared, 'action')} compared", "green"))
        return EXIT_OK
    out.line(f"{report.differing} of {plural(report.compared, 'action')} "
             f"{'differs' if report.differing == 1 else 'differ'}")
    return EXIT_PROBLEMS


_LONGEST_WAIT = 7 * 86400.0


def cmd_replay(args: argparse.Namespace, out: Out) -> int:
    """memseg replay: stream a session's actions, optionally paced."""
    if not args.speed >= 0:  # refuses NaN too
        raise UsageError("--speed must be >= 0")
    if not args.max_wait >= 0:
        raise UsageError("--max-wait must be >= 0")
    with open_reader(args.file) as store:
        session = store.session(resolve_session(store, args.session, args.file))
        actions = session.actions
        damage: Damage = []
        t0 = _first_action_ns(actions, session.info)
        prev: int | None = None
        room = max(20, width() - 40)
        for a in _window(actions, 0, len(actions), damage):
            if args.speed > 0 and prev is not None:
                wait = max(0.0, (a.ts_ns - prev) / 1e9 / args.speed)
                # --max-wait inf means "no cap" to a user; sleep() refuses what it cannot
                # count, so a gap waits at most a week.
                time.sleep(min(wait, args.max_wait, _LONGEST_WAIT))
            prev = a.ts_ns
            if args.jsonl:
                out.jsonl(action_json(a))
            else:
                out.line(f"{_since(a.ts_ns, t0):>8}  #{a.seq:<5} "
                         f"{out.style(a.kind, 'cyan')}  {preview(a.payload_type, a.payload, room)}")
                if a.result is not None:
                    out.line(f"{'':>8}  {'':6} -> {preview(a.result_type, a.result, room)}")
            if args.speed > 0:
                out.stdout.flush()
    _report_damage(out, damage, to_stderr=args.file)
    return EXIT_PROBLEMS if damage else EXIT_OK


def cmd_search(args: argparse.Namespace, out: Out) -> int:
    """memseg search: matching actions; exit 1 if none."""
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be >= 1")
    # The bytes the shell passed: an argument that is not UTF-8 still matches those bytes.
    pattern = os.fsencode(args.pattern)
    try:
        re.compile(pattern if args.regex else b"")
    except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}, deep nesting
        raise UsageError(f"bad pattern: {exc}") from None
    bar = out.progress("searching")
    hits = []
    damaged: list[MemsegError] = []
    with open_reader(args.file) as store:
        sessions = ([str(k) for k in resolve_sessions(store, args.session, args.file)]
                    if args.session else None)
        for hit in search(store, pattern, regex=args.regex,
                          ignore_case=args.ignore_case, kinds=args.kind, sessions=sessions,
                          results=args.results, progress=bar, on_error=damaged.append):
            hits.append(hit)
            if not args.json:
                _print_hit(out, hit)
            if args.limit is not None and len(hits) >= args.limit:
                break
    out.end_progress(bar)
    for err in damaged:
        _warn(out, args.file, f"skipped a damaged block: {err}", err)
    if args.json:
        out.json({"count": len(hits), "damaged_blocks": len(damaged), "hits": [
            {"session_id": h.session_id, "session_name": h.session_name, "seq": h.seq,
             "kind": h.kind, "ts_ns": h.ts_ns, "part": h.part, "start": h.start, "end": h.end,
             "context": h.context.decode("utf-8", "replace")} for h in hits]})
    elif not hits:
        out.stderr.write("no match\n")
    # Like show and verify: data that could not be read is a problem found, matches or not.
    return EXIT_OK if hits and not damaged else EXIT_PROBLEMS


def _print_hit(out: Out, hit: Any) -> None:
    ctx: bytes = hit.context
    a, b = hit.context_start, hit.context_start + (hit.end - hit.start)
    text = (ctx[:a].decode("utf-8", "replace") + out.style(ctx[a:b].decode("utf-8", "replace"), "red", "bold")
            + ctx[b:].decode("utf-8", "replace"))
    text = " ".join(text.split())
    where = "" if hit.part == "payload" else " (result)"
    out.line(f"{out.style(short_id(hit.session_id), 'magenta')} {hit.session_name or '-'} "
             f"#{hit.seq} {out.style(hit.kind, 'cyan')}{where}: {text}")


"""Forensic subcommands: verify, scan, salvage. They read the source read-only, always."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os

from memseg.cli_common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    FILE_HELP,
    JSON_HELP,
    Subparsers,
    UsageError,
)
from memseg.cliout import Out, plural, short_id, size
from memseg.forensics import VerifyReport, is_torn_tail, verify
from memseg.salvage import SalvageReport, salvage
from memseg.scan import OK, scan


def register(sub: Subparsers) -> None:
    """Add verify, scan and salvage."""
    p = sub.add_parser("verify", help="check every CRC and structural rule (exit 1 on a problem)")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("scan", help="the record map from the first byte to the last")
    p.add_argument("file", help=FILE_HELP)
    p.add_argument("--damaged", action="store_true", help="only records that are not intact")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_scan)

    p = sub.add_parser("salvage", help="recover everything intact into a new file")
    p.add_argument("src", help="the damaged memseg file (only read)")
    p.add_argument("dst", help="the new file (must not exist)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(run=cmd_salvage)


def cmd_verify(args: argparse.Namespace, out: Out) -> int:
    """memseg verify: one line per problem; exit 1 if there is one."""
    bar = out.progress("verifying")
    try:
        report = verify(args.file, bar)
    finally:
        out.end_progress(bar)
    if args.json:
        out.json({"ok": report.ok, **_asdict(report)})
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    for p in report.problems:
        out.line(f"{p.offset:>12}  {out.style(f'{p.reason:<20}', 'red')}  {p.detail}")
    for n in report.notes:
        out.line(f"{n.offset:>12}  {out.style(f'{n.reason:<20}', 'yellow')}  {n.detail}")
    summary = ", ".join(plural(n, word) for n, word in (
        (report.records, "record"), (report.commits, "commit"), (report.sessions, "session"),
        (report.actions, "action")))
    if report.ok:
        out.line(f"{args.file}: {out.style('OK', 'green', 'bold')} ({summary})")
        return EXIT_OK
    out.line(f"{args.file}: {out.style(plural(len(report.problems), 'problem'), 'red', 'bold')} "
             f"({summary})")
    return EXIT_PROBLEMS


def _asdict(report: VerifyReport | SalvageReport) -> dict[str, object]:
    return dataclasses.asdict(report)


def cmd_scan(args: argparse.Namespace, out: Out) -> int:
    """memseg scan: the record map; exit 1 on damage other than a torn tail."""
    bar = out.progress("scanning")
    try:
        records = scan(args.file, bar)
    finally:
        out.end_progress(bar)
    damaged = [r for r in records if r.status != OK]
    shown = damaged if args.damaged else records
    if args.json:
        out.json([{"offset": r.offset, "length": r.length, "kind": r.kind, "codec": r.codec,
                   "stored_len": r.stored_len, "raw_len": r.raw_len, "status": r.status,
                   "reason": r.reason, "commit": r.commit, "session_id": r.session_id}
                  for r in shown])
    else:
        rows = []
        for r in shown:
            status = r.status if r.status == OK else f"{r.status}:{r.reason}" if r.reason != r.status \
                else r.status
            rows.append([r.offset, r.length, r.kind, r.stored_len if r.kind != "-" else "",
                         r.raw_len if r.kind != "-" else "",
                         out.style(status, "green" if r.status == OK else "red"),
                         "-" if r.commit is None else r.commit,
                         short_id(r.session_id) if r.session_id else ""])
        out.table(["OFFSET", "LENGTH", "KIND", "STORED", "RAW", "CRC", "COMMIT", "SESSION"], rows,
                  right=(0, 1, 3, 4, 6))
        out.line(f"{plural(len(records), 'record')}, {len(damaged)} damaged")
    torn = is_torn_tail([r for r in records if r.commit is None])
    bad = [r for r in damaged if not (torn and r.commit is None)]
    return EXIT_PROBLEMS if bad else EXIT_OK


def cmd_salvage(args: argparse.Namespace, out: Out) -> int:
    """memseg salvage: recover into a new file; exit 1 unless complete."""
    if args.src == args.dst:
        raise UsageError("salvage writes a new file: DST must differ from SRC")
    if os.path.lexists(args.dst):
        # Checked here too so that the message names DST (the library's does not).
        raise FileExistsError(errno.EEXIST, "exists; salvage writes a new file", args.dst)
    bar = out.progress("salvaging")
    try:
        report = salvage(args.src, args.dst, bar)
    finally:
        out.end_progress(bar)
    if args.json:
        data = _asdict(report)
        data.update(complete=report.complete, actions=report.actions, lost_actions=report.lost_actions)
        out.json(data)
        return EXIT_OK if report.complete else EXIT_PROBLEMS
    rows = []
    for s in report.sessions:
        lost = ", ".join(f"{a}..{b - 1}" for a, b in s.lost) or "-"
        notes = "; ".join(s.notes + ([plural(s.damaged_blocks, "damaged block")] if s.damaged_blocks else [])
                          + ([f"{plural(s.lost_checkpoints, 'checkpoint')} lost"] if s.lost_checkpoints
                             else []))
        rows.append([short_id(s.session_id), s.name or "-", out.state(s.state), s.source,
                     "copied" if s.copied else "recorded", s.actions, s.checkpoints,
                     out.style(lost, "red") if s.lost else lost, notes])
    if rows:
        out.table(["ID", "NAME", "STATE", "FROM", "HOW", "ACTIONS", "CKPTS", "LOST SEQS", "NOTES"],
                  rows, right=(5, 6))
    for sid, why in report.skipped:
        out.line(f"skipped {sid}: {why}")
    for region in report.damaged[:20]:
        out.line(out.style(f"damaged: {region.length} bytes at {region.offset} ({region.reason})", "red"))
    if len(report.damaged) > 20:
        out.line(f"... {plural(len(report.damaged) - 20, 'more damaged region')}")
    if report.torn_tail_bytes:
        out.line(f"uncommitted tail: {size(report.torn_tail_bytes)}")
    verdict = out.style("complete", "green", "bold") if report.complete else out.style(
        f"{plural(report.lost_actions, 'action')} known lost", "red", "bold")
    out.line(f"salvaged {plural(report.actions, 'action')} of {plural(len(report.sessions), 'session')} into "
             f"{args.dst}: {verdict}")
    return EXIT_OK if report.complete else EXIT_PROBLEMS

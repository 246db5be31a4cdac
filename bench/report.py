"""BENCHMARKS.md from a run's results: targets, figures per store, scaling, machine."""

from __future__ import annotations

import os
from pathlib import Path

from bench.results import OPS, Figure, Results
from bench.targets import MB, Verdict, judge

_METHOD = """\
- Every store records the same pre-generated events, one call per event, through
  the same loop (`bench/recording.py`); generating them is not timed. Payloads and
  results arrive as JSON bytes. A checkpoint follows every 500th event.
- Each peer is written the way its users would write it (`bench/stores/`):
  SQLite in WAL mode, one transaction per session, payloads as BLOBs, a sessions
  table with the event count and an index on the actions' kind (for the kind
  counts); LMDB with key = session UUID + big-endian sequence and the event packed
  as a fixed header, the kind, the payload and the result; MCAP with LZ4 chunks and a channel per session;
  a folder per run with inputs.json, events.jsonl and meta.json; one gzip
  (level 6) JSONL file per session plus an index.jsonl of the sessions (which the
  issue does not name; it serves that store's listing). The JSON-line stores splice
  the payload bytes into the line instead of re-encoding them, which favours them.
- Every store commits at session end only in the first two modes: memseg records
  its checkpoints with `checkpoint(state, flush=False)` (by default a checkpoint is
  a durable point of its own), as the peers write theirs in the session's transaction.
  "fsync at each commit" means SQLite synchronous=FULL, LMDB sync, and fsync of
  the written files for MCAP and the JSONL formats (not of their directories).
- Timings are the best of several runs (reads stop repeating once a time budget is
  spent); stores are interleaved within each repetition. Files are read with a warm
  page cache, right after being written. Compare ratios, not absolute times: the
  machine is shared and noisy.
- Reads are checked: listings must return every session with its event count,
  loads every event, kind counts the exact totals; a wrong answer is reported, not
  timed. Loading returns each event's seq, timestamp, kind, payload and result in
  the store's natural form: SQLite's row tuples, LMDB's unpacked tuples, memseg's
  `Action` objects (payloads as bytes in these three), decoded JSON for the
  JSON-line stores, whose format has no other way to find the fields.
- Dropping works on a fresh copy of the store each time, written back to disk
  (`os.sync()`) before the clock starts: memseg archives the
  sessions then compacts; SQLite deletes, VACUUMs and truncates its WAL; LMDB
  deletes then makes a compacting copy; MCAP rewrites the survivors; the JSONL
  formats delete files. Every drop is durable when it returns: files written are
  synced before they replace the old ones, and the directory is synced after files
  are deleted or renamed. "Copying the surviving bytes" reads and writes that many
  bytes of the memseg file in 1 MiB chunks, then fsyncs; it is timed as many times
  as the drop, each after an `os.sync()`, and both take their best.
- Before each timed recording the disk is synced (`os.sync()`), and odd repetitions
  record the stores in reverse order, so no store's time includes another's writeback.
- Flatness (open time as the file grows, and as commits accumulate) is the slowest
  time of the series over its fastest; commits are counted from the file's newest
  commit number.
- Peak memory is ru_maxrss of a fresh child process that imports the store's
  library, opens the store and lists it (baseline = after imports).
"""


def _fmt(unit: str, value: float) -> str:
    if unit == "events/s":
        return f"{value:,.0f}/s"
    if unit == "bytes":
        return f"{value / MB:,.1f} MB"
    if value >= 1:
        return f"{value:,.2f} s"
    return f"{value * 1e3:,.3g} ms"


def _cell(unit: str, figure: Figure | None) -> str:
    if figure is None:
        return "not run"
    if figure.value is None:
        return figure.note.replace("|", "/").splitlines()[0][:80] or "n/a"
    return _fmt(unit, figure.value)


def _ratio(v: Verdict) -> str:
    return "n/a" if v.ratio is None else f"{v.ratio:.3g}"


def _targets(res: Results) -> list[str]:
    lines = [
        "| target | ratio compared | ratio | needed | verdict |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for v in judge(res):
        word = f"**{v.word}**" if v.met is not None else v.word
        note = f" ({v.note})" if v.note and v.met is None else ""
        lines.append(f"| {v.target} | {v.compared} | {_ratio(v)} | {v.bound} | {word}{note} |")
    return lines


def _figures(res: Results) -> list[str]:
    stores = list(res.params["stores"])
    lines = ["| operation | " + " | ".join(stores) + " |", "| --- |" + " ---: |" * len(stores)]
    for op in OPS:
        row = res.figures.get(op.key, {})
        cells = [_cell(op.unit, row.get(s)) for s in stores]
        better = "higher" if op.higher_is_better else "lower"
        lines.append(f"| {op.label} ({better} is better) | " + " | ".join(cells) + " |")
    return lines


def _scaling(res: Results) -> list[str]:
    lines = ["Open and list against store size (same session count):", ""]
    lines += ["| store | points (size: time) | time ratio, last / first |", "| --- | --- | ---: |"]
    for store, points in res.series.get("open_vs_size", {}).items():
        pts = ", ".join(f"{x / MB:,.1f} MB: {_fmt('s', y)}" for x, y in points)
        ratio = points[-1][1] / points[0][1] if points else float("nan")
        lines.append(f"| {store} | {pts} | {ratio:.2f} |")
    for store, fig in res.figures.get("open_growth", {}).items():
        if fig.value is None:
            lines.append(f"| {store} | {_cell('s', fig)} | |")
    commits = res.series.get("open_vs_commits", {}).get("memseg", [])
    if commits:
        lines += ["", "memseg open and list as commits accumulate (same data):", ""]
        lines += ["| commits | open and list |", "| ---: | ---: |"]
        lines += [f"| {int(c):,} | {_fmt('s', t)} |" for c, t in commits]
    extras = [
        ("slice_long", "100 events of the long session (session looked up per window)", "s"),
        ("slice_short", "100 events of a 1,000-event session (looked up per window)", "s"),
        ("slice_long_handle", "100 events of the long session (one session handle)", "s"),
        ("slice_short_handle", "100 events of the 1,000-event session (one handle; it is "
         "one block, so every window after the first reads the block the handle cached)", "s"),
        ("copy_survivors", "copy the bytes that survive the drop, with fsync", "s"),
        ("bigfile_size", "size of the file listed for peak memory", "bytes"),
        ("bigfile_sessions", "sessions in that file", "count"),
        ("bigfile_baseline_rss", "child RSS after imports, before opening", "bytes"),
        ("bigfile_peak_rss", "child peak RSS after opening and listing", "bytes"),
    ]
    lines += ["", "Other memseg figures:", "", "| figure | value |", "| --- | ---: |"]
    for key, label, unit in extras:
        extra = res.extras.get(key)
        if unit == "count":
            value = "n/a" if extra is None or extra.value is None else f"{extra.value:,.0f}"
        else:
            value = _cell(unit, extra)
        lines.append(f"| {label} | {value} |")
    return lines


FINDINGS = Path(__file__).with_name("findings.md")


def _findings() -> list[str]:
    """The hand-written analysis of the misses, kept beside the code that measures them."""
    if not FINDINGS.exists():
        return []
    return ["## Where memseg misses, and why", "", FINDINGS.read_text().rstrip(), ""]


def render(res: Results, out: Path, charts: list[Path], command: str) -> str:
    """The whole report as Markdown; chart links are relative to `out`'s folder."""
    p = res.params
    events = p["sessions"] * p["events"]
    raw = p.get("raw_bytes", 0)
    size = "quick (CI)" if p["quick"] else "as configured"
    flushed = min(p["sessions"], p["flush_sessions"] or p["sessions"])
    lines = [
        "# memseg benchmarks",
        "",
        f"Written by `{command}` ({size}); do not edit by hand. "
        "See bench/README.md for how to run it.",
        "",
        "## What was run",
        "",
        f"- Workload: {p['sessions']:,} sessions x {p['events']:,} events = {events:,} events, "
        f"{raw / MB:,.1f} MB of payload and result JSON "
        f"({raw / max(events, 1):,.0f} bytes per event on average), seed {p['seed']}.",
        f"- Durable flush every 100 events: the first {flushed:,} sessions, best of "
        f"{max(p['heavy_repeat'], p['flush_repeat'])} (events/s does not depend on the count).",
        f"- Long session for the slice target: {p['long_events']:,} events; "
        f"file for the memory target: {p['mem_file_mb']:,} MiB.",
        f"- Repeats: best of {p['repeat']} for reads (budget {p['read_budget_s']} s each), "
        f"best of {p['heavy_repeat']} for recording and dropping.",
        f"- Wall time of the whole run: {res.wall_seconds:,.0f} s.",
        "",
        "## Targets for memseg",
        "",
        *_targets(res),
        "",
        *(_findings() if not p["quick"] else [
            "The analysis of the misses (bench/findings.md) is about the full-size run; "
            "it is left out of quick reports.", ""]),
        "## Figures per store",
        "",
        *_figures(res),
        "",
        "## Scaling",
        "",
        *_scaling(res),
        "",
        "## Charts",
        "",
    ]
    for chart in charts:
        rel = Path(os.path.relpath(chart, out.parent)).as_posix()
        lines += [f"![{chart.stem}]({rel})", ""]
    lines += ["## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in res.machine.items()]
    lines += ["", "## Method", "", _METHOD]
    if res.failures:
        lines += ["## Failures", ""]
        for failure in res.failures:
            lines += ["```", failure.rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"

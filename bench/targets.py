"""The issue's targets for memseg, judged on ratios measured in the same run.

Each target names its requirement, the two figures compared, their ratio
and the bound. A target whose figures are missing is "not measured", with
the reason, never "met".
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from bench.results import Figure, Results
from bench.stores import PEERS, SUBJECT

MB = 1_000_000
PEAK_RSS_LIMIT = 100 * MB
# The sizes the issue sets for the slice and memory targets: smaller runs (--quick)
# still measure them, but do not judge them.
LONG_SESSION_EVENTS = 1_000_000
BIG_FILE_BYTES = 2_000 * MB


@dataclass(frozen=True)
class Verdict:
    """How memseg did against one target."""

    target: str
    compared: str  # what the ratio divides, in words
    ratio: float | None
    bound: str  # e.g. ">= 1.5"
    met: bool | None  # None: not measured
    note: str = ""

    @property
    def word(self) -> str:
        """met, missed, or not measured."""
        if self.met is None:
            return "not measured"
        return "met" if self.met else "missed"


_CMP: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def _judge(target: str, compared: str, num: float | None, den: float | None, op: str,
           bound: float, why: str = "") -> Verdict:
    text = f"{op} {bound:g}"
    if num is None or den is None or den == 0:
        return Verdict(target, compared, None, text, None, why or "a figure is missing")
    ratio = num / den
    return Verdict(target, compared, ratio, text, _CMP[op](ratio, bound))


def _note(res: Results, op: str, store: str) -> str:
    figure = res.figures.get(op, {}).get(store, Figure(None, "not run"))
    return f"{store}: {figure.note}" if figure.value is None else ""


def _best_peer(res: Results, op: str, higher: bool) -> tuple[str, float] | None:
    """The peer with the best value of `op` in this run."""
    values = [(p, v) for p in PEERS if (v := res.get(op, p)) is not None]
    if not values:
        return None
    pick = max if higher else min
    return pick(values, key=lambda pv: pv[1])


def judge(res: Results) -> list[Verdict]:
    """Every target of the issue, in the issue's order."""
    m = SUBJECT
    out: list[Verdict] = []

    fastest = _best_peer(res, "record_nosync", higher=True)
    fname, fval = fastest if fastest else ("fastest peer", None)
    out.append(_judge(
        "record, commit per session, no fsync: >= 1.5x the fastest peer's events/s",
        f"memseg / {fname} events/s", res.get("record_nosync", m), fval, ">=", 1.5,
        _note(res, "record_nosync", m)))
    out.append(_judge(
        "... while storing less than half that peer's bytes",
        f"memseg / {fname} bytes", res.get("size", m), res.get("size", fname), "<", 0.5,
        _note(res, "size", m)))

    fastest = _best_peer(res, "record_fsync", higher=True)
    fname, fval = fastest if fastest else ("fastest peer", None)
    out.append(_judge(
        "record with fsync at each commit: >= 2x the fastest peer's events/s",
        f"memseg / {fname} events/s", res.get("record_fsync", m), fval, ">=", 2,
        _note(res, "record_fsync", m)))
    out.append(_judge(
        "record with a durable flush every 100 events: >= 3x SQLite doing the same",
        "memseg / sqlite events/s", res.get("record_flush100", m),
        res.get("record_flush100", "sqlite"), ">=", 3, _note(res, "record_flush100", m)))
    out.append(_judge(
        "size on disk no larger than MCAP with LZ4 chunks",
        "memseg / mcap bytes", res.get("size", m), res.get("size", "mcap"), "<=", 1,
        _note(res, "size", m)))

    fastest = _best_peer(res, "open_list", higher=False)
    fname, fval = fastest if fastest else ("fastest peer", None)
    out.append(_judge(
        "open and list all sessions: no slower than any peer",
        f"memseg / {fname} time", res.get("open_list", m), fval, "<=", 1,
        _note(res, "open_list", m)))
    growth = res.series.get("open_vs_size", {}).get(m, [])
    out.append(_judge(
        "open and list: flat as the file grows (same sessions, 10x the data)",
        "slowest / fastest time over the series", res.get("open_growth", m), 1.0, "<=", 1.5,
        _note(res, "open_growth", m) if not growth else ""))
    commits = res.extras.get("open_commits_ratio", Figure(None, "not run"))
    out.append(_judge(
        "open and list: flat as commits accumulate (same data)",
        "slowest / fastest time over the series", commits.value, 1.0, "<=", 1.5, commits.note))

    fastest = _best_peer(res, "load_session", higher=False)
    fname, fval = fastest if fastest else ("fastest peer", None)
    out.append(_judge(
        "load one session's events with payloads: at most half the fastest peer's time",
        f"memseg / {fname} time", res.get("load_session", m), fval, "<=", 0.5,
        _note(res, "load_session", m)))
    out.append(_judge(
        "count events per kind over the store: >= 20x SQLite's GROUP BY",
        "sqlite time / memseg time", res.get("kind_counts", "sqlite"),
        res.get("kind_counts", m), ">=", 20, _note(res, "kind_counts", m)))
    long_ = res.extras.get("slice_long", Figure(None, "not run"))
    long_events = int(res.params.get("long_events", 0))
    too_short = long_events < LONG_SESSION_EVENTS
    out.append(_judge(
        "load events i..i+100 of a long session: within 2x of a 1,000-event session",
        "long / short time per window", None if too_short else long_.value,
        res.extra("slice_short"), "<=", 2,
        f"the long session had {long_events:,} events; the target needs "
        f"{LONG_SESSION_EVENTS:,}" if too_short else long_.note))

    fastest = _best_peer(res, "drop_half", higher=False)
    fname, fval = fastest if fastest else ("fastest peer", None)
    out.append(_judge(
        "drop half the sessions and give the space back: faster than every peer",
        f"memseg / {fname} time", res.get("drop_half", m), fval, "<", 1,
        _note(res, "drop_half", m)))
    copy = res.extras.get("copy_survivors", Figure(None, "not run"))
    out.append(_judge(
        "... and within 2x the time of copying the surviving bytes",
        "memseg drop / copy time", res.get("drop_half", m), copy.value, "<=", 2,
        _note(res, "drop_half", m) or copy.note))
    peak = res.extras.get("bigfile_peak_rss", Figure(None, "not run"))
    size = res.extra("bigfile_size")
    where = f"{size / MB:,.0f} MB file" if size else "large file"
    too_small = size is not None and size < BIG_FILE_BYTES
    out.append(_judge(
        "peak memory listing sessions of a 2 GB file: under 100 MB",
        f"peak RSS ({where}) / 100 MB", None if too_small else peak.value,
        float(PEAK_RSS_LIMIT), "<", 1,
        f"the file was {where}; the target needs 2,000 MB" if too_small else peak.note))
    return out

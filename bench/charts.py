"""PNG charts of a run: events/s per store, size per store, open time against file size."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.results import Results
from bench.runner import RECORD_OPS

MB = 1_000_000
_MODE_LABELS = {
    "record_nosync": "commit per session",
    "record_fsync": "fsync per commit",
    "record_flush100": "durable every 100",
}


def _stores(res: Results) -> list[str]:
    return list(res.params["stores"])


def _missing(ax: Axes, xs: list[float], values: list[float | None]) -> None:
    """Mark the figures a store could not give: no bar, which would read as zero, but a label."""
    for x, v in zip(xs, values, strict=True):
        if v is None:
            ax.annotate("n/a", (x, 0), ha="center", va="bottom", fontsize=8, color="tab:red")


def events_per_second(res: Results, path: Path) -> None:
    """Grouped bars: one group per store, one bar per recording mode."""
    stores = _stores(res)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(RECORD_OPS)
    for i, (op, _mode) in enumerate(RECORD_OPS):
        values = [res.get(op, s) for s in stores]
        xs = [k + (i - (len(RECORD_OPS) - 1) / 2) * width for k in range(len(stores))]
        ax.bar(xs, [v or 0.0 for v in values], width, label=_MODE_LABELS[op])
        _missing(ax, xs, values)
    ax.set_xticks(range(len(stores)), stores)
    ax.set_ylabel("events per second")
    ax.set_title("Recording throughput (higher is better)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def size_on_disk(res: Results, path: Path) -> None:
    """Bars of each store's size, with the raw payload bytes as a line for scale."""
    stores = _stores(res)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sizes = [res.get("size", s) for s in stores]
    ax.bar(range(len(stores)), [(v or 0.0) / MB for v in sizes], color="tab:gray")
    _missing(ax, [float(k) for k in range(len(stores))], sizes)
    raw = res.params.get("raw_bytes")
    if raw:
        ax.axhline(raw / MB, color="tab:red", linestyle="--", label="payload + result bytes")
        ax.legend()
    ax.set_xticks(range(len(stores)), stores)
    ax.set_ylabel("MB on disk")
    ax.set_title("Size of the recorded workload (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def open_vs_size(res: Results, path: Path) -> None:
    """One line per store: open-and-list time against file size, same session count."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for store, points in res.series.get("open_vs_size", {}).items():
        xs = [p[0] / MB for p in points]
        ys = [p[1] * 1e3 for p in points]
        ax.plot(xs, ys, marker="o", label=store)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("store size, MB (same sessions, more events each)")
    ax.set_ylabel("open and list, ms")
    ax.set_title("Open time against file size (flat is better)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHARTS = {
    "events_per_second.png": events_per_second,
    "size_on_disk.png": size_on_disk,
    "open_vs_size.png": open_vs_size,
}


def draw_all(res: Results, directory: Path) -> list[Path]:
    """Write every chart into `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in CHARTS.items():
        draw(res, directory / name)
        paths.append(directory / name)
    return paths

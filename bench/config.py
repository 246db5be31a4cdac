"""Run sizes. The default is the issue's workload; --quick is a scaled-down run for CI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.stores import REGISTRY


@dataclass(frozen=True)
class Config:
    """How much to generate and how often to repeat each timing."""

    sessions: int = 200
    events: int = 5_000
    seed: int = 1
    # best-of-N for reads; they stop early once `read_budget_s` is spent.
    repeat: int = 5
    read_budget_s: float = 3.0
    # best-of-N for recording and dropping, which rebuild whole stores each time.
    heavy_repeat: int = 1
    # sessions recorded with a durable flush every 100 events (0: all). Those
    # runs make one fsync per 100 events, so they are the slowest per event;
    # their events/s does not depend on how many sessions are recorded.
    flush_sessions: int = 20
    # best-of-N for that mode: its fsyncs make it the most exposed to other
    # processes' disk traffic, and its runs are short enough to repeat.
    flush_repeat: int = 3
    # events of the long session whose slices are read, against SHORT_SESSION.
    long_events: int = 1_000_000
    # size of the memseg file whose listing's peak memory is measured.
    mem_file_mb: int = 2048
    stores: tuple[str, ...] = tuple(REGISTRY)
    quick: bool = False

    @property
    def total_events(self) -> int:
        """Events in the main workload."""
        return self.sessions * self.events

    def flush_workload(self) -> int:
        """Sessions recorded in the durable-every-100 mode."""
        return min(self.sessions, self.flush_sessions or self.sessions)

    def commits_events(self) -> int:
        """Events per session of the commits series: a tenth of the data, at least 500."""
        return min(self.events, max(self.events // 10, 500))

    def growth_events(self) -> list[int]:
        """Events per session of the stores whose open time is plotted against size.

        Same session count, a tenth and about a third of the data, then the
        main store: its last point is 10x the first.
        """
        return sorted({max(1, self.events // 10), max(1, self.events * 3 // 10), self.events})

    def is_full_size(self) -> bool:
        """Whether this run measures the published workload: the default sizes and every
        store (repeat counts may differ)."""
        sizes = ("sessions", "events", "seed", "flush_sessions", "long_events", "mem_file_mb",
                 "stores", "quick")
        return all(getattr(self, f) == getattr(FULL, f) for f in sizes)

    def as_params(self) -> dict[str, Any]:
        """The configuration as plain data for the report."""
        return asdict(self)


# 1,000 events: the short session for the slice comparison.
SHORT_SESSION = 1_000
SLICE = 100

FULL = Config()
QUICK = Config(
    sessions=12,
    events=500,
    repeat=3,
    read_budget_s=0.5,
    flush_sessions=0,
    flush_repeat=2,
    heavy_repeat=2,
    long_events=20_000,
    mem_file_mb=16,
    quick=True,
)


def with_overrides(base: Config, **changes: Any) -> Config:
    """`base` with the given fields replaced; None values are ignored."""
    return replace(base, **{k: v for k, v in changes.items() if v is not None})

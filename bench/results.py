"""What a run measured: figures per operation and store, plus series for the charts.

Values are kept in base units (seconds, bytes, events per second); the
report formats them. A figure without a value carries the reason instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Op:
    """One operation of the comparison table."""

    key: str
    label: str
    unit: str  # "events/s", "s" or "bytes"
    higher_is_better: bool


OPS: tuple[Op, ...] = (
    Op("record_nosync", "record, commit at session end, no fsync", "events/s", True),
    Op("record_fsync", "record, fsync at each commit", "events/s", True),
    Op("record_flush100", "record, durable flush every 100 events", "events/s", True),
    Op("size", "size on disk", "bytes", False),
    Op("open_list", "open and list all sessions", "s", False),
    Op("load_session", "load one session's events with payloads", "s", False),
    Op("kind_counts", "count events per kind, whole store", "s", False),
    Op("drop_half", "drop half the sessions, give the space back", "s", False),
    Op("size_after_drop", "size after dropping half", "bytes", False),
    Op("list_peak_rss", "peak RSS of a process that opens and lists", "bytes", False),
)
OP_KEYS = tuple(op.key for op in OPS)


@dataclass(frozen=True)
class Figure:
    """A measured value, or None with the reason it is missing in `note`."""

    value: float | None
    note: str = ""


@dataclass
class Results:
    """Everything one run produced, ready for the targets, the report and JSON."""

    params: dict[str, Any]
    machine: dict[str, str] = field(default_factory=dict)
    # op key -> store name -> figure
    figures: dict[str, dict[str, Figure]] = field(default_factory=dict)
    # memseg-only figures that have no peer column (growth, slices, copy baseline...)
    extras: dict[str, Figure] = field(default_factory=dict)
    # series name -> store name -> [(x, y)], e.g. open time against file size
    series: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    # tracebacks of operations that raised, for the report's appendix
    failures: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def put(self, op: str, store: str, figure: Figure) -> None:
        """Record the figure of `op` for `store`."""
        self.figures.setdefault(op, {})[store] = figure

    def get(self, op: str, store: str) -> float | None:
        """The value of `op` for `store`, or None if it was not measured."""
        figure = self.figures.get(op, {}).get(store)
        return None if figure is None else figure.value

    def extra(self, key: str) -> float | None:
        """The value of the memseg-only figure `key`, or None."""
        figure = self.extras.get(key)
        return None if figure is None else figure.value

    def to_json(self) -> dict[str, Any]:
        """A plain-data form for tests and later comparison."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        """The results ``to_json`` wrote, to render their report again."""
        return cls(
            params=dict(data["params"]),
            machine=dict(data.get("machine", {})),
            figures={op: {store: Figure(**f) for store, f in per_store.items()}
                     for op, per_store in data.get("figures", {}).items()},
            extras={key: Figure(**f) for key, f in data.get("extras", {}).items()},
            series={name: {store: [(float(x), float(y)) for x, y in points]
                           for store, points in per_store.items()}
                    for name, per_store in data.get("series", {}).items()},
            failures=list(data.get("failures", [])),
            wall_seconds=float(data.get("wall_seconds", 0.0)),
        )

"""Best-of-N timing on a shared, noisy machine.

The minimum of several runs is the least disturbed by other processes; each
series starts from a collected heap so that garbage left by earlier work is
not charged to it. The workload itself is frozen out of the collector (see
`freeze_workload`), or every collection would walk a million events. Long
operations stop repeating once a time budget is spent: their noise is
already small relative to their length.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def freeze_workload() -> None:
    """Move everything allocated so far out of the garbage collector's reach."""
    gc.collect()
    gc.freeze()


def timed(fn: Callable[[], T], *, collect: bool = True) -> tuple[float, T]:
    """Seconds taken by one call of `fn`, and what it returned."""
    if collect:
        gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def best_of(n: int, fn: Callable[[], T], budget_s: float = float("inf")) -> tuple[float, T]:
    """The fastest of `n` calls of `fn` (seconds), and the value of the last call.

    Stops early, after at least one call, once the calls took `budget_s` in
    total. Calls of a few milliseconds are the most exposed to a neighbour's
    burst, so while a tenth of the budget is unspent it goes on, up to 10n calls.
    """
    best, value = timed(fn)
    spent = best
    calls = 1
    while spent < budget_s and (calls < n or (spent < budget_s / 10 and calls < 10 * n)):
        seconds, value = timed(fn, collect=False)
        spent += seconds
        calls += 1
        best = min(best, seconds)
    return best, value

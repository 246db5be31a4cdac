"""Best-of-N timing on a shared, noisy machine.

The minimum of several runs is the least disturbed by other processes; each
run starts from a collected heap so that garbage left by the previous one is
not charged to it. Long operations stop repeating once a time budget is
spent: their noise is already small relative to their length.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds taken by one call of `fn`, and what it returned."""
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def best_of(n: int, fn: Callable[[], T], budget_s: float = float("inf")) -> tuple[float, T]:
    """The fastest of up to `n` calls of `fn` (seconds), and the value of the last call.

    Stops early, after at least one call, once the calls made took `budget_s` in total.
    """
    best, value = timed(fn)
    spent = best
    for _ in range(n - 1):
        if spent >= budget_s:
            break
        seconds, value = timed(fn)
        spent += seconds
        best = min(best, seconds)
    return best, value

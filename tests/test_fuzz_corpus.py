"""Replay the fuzz seed corpus and every crasher ever found; fuzz damaged files with hypothesis.

Every input goes through every target in fuzz/targets.py: only MemsegError may
escape memseg, no promise may break (``ViolationError``), and memory stays bounded
by the input's size, not by lengths written inside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings

import memseg
from fuzz.corpus import damaged_files
from fuzz.targets import TARGETS, ViolationError
from tests.crashmodel import record_figures

ROOT = Path(__file__).resolve().parent.parent

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
LONG = bool(os.environ.get("MEMSEG_LONG"))
# Reading may decompress up to LZ4's maximum ratio of the input, plus fixed costs.
MEMORY_FLOOR = 48 << 20
MEMORY_PER_BYTE = 300


def inputs(folder: str) -> list[Path]:
    return sorted(p for p in (FUZZ / folder).glob("*") if p.is_file() and p.name != "README.md")


def run_all_targets(data: bytes, stats: Counter[str], *, trace: bool = True) -> None:
    """Every target on ``data``; with ``trace``, the peak of traced allocations is checked.

    Tracing costs about four times the run, so the corpus replay traces a
    fixed sample of its inputs; hypothesis inputs and regressions are all traced.
    """
    for name, target in TARGETS.items():
        if trace:
            tracemalloc.start()
        began = time.perf_counter()
        try:
            target(data)
        finally:
            if trace:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
        stats["executions"] += 1
        stats["max_ms"] = max(stats["max_ms"], int(1000 * (time.perf_counter() - began)))
        if trace:
            stats["traced"] += 1
            stats["max_peak_kib"] = max(stats["max_peak_kib"], peak >> 10)
            bound = MEMORY_FLOOR + MEMORY_PER_BYTE * len(data)
            assert peak <= bound, f"{name} allocated {peak} bytes for a {len(data)}-byte input"


def test_seed_corpus_replays_clean() -> None:
    files = inputs("corpus")
    assert len(files) > 100
    stats: Counter[str] = Counter()
    for i, path in enumerate(files):
        run_all_targets(path.read_bytes(), stats, trace=LONG or i % 10 == 0)
    record_figures("fuzz_corpus_replay", {"inputs": len(files), **stats})


@pytest.mark.parametrize("path", inputs("regressions"), ids=lambda p: p.name)
def test_regression_stays_fixed(path: Path) -> None:
    stats: Counter[str] = Counter()
    run_all_targets(path.read_bytes(), stats)
    assert stats["executions"] == len(TARGETS)


HYPOTHESIS_STATS: Counter[str] = Counter()


@settings(max_examples=1000 if LONG else 50)
@given(data=damaged_files())
def test_damaged_files_raise_only_memseg_errors(data: bytes) -> None:
    HYPOTHESIS_STATS["inputs"] += 1
    run_all_targets(data, HYPOTHESIS_STATS)
    record_figures("fuzz_hypothesis", dict(HYPOTHESIS_STATS))


def _store_of(path: Path, names: list[str], archived: list[str]) -> bytes:
    with memseg.open(path, "a") as store:
        for name in names:
            with store.start_session(name=name) as rec:
                rec.record("k", name)
        if archived:
            store.archive(archived)
    return path.read_bytes()


def test_maintain_expects_archived_sessions_to_go(tmp_path: Path) -> None:
    """An input whose sessions were archived before: compaction rightly drops them."""
    TARGETS["maintain"](_store_of(tmp_path / "s.mseg", ["a", "b", "c"], ["a"]))


def test_maintain_checks_a_session_whatever_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session named "error" once passed for an unreadable one and went unchecked."""
    data = _store_of(tmp_path / "s.mseg", ["error"], [])
    TARGETS["maintain"](data)
    monkeypatch.setattr(memseg.Store, "archive", lambda self, keys: 0)  # a broken archive
    with pytest.raises(ViolationError, match="survived compaction"):
        TARGETS["maintain"](data)


def test_the_fuzz_runner_help_lists_every_target() -> None:
    done = subprocess.run([sys.executable, "-m", "fuzz.run_atheris", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in TARGETS)
    # No target named: usage on stderr, and a failing status for scripts.
    bare = subprocess.run([sys.executable, "-m", "fuzz.run_atheris"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert bare.returncode == 2 and "Targets:" in bare.stderr

"""A description of the machine and software a run used, for the report."""

from __future__ import annotations

import datetime
import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _filesystem(path: Path) -> str:
    """The mount holding `path`, from /proc/mounts (longest matching mount point)."""
    best = ("", "unknown")
    try:
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            point, fstype = fields[1], fields[2]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best[0]):
                best = (point, f"{fstype} on {point} ({fields[0]})")
    except (OSError, IndexError):
        pass
    return best[1]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_head(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_tree() -> str:
    """The commit of the code being benchmarked (with -dirty if the tree had changes)."""
    return _git_head(Path(__file__).resolve().parent.parent)


def describe(workdir: Path, tree: str) -> dict[str, str]:
    """Everything a reader needs to judge whether figures are comparable.

    ``tree`` is ``source_tree()`` taken when the run started: the code was imported
    then, and a commit made during a long run must not be credited with its figures.
    """
    libs = ", ".join(
        f"{p} {_version(p)}" for p in ("numpy", "lz4", "orjson", "lmdb", "mcap", "crc32c")
    )
    return {
        "date (UTC)": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical cores",
        "memory": _memory(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "libraries": libs,
        "work directory": _filesystem(workdir),
        "memseg tree": tree,
    }

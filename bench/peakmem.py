"""Peak memory of a process that opens a store and lists its sessions.

ru_maxrss is a per-process high-water mark, so the measurement runs in a
fresh child: `python -m bench.peakmem STORE ROOT` prints one JSON object
with the peak after importing the store's library (baseline) and after
listing. Both are in bytes; Linux reports ru_maxrss in KiB.

Linux folds the high-water mark of the memory image a process replaces at
exec into its ru_maxrss, so a child spawned straight from the benchmark
(hundreds of MB of workload) would report the benchmark's size. The child
is therefore started by a shell that forks it: its ru_maxrss then starts
from the shell's few hundred KB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.stores import load_store

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PeakRss:
    """High-water marks of the child, in bytes."""

    baseline: int
    peak: int
    sessions: int


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(store: str, root: Path) -> PeakRss:
    """Run the child on the store `store` in `root` and return what it saw."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p
    )
    # The command after "$@" stops the shell from exec-ing the child in its own place.
    script = '"$@"; status=$?; exit $status'
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", sys.executable, "-m", "bench.peakmem", store, str(root)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    data = json.loads(out.stdout)
    return PeakRss(int(data["baseline"]), int(data["peak"]), int(data["sessions"]))


def main(argv: list[str]) -> int:
    """Child side: import, open, list, report."""
    name, root = argv
    store = load_store(name)
    baseline = _maxrss()
    reader = store.reader(Path(root))
    listed = reader.sessions()
    reader.close()
    print(json.dumps({"baseline": baseline, "peak": _maxrss(), "sessions": len(listed)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

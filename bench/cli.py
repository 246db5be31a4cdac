"""`python -m bench`: run every operation on every store and write the report."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import charts, machine, report, scaling
from bench.config import FULL, QUICK, Config, with_overrides
from bench.results import Results
from bench.runner import Runner
from bench.stores import REGISTRY
from bench.timing import freeze_workload
from bench.workload import make_workload, raw_bytes

PUBLISHED = Path("BENCHMARKS.md")


def _default_out(cfg: Config) -> Path:
    """Where a run's report goes when --out is not given."""
    if cfg.is_full_size():
        return PUBLISHED
    return Path(tempfile.mkdtemp(prefix="memseg-bench-report-")) / PUBLISHED.name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes for CI (about 30 s)")
    p.add_argument("--sessions", type=int, help="sessions in the workload (default 200)")
    p.add_argument("--events", type=int, help="events per session (default 5000)")
    p.add_argument("--seed", type=int, help="workload seed (default 1)")
    p.add_argument("--repeat", type=int, help="best of N for reads")
    p.add_argument("--heavy-repeat", type=int, help="best of N for recording and dropping")
    p.add_argument("--flush-sessions", type=int, help="sessions for the every-100 mode (0: all)")
    p.add_argument("--flush-repeat", type=int, help="best of N for the every-100 mode")
    p.add_argument("--long-events", type=int, help="events of the long session (default 1e6)")
    p.add_argument("--mem-file-mb", type=int, help="memseg file size for the memory target")
    p.add_argument("--stores", help="comma-separated subset of: " + ", ".join(REGISTRY))
    p.add_argument("--out", type=Path,
                   help="report path (default: BENCHMARKS.md for a full-size run; a quick or "
                        "resized run writes to a temporary folder, so it never replaces the "
                        "published report unless told to)")
    p.add_argument("--charts", type=Path, help="chart folder (default: bench/charts beside --out)")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    p.add_argument("--render-json", type=Path, metavar="JSON",
                   help="run nothing: write the report and charts again from a run's --json "
                        "(after editing bench/findings.md, say)")
    p.add_argument("--workdir", type=Path, help="where stores are built (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p


def config_from(args: argparse.Namespace) -> Config:
    """The preset chosen by --quick, with any explicit sizes applied over it."""
    stores = None
    if args.stores:
        stores = tuple(s.strip() for s in args.stores.split(",") if s.strip())
        unknown = [s for s in stores if s not in REGISTRY]
        if unknown:
            raise SystemExit(f"unknown store(s): {', '.join(unknown)}")
    return with_overrides(
        QUICK if args.quick else FULL,
        sessions=args.sessions,
        events=args.events,
        seed=args.seed,
        repeat=args.repeat,
        heavy_repeat=args.heavy_repeat,
        flush_sessions=args.flush_sessions,
        flush_repeat=args.flush_repeat,
        long_events=args.long_events,
        mem_file_mb=args.mem_file_mb,
        stores=stores,
    )


def run(cfg: Config, workdir: Path) -> Runner:
    """Every phase, in an order that keeps at most one extra copy of each store on disk."""
    started = time.perf_counter()
    tree = machine.source_tree()
    sessions = make_workload(cfg.seed, cfg.sessions, cfg.events)
    freeze_workload()
    runner = Runner(cfg, sessions, workdir)
    runner.results.params["raw_bytes"] = raw_bytes(sessions)
    runner.log(f"workload: {cfg.total_events:,} events generated")
    runner.record_phase()
    runner.read_phase()
    scaling.growth_phase(runner)
    runner.drop_phase()
    scaling.copy_phase(runner)
    scaling.commits_phase(runner)
    scaling.slice_phase(runner)
    scaling.bigfile_phase(runner)
    runner.results.machine = machine.describe(workdir, tree)
    runner.results.wall_seconds = time.perf_counter() - started
    return runner


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, write the report, charts and optional JSON."""
    args = _parser().parse_args(argv)
    if args.render_json:
        return _render_again(args)
    cfg = config_from(args)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="memseg-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        runner = run(cfg, workdir)
    finally:
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    res = runner.results
    out: Path = args.out or _default_out(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    chart_dir = args.charts or out.parent / "bench" / "charts"
    drawn = charts.draw_all(res, chart_dir)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    res.params["command"] = command.strip()
    out.write_text(report.render(res, out, drawn, command.strip()))
    if args.json:
        args.json.write_text(json.dumps(res.to_json(), indent=1))
    runner.log(f"wrote {out} and {len(drawn)} charts in {chart_dir}")
    return 0


def _render_again(args: argparse.Namespace) -> int:
    """The report and charts of a saved run, its figures unchanged."""
    res = Results.from_json(json.loads(args.render_json.read_text()))
    out: Path = args.out or PUBLISHED
    chart_dir = args.charts or out.parent / "bench" / "charts"
    drawn = charts.draw_all(res, chart_dir)
    ran = res.params.get("command", "python -m bench (command not recorded)")
    command = f"{ran}`, rendered again from its JSON by `python -m bench --render-json"
    out.write_text(report.render(res, out, drawn, command))
    print(f"wrote {out} and {len(drawn)} charts in {chart_dir}")
    return 0

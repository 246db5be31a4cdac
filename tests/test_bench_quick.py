"""The quick benchmark runs end to end and reports a figure for every store and operation.

No timing is asserted: the machine running the tests is shared and noisy.
The run happens in a child process, as a user would start it, so the
benchmark's own warnings and resource use stay out of this test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.results import OP_KEYS, OPS
from bench.stores import REGISTRY, SUBJECT

REPO = Path(__file__).resolve().parent.parent
# Operations memseg may not offer yet; the report then says "not available".
MAY_BE_UNAVAILABLE = {"drop_half", "size_after_drop"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Run `python -m bench --quick` once into a temporary directory."""
    for module in ("lmdb", "mcap", "matplotlib"):  # the [bench] extra
        pytest.importorskip(module)
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "BENCHMARKS.md"
    results = tmp / "results.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "bench", "--quick",
            "--out", str(out),
            "--json", str(results),
            "--charts", str(tmp / "charts"),
            "--workdir", str(tmp / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out, json.loads(results.read_text())


def test_every_store_has_a_figure_for_every_operation(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    _, res = quick_run
    missing = []
    for op in OP_KEYS:
        for store in REGISTRY:
            figure = res["figures"][op][store]
            if figure["value"] is not None:
                continue
            allowed = store == SUBJECT and op in MAY_BE_UNAVAILABLE
            if not (allowed and figure["note"].startswith("not available")):
                missing.append(f"{store} / {op}: {figure['note']}")
    assert not missing, "\n".join(missing)
    assert not res["failures"], "\n\n".join(res["failures"])


def test_memseg_only_figures_are_measured(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, res = quick_run
    for key in ("slice_long", "slice_short", "bigfile_peak_rss", "open_commits_ratio"):
        assert res["extras"][key]["value"] is not None, res["extras"][key]["note"]
    assert set(res["series"]["open_vs_size"]) == set(REGISTRY)


def test_report_has_tables_targets_machine_and_charts(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = quick_run
    text = out.read_text()
    for heading in ("## Targets for memseg", "## Figures per store", "## Machine", "## Charts"):
        assert heading in text
    for store in REGISTRY:
        assert f"| {store} " in text
    for op in OPS:
        assert op.label in text
    assert "**met**" in text or "**missed**" in text
    charts = sorted((out.parent / "charts").glob("*.png"))
    assert [c.name for c in charts] == [
        "events_per_second.png", "open_vs_size.png", "size_on_disk.png"
    ]
    assert all(c.stat().st_size > 1000 for c in charts)


def test_a_report_renders_again_from_its_json(
    quick_run: tuple[Path, dict[str, Any]], tmp_path: Path,
) -> None:
    out, _ = quick_run
    again = tmp_path / "AGAIN.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--render-json", str(out.parent / "results.json"),
         "--out", str(again), "--charts", str(tmp_path / "charts")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    first, second = out.read_text().splitlines(), again.read_text().splitlines()
    # Only the line naming the command differs; every figure and verdict is the same.
    differing = [(a, b) for a, b in zip(first, second, strict=True) if a != b]
    assert len(differing) == 1 and differing[0][1].startswith("Written by")
    assert "rendered again from its JSON" in differing[0][1]
    assert len(list((tmp_path / "charts").glob("*.png"))) == 3


def test_only_a_full_size_run_writes_the_published_report_by_default() -> None:
    from bench.cli import PUBLISHED, _default_out
    from bench.config import FULL, QUICK, with_overrides

    # Repeat counts do not change what is measured; sizes and the store list do.
    assert _default_out(FULL) == PUBLISHED
    assert _default_out(with_overrides(FULL, heavy_repeat=2, repeat=3)) == PUBLISHED
    for cfg in (QUICK, with_overrides(FULL, sessions=40), with_overrides(FULL, stores=("memseg",))):
        out = _default_out(cfg)
        assert out.name == PUBLISHED.name and out.resolve() != PUBLISHED.resolve()
        out.parent.rmdir()  # made empty for the report; nothing else went there

"""Checked-in files written by an earlier build read back exactly as recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden.make_golden import HERE, describe

GOLDEN = sorted(HERE.glob("*.mseg"))


def test_golden_files_exist() -> None:
    assert len(GOLDEN) >= 2


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_file_reads_back(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text())
    assert describe(path) == expected
    assert expected["sessions"], "a golden file must hold something to compare"

"""Shared test set-up: hypothesis profiles and small helpers for building stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# "ci" is derandomised so a CI failure reproduces; "nightly" searches much longer.
settings.register_profile(
    "ci", max_examples=40, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev", max_examples=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "nightly", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "nightly" if os.environ.get("MEMSEG_LONG") else "ci")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked slow unless MEMSEG_LONG=1 asks for the long (nightly) mode."""
    if os.environ.get("MEMSEG_LONG"):
        return
    skip = pytest.mark.skip(reason="long mode only (set MEMSEG_LONG=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A path for a new store in a fresh directory."""
    return tmp_path / "test.mseg"

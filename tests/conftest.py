"""Shared fixtures: a data home, a Dagster home and landing files, all in tmp dirs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from mlplatform.datagen import SimulationConfig, SimulationSummary, simulate

START = date(2025, 1, 1)


@dataclass(frozen=True)
class PlatformHome:
    home: Path
    landing: Path
    warehouse: Path
    dagster_home: Path


@pytest.fixture
def platform_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformHome:
    """Environment of a fresh platform: MLPLATFORM_HOME, DAGSTER_HOME, a PII key."""
    home = tmp_path / "home"
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(
        (Path(__file__).parents[1] / "dagster.yaml").read_text()
    )
    monkeypatch.setenv("MLPLATFORM_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("MLPLATFORM_PII_KEY", "test-pii-key")
    monkeypatch.setenv("MLPLATFORM_START_DATE", START.isoformat())
    monkeypatch.setenv("MLPLATFORM_LANDING_SETTLE_SECONDS", "0")
    (home / "landing").mkdir(parents=True)
    return PlatformHome(home, home / "landing", home / "warehouse.duckdb", dagster_home)


def simulate_landing(landing: Path, days: int = 3, cards: int = 60, **options) -> SimulationSummary:
    """Small simulated landing files starting on START."""
    config = SimulationConfig(n_cards=cards, days=days, start_date=START, seed=7, **options)
    return simulate(config, landing)


@pytest.fixture
def instance(platform_home: PlatformHome):
    with dg.DagsterInstance.get() as instance:
        yield instance

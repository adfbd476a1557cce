"""Shared fixtures: a data home, a Dagster home and landing files, all in tmp dirs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from mlplatform.datagen import SimulationConfig, SimulationSummary, simulate

START = date(2025, 1, 1)
#: Environment of a small trained platform (test_models, test_serving): quick training.
TRAINING_ENV = {
    "MLPLATFORM_PII_KEY": "test-pii-key",
    "MLPLATFORM_START_DATE": START.isoformat(),
    "MLPLATFORM_SEARCH_ITERATIONS": "2",
    "MLPLATFORM_MIN_TRAIN_POSITIVES": "5",
    "MLPLATFORM_MIN_AVERAGE_PRECISION": "0.05",
    "MLPLATFORM_MAX_CALIBRATION_ERROR": "0.05",
    "MLPLATFORM_SMOKE_LATENCY_MS": "5000",  # a busy CI machine: latency is the bench's job
}


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


def load_warehouse(landing: Path, warehouse: Path, contract_path: Path | None = None) -> None:
    """Ingest and curate every landing file with the domain functions (no Dagster)."""
    from mlplatform.contract import load_contract
    from mlplatform.settings import DEFAULT_CONTRACT
    from mlplatform.warehouse.connection import connect
    from mlplatform.warehouse.curation import curate_partition, load_card_reference
    from mlplatform.warehouse.ingestion import ingest_partition, partition_date_of

    contract = load_contract(contract_path or DEFAULT_CONTRACT)
    with connect(warehouse) as conn:
        load_card_reference(conn, landing, contract.reference, b"test-pii-key")
        for path in sorted(landing.glob("transactions_*.csv")):
            day = partition_date_of(path)
            ingest_partition(
                conn, files=[path], partition_date=day, contract=contract,
                pii_key=b"test-pii-key", max_amount=1e5, max_line_bytes=1_000_000,
            )  # fmt: skip
            curate_partition(conn, day)


def insert_curated(conn: duckdb.DuckDBPyConnection, events: pd.DataFrame) -> None:
    """Insert hand-built curated-shaped events (feature input columns) into the warehouse."""
    conn.register("hand_built", events)
    conn.execute(
        "INSERT INTO curated.transactions BY NAME SELECT *, 'hand-built' AS source_file, "
        "1 AS source_line FROM hand_built"
    )
    conn.unregister("hand_built")

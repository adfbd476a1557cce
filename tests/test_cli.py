"""The `mlplatform` command: the demo that `make demo` runs, on a small simulation."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import dagster as dg
import duckdb
import pytest

from tests.conftest import PlatformHome, noise_lines

DAYS = 60
CARDS = 200  # enough revenge episodes for positives in train, validation and holdout


def test_demo_runs_every_partition_in_one_run_then_training_to_a_champion_decision(
    platform_home: PlatformHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_MIN_TRAIN_POSITIVES", "5")  # a small simulation
    monkeypatch.setenv("MLPLATFORM_SEARCH_ITERATIONS", "1")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlplatform.cli",
            "demo",
            "--cards",
            str(CARDS),
            "--days",
            str(DAYS),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    assert noise_lines(completed.stdout + completed.stderr) == []
    assert "master table" in completed.stdout and "dataset version" in completed.stdout
    assert "promotion log" in completed.stdout
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        log = conn.execute(
            "SELECT partition_date, rows_read, rows_loaded, rows_quarantined FROM raw.ingestion_log"
        ).fetchall()
        curated_days = conn.execute(
            "SELECT count(DISTINCT partition_date) FROM curated.transactions"
        ).fetchone()[0]
        feature_rows, curated_rows = conn.execute(
            "SELECT (SELECT count(*) FROM features.card_features), "
            "(SELECT count(*) FROM curated.transactions)"
        ).fetchone()
        splits = dict(
            conn.execute("SELECT split, count(*) FROM ml.master_table GROUP BY 1").fetchall()
        )
        profiled = conn.execute(
            "SELECT count(DISTINCT feature) FROM ml.training_reference_profile"
        ).fetchone()[0]
    assert len(log) == DAYS and curated_days == DAYS
    assert feature_rows == curated_rows > 0
    assert set(splits) == {"train", "validation", "holdout"}
    assert profiled > 40
    assert all(read == loaded + quarantined for _, read, loaded, quarantined in log)
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records(dg.RunsFilter(job_name="daily_ingestion"))
        assert len(runs) == 1  # the whole range in one run
        run = runs[0].dagster_run
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/asset_partition_range_start"] == "2025-01-01"
        assert run.tags["dagster/asset_partition_range_end"] == "2025-03-01"
        days = {(date(2025, 1, 1) + timedelta(days=d)).isoformat() for d in range(DAYS)}
        for asset in ("raw_transactions", "curated_transactions", "card_features"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == days
        trained = ("target_labels", "master_table", "training_reference_profile",
                   "candidate_logistic_regression", "candidate_random_forest",
                   "candidate_lightgbm", "champion_model")  # fmt: skip
        for asset in trained:
            assert instance.get_latest_materialization_event(dg.AssetKey(asset)) is not None
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        decisions = conn.execute("SELECT decision, version FROM ml.promotion_log").fetchall()
    assert len(decisions) == 1 and decisions[0][0] in {"promoted", "rejected"}
    decision, version = decisions[0]
    assert f"{decision}  version {version}" in completed.stdout  # the decision, one line each

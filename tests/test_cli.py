"""The `mlplatform` command: the demo that `make demo` runs, on a small simulation."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import date, timedelta

import dagster as dg
import duckdb
import pytest

from tests.conftest import PlatformHome, noise_lines, wait_until

pytestmark = pytest.mark.e2e

DAYS = 56  # six scored days: two before the drift, four after it
HISTORY = 50
CARDS = 200  # enough revenge episodes for positives in train, validation and holdout
START = date(2025, 1, 1)


def test_demo_tells_the_story_history_training_then_each_day_scored_and_monitored(
    platform_home: PlatformHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_MIN_TRAIN_POSITIVES", "5")  # a small simulation
    monkeypatch.setenv("MLPLATFORM_SEARCH_ITERATIONS", "1")
    monkeypatch.setenv("MLPLATFORM_PROFILE_MIN_ROWS", "100")
    command = [sys.executable, "-m", "mlplatform.cli", "demo", "--cards", str(CARDS),
               "--days", str(DAYS), "--history-days", str(HISTORY)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert noise_lines(output) == []
    for part in ("master table", "dataset version", "promotion log", "day by day", "summary",
                 "make ui", "make mlflow-ui", "mlplatform serve",
                 "curl -s -X POST http://127.0.0.1:8000/v1/predict"):  # fmt: skip
        assert part in completed.stdout, part
    days = [START + timedelta(days=d) for d in range(DAYS)]
    history, daily = days[:HISTORY], days[HISTORY:]
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        log = conn.execute(
            "SELECT partition_date, rows_read, rows_loaded, rows_quarantined FROM raw.ingestion_log"
        ).fetchall()
        feature_rows, curated_rows = conn.execute(
            "SELECT (SELECT count(*) FROM features.card_features), "
            "(SELECT count(*) FROM curated.transactions)"
        ).fetchone()
        first_decision = conn.execute(
            "SELECT decision, version FROM ml.promotion_log ORDER BY decided_at LIMIT 1"
        ).fetchone()
        scored = dict(
            conn.execute(
                "SELECT partition_date, any_value(model_version) FROM ml.predictions GROUP BY 1"
            ).fetchall()
        )
        drift_days = {
            day
            for (day,) in conn.execute(
                "SELECT DISTINCT partition_date FROM monitoring.drift"
            ).fetchall()
        }
        performance = {
            day for (day,) in conn.execute(
                "SELECT partition_date FROM monitoring.performance"
            ).fetchall()
        }  # fmt: skip
    assert len(log) == DAYS and feature_rows == curated_rows > 0
    assert all(read == loaded + quarantined for _, read, loaded, quarantined in log)
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name="daily_ingestion"))
        runs = sorted(
            (r.dagster_run for r in records),
            key=lambda run: (
                run.tags.get("dagster/partition") or run.tags["dagster/asset_partition_range_start"]
            ),
        )
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        # The history in one run over its range, then one run per day, in order.
        assert runs[0].tags["dagster/asset_partition_range_start"] == history[0].isoformat()
        assert runs[0].tags["dagster/asset_partition_range_end"] == history[-1].isoformat()
        assert [run.tags["dagster/partition"] for run in runs[1:]] == [d.isoformat() for d in daily]
        for asset in ("raw_transactions", "curated_transactions", "card_features", "data_drift"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {
                d.isoformat() for d in days
            }
        (first_training, *retrainings) = sorted(
            (r.dagster_run for r in instance.get_run_records(dg.RunsFilter(job_name="training"))),
            key=lambda run: run.tags.get("mlplatform/trigger_partition", ""),
        )  # fmt: skip
        assert "mlplatform/trigger_check" not in first_training.tags
        for run in retrainings:  # requested by the sensor after a failed check, each with why
            assert run.tags["dagster/sensor_name"] == "retraining_sensor"
            assert run.tags["mlplatform/trigger_partition"] in {d.isoformat() for d in daily}
            assert f"failed on {run.tags['mlplatform/trigger_partition']}" in completed.stdout
        assert instance.get_latest_materialization_event(dg.AssetKey("online_feature_store"))
    assert (platform_home.home / "online" / "store.duckdb").is_file()
    decision, version = first_decision
    assert f"{decision}  version {version}" in completed.stdout  # the decision, one line each
    if decision == "promoted":  # every later day scored and monitored against the champion
        assert set(scored) == set(daily) and drift_days == set(daily)
        # Performance of every day after the history (judged once its labels matured), a
        # line each.
        assert set(performance) == set(daily)
        assert "model performance on matured labels" in completed.stdout
        after = completed.stdout.split("model performance")[-1]
        assert all(f"{day}  v" in after for day in daily)
        # Then the sensor judges the performance check: a retraining, or why none.
        assert "\nretraining_sensor: " in after
        assert f"{daily[0]}  " in completed.stdout and "scored by champion v1" in completed.stdout
    else:
        assert scored == {} and drift_days == set()
        assert f"{daily[0]}  no champion yet: not scored" in completed.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_one_ctrl_c_stops_the_demo_keeping_the_loaded_days_whole(
    platform_home: PlatformHome, signum: int
) -> None:
    """The demo's history run interrupted: the command says so and exits 130, that run
    failed and no other started, and every day in the warehouse is whole (its logged rows
    all there)."""
    command = [sys.executable, "-m", "mlplatform.cli", "demo", "--cards", "30",
               "--days", "40", "--history-days", "35"]  # fmt: skip
    with dg.DagsterInstance.get() as instance:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_until(
                lambda: instance.get_run_records(
                    dg.RunsFilter(
                        job_name="daily_ingestion", statuses=[dg.DagsterRunStatus.STARTED]
                    )
                ),
                "the history's range run to start",
            )
            process.send_signal(signum)
            output, _ = process.communicate(timeout=120)
        finally:
            process.kill()
        runs = instance.get_run_records()

    assert process.returncode == 130, output[-3000:]
    assert "stopped by Ctrl-C during daily_ingestion 2025-01-01 .. 2025-02-04" in output
    assert "`mlplatform demo` again goes on from there" in output
    ingestion = [r.dagster_run for r in runs if r.dagster_run.job_name == "daily_ingestion"]
    assert [run.status for run in ingestion] == [dg.DagsterRunStatus.FAILURE]
    assert not [r for r in runs if r.dagster_run.job_name == "training"]
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        loaded = conn.execute(
            "SELECT l.partition_date, l.rows_loaded, (SELECT count(*) FROM raw.transactions t "
            "WHERE t.partition_date = l.partition_date) FROM raw.ingestion_log l"
        ).fetchall()
    assert all(logged == in_table for _, logged, in_table in loaded), loaded

"""The `mlplatform` command: the demo that `make demo` runs, on a small simulation."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import duckdb

from tests.conftest import PlatformHome


def test_demo_runs_every_partition_in_one_run(platform_home: PlatformHome) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "demo", "--cards", "40", "--days", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        log = conn.execute(
            "SELECT partition_date, rows_read, rows_loaded, rows_quarantined FROM raw.ingestion_log"
        ).fetchall()
        curated_days = conn.execute(
            "SELECT count(DISTINCT partition_date) FROM curated.transactions"
        ).fetchone()[0]
    assert len(log) == 3 and curated_days == 3
    assert all(read == loaded + quarantined for _, read, loaded, quarantined in log)
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records(dg.RunsFilter(job_name="daily_ingestion"))
        assert len(runs) == 1  # the whole range in one run
        run = runs[0].dagster_run
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/asset_partition_range_start"] == "2025-01-01"
        assert run.tags["dagster/asset_partition_range_end"] == "2025-01-03"
        for asset in ("raw_transactions", "curated_transactions"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {
                "2025-01-01",
                "2025-01-02",
                "2025-01-03",
            }

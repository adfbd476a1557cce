"""A run killed with SIGKILL inside raw_transactions (holding the `warehouse` pool slot) does
not wedge the platform: it is marked failed with the reason, its slot is freed, and the next
run of the same partition succeeds - by the daemon where it runs, by `mlplatform runs
recover` where it does not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import dagster as dg
import duckdb
import pytest

from mlplatform.automation.recovery import process_is_gone
from tests.conftest import (
    BIN,
    FINISHED,
    REPO,
    PlatformHome,
    dagster_cli,
    dagster_daemon,
    simulate_landing,
    wait_until,
    warehouse_held_open,
)

pytestmark = pytest.mark.e2e

MATERIALIZE = [str(BIN / "dagster"), "asset", "materialize", "-m", "mlplatform.definitions",
               "--select", "raw_transactions", "--partition", "2025-01-01"]  # fmt: skip


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.message for entry in instance.all_logs(run_id)]


def _waiting_for_the_warehouse(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """The started run whose raw_transactions step holds the pool slot and waits for the
    warehouse file (another process holds it): a run in the middle of its load."""
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if any("is locked by PID" in m for m in _messages(instance, record.dagster_run.run_id)):
            return record.dagster_run
    return None


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    (record,) = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START).records
    return record.event_log_entry.dagster_event.pid


def _loaded_rows(platform_home: PlatformHome) -> list[tuple]:
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        return conn.execute(
            "SELECT partition_date::VARCHAR, status FROM raw.ingestion_log"
        ).fetchall()


def test_without_a_daemon_runs_recover_fails_the_dead_run_and_frees_its_slot(
    platform_home: PlatformHome, instance
) -> None:
    simulate_landing(platform_home.landing, days=1)
    with warehouse_held_open(platform_home.warehouse):
        cli = subprocess.Popen(
            MATERIALIZE, cwd=REPO, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        run = wait_until(lambda: _waiting_for_the_warehouse(instance), "the run to wait")
        os.killpg(cli.pid, signal.SIGKILL)  # the run and its step processes, as kill -9 would
        cli.wait()
    stuck = instance.get_run_by_id(run.run_id)
    holders = instance.event_log_storage.get_concurrency_run_ids()

    recovered = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "runs", "recover"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    again = subprocess.run(MATERIALIZE, cwd=REPO, capture_output=True, text=True, timeout=300)

    # Before: what the issue found - STARTED for ever, holding the pool slot.
    assert stuck.status == dg.DagsterRunStatus.STARTED and run.run_id in holders
    output = " ".join(recovered.stdout.split())
    assert f"run {run.run_id} (__ASSET_JOB, 2025-01-01) was STARTED but its process" in output
    assert "marked failed by `mlplatform runs recover`" in output
    assert f"freed the pool slots still held by run {run.run_id}" in output
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert any("its process (pid" in m for m in _messages(instance, run.run_id))  # in the UI
    assert run.run_id not in instance.event_log_storage.get_concurrency_run_ids()
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert _loaded_rows(platform_home) == [("2025-01-01", "loaded")]
    # `dagster asset materialize` of a partition from a shell loads the day and the instance
    # records the partition's materialization (test_pipeline checked the same command alone).
    records = instance.fetch_materializations(dg.AssetKey("raw_transactions"), limit=5)
    assert [r.partition_key for r in records.records] == ["2025-01-01"]


def _faster_monitoring(platform_home: PlatformHome) -> None:
    """The repo's dagster.yaml with the monitoring loop and slot grace at 2 s (not 30 s)."""
    config = platform_home.dagster_home / "dagster.yaml"
    text = config.read_text()
    for key in ("poll_interval_seconds", "free_slots_after_run_end_seconds"):
        assert f"{key}: 30" in text
        text = text.replace(f"{key}: 30", f"{key}: 2")
    config.write_text(text)


def _launch(partition: str) -> None:
    tags = json.dumps({"dagster/partition": partition})
    dagster_cli("job", "launch", "-j", "daily_ingestion", "--tags", tags)


def test_with_the_daemon_a_killed_run_fails_and_the_next_run_succeeds_unaided(
    platform_home: PlatformHome, instance
) -> None:
    _faster_monitoring(platform_home)
    simulate_landing(platform_home.landing, days=1)
    log = platform_home.dagster_home / "daemon.log"
    with dagster_daemon(platform_home.dagster_home):
        with warehouse_held_open(platform_home.warehouse):
            _launch("2025-01-01")
            run = wait_until(lambda: _waiting_for_the_warehouse(instance), "the run", log=log)
            pid = _run_pid(instance, run.run_id)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: process_is_gone(pid), "the run worker to die", log=log)
        _launch("2025-01-01")
        runs = wait_until(
            lambda: (
                records
                if len(records := instance.get_run_records(dg.RunsFilter())) == 2
                and all(r.dagster_run.status in FINISHED for r in records)
                else None
            ),
            "both runs to finish",
            log=log,
        )

    killed, next_run = sorted((r.dagster_run for r in runs), key=lambda r: r.run_id != run.run_id)
    assert killed.run_id == run.run_id and killed.status == dg.DagsterRunStatus.FAILURE
    assert any("SIGKILL" in m or "signal 9" in m for m in _messages(instance, killed.run_id))
    assert next_run.status == dg.DagsterRunStatus.SUCCESS
    assert _loaded_rows(platform_home) == [("2025-01-01", "loaded")]

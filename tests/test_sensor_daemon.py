"""The landing sensor run by a real `dagster-daemon` after an in-process load (as `make demo`
leaves the platform): nothing is requested for the loaded days, one run for a new day, and
one range run for a month of files dropped at once."""

from __future__ import annotations

import shutil
from datetime import date

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import TickStatus

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.features import card_features
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.assets.partitions import partition_range_tags
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from tests.conftest import (
    FINISHED,
    START,
    PlatformHome,
    dagster_cli,
    dagster_daemon,
    sensor_ticks,
    simulate_landing,
    wait_until,
)

pytestmark = pytest.mark.e2e

DAILY = [raw_transactions, curated_transactions, card_features]


def _load_in_process(instance: dg.DagsterInstance, last: date) -> None:
    """The reference and START..last in one in-process run each, as `mlplatform demo` does."""
    resources = build_resources(get_settings())
    dg.materialize([card_reference], instance=instance, resources=resources)
    dg.materialize(
        [card_reference, *DAILY],
        selection=DAILY,
        instance=instance,
        resources=resources,
        tags=partition_range_tags(START, last),
    )


def _sensor_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """Runs the sensor launched, oldest first."""
    records = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/sensor_name": "landing_sensor"})
    )
    return list(reversed(records))


def _finished(instance: dg.DagsterInstance, count: int) -> list[dg.RunRecord] | None:
    runs = _sensor_runs(instance)
    finished = all(r.dagster_run.status in FINISHED for r in runs)
    return runs if len(runs) >= count and finished else None


def test_sensor_requests_only_new_days_one_run_per_arrival(
    platform_home: PlatformHome, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_SENSOR_INTERVAL_SECONDS", "1")
    summary = simulate_landing(platform_home.landing, days=35, cards=20)
    parked = platform_home.home / "parked"
    parked.mkdir()
    for path in summary.files[3:]:
        shutil.move(path, parked / path.name)
    _load_in_process(instance, date(2025, 1, 3))
    log = platform_home.dagster_home / "daemon.log"

    with dagster_daemon(platform_home.dagster_home):
        dagster_cli("sensor", "start", "landing_sensor")
        first = wait_until(
            lambda: [t for t in sensor_ticks(instance, "landing_sensor") if t.is_completed],
            "the sensor's first tick",
            log=log,
        )[-1]
        shutil.move(parked / summary.files[3].name, summary.files[3])
        (new_day,) = wait_until(lambda: _finished(instance, 1), "the new day's run", log=log)
        for path in summary.files[4:]:
            shutil.move(parked / path.name, path)
        month = wait_until(lambda: _finished(instance, 2), "the month's run", log=log)[1]
        # A tick that started after the month's run was created saw every file: no more runs.
        wait_until(
            lambda: any(
                t.timestamp > month.create_timestamp.timestamp() and t.is_completed
                for t in sensor_ticks(instance, "landing_sensor")
            ),
            "a tick after the month's run",
            log=log,
        )
        runs = _sensor_runs(instance)

    assert first.status == TickStatus.SKIPPED
    assert (
        "3 files, transactions_2025-01-01.csv .. transactions_2025-01-03.csv: already loaded"
        in (first.skip_reason)
    )
    assert "cards.csv: the card reference already loaded" in first.skip_reason
    assert len(runs) == 2
    assert new_day.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert new_day.dagster_run.tags["dagster/partition"] == "2025-01-04"
    assert month.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    month_range = partition_range_tags(date(2025, 1, 5), date(2025, 2, 4))
    assert month_range.items() <= month.dagster_run.tags.items()
    assert len(instance.get_materialized_partitions(card_features.key)) == 35

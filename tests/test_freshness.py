"""Late or missing files: the nightly schedule skips a day with no file (saying why), and the
freshness check of raw_transactions fails, in the instance the UI reads, while it is late."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from mlplatform.assets.freshness import raw_transactions_landed_on_time
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.automation.jobs import landing_freshness_job
from mlplatform.automation.schedules import daily_ingestion_schedule
from mlplatform.datagen import SimulationConfig, simulate
from mlplatform.definitions import build_resources
from mlplatform.ingestion import landing_due_day
from mlplatform.settings import get_settings
from tests.conftest import PlatformHome, load_warehouse, simulate_landing

CHECK = dg.AssetCheckKey(raw_transactions.key, "landed_on_time")


def _nightly_tick(instance: dg.DagsterInstance, night: datetime) -> dg.RunRequest | dg.SkipReason:
    # As a context manager: the context opens an instance of its own from the reference and
    # closes it on exit (left open, it stays the current definitions-state storage after the
    # instance is gone, and a later definitions load in the process fails on it).
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=night,
        resources=build_resources(get_settings()),
    ) as context:
        return daily_ingestion_schedule(context)


def test_nightly_tick_skips_a_day_with_no_file_and_says_why(
    platform_home: PlatformHome, instance
) -> None:
    simulate_landing(platform_home.landing, days=3)
    load_warehouse(platform_home.landing, platform_home.warehouse)
    shutil.copy(
        platform_home.landing / "transactions_2025-01-03.csv",
        platform_home.home / "kept.csv",
    )
    (platform_home.landing / "transactions_2025-01-03.csv").unlink()

    missing = _nightly_tick(instance, datetime(2025, 1, 4, 2, tzinfo=UTC))
    shutil.move(
        platform_home.home / "kept.csv", platform_home.landing / "transactions_2025-01-03.csv"
    )
    arrived = _nightly_tick(instance, datetime(2025, 1, 4, 2, tzinfo=UTC))
    loaded = _nightly_tick(instance, datetime(2025, 1, 3, 2, tzinfo=UTC))

    assert isinstance(missing, dg.SkipReason)
    assert missing.skip_message.startswith(
        f"no landing file for 2025-01-03 in {platform_home.landing}: not run. The landing "
        "sensor runs the day when its file arrives"
    )
    assert "fails if it has not been loaded by 2025-01-04 06:00 UTC" in missing.skip_message
    # The file is there but its day is loaded already (same content): no second load either.
    assert isinstance(arrived, dg.SkipReason) and "already loaded" in arrived.skip_message
    assert isinstance(loaded, dg.SkipReason) and "2025-01-02 is already loaded" in (
        loaded.skip_message
    )


def test_nightly_tick_runs_yesterday_when_its_file_is_new(
    platform_home: PlatformHome, instance
) -> None:
    simulate_landing(platform_home.landing, days=3)

    request = _nightly_tick(instance, datetime(2025, 1, 4, 2, tzinfo=UTC))

    assert isinstance(request, dg.RunRequest) and request.partition_key == "2025-01-03"


def _check_freshness(instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    """Run the `landing_freshness` job (as its hourly schedule does) on the instance."""
    defs = dg.Definitions(
        assets=[card_reference, raw_transactions],
        asset_checks=[raw_transactions_landed_on_time],
        jobs=[landing_freshness_job],
        resources=build_resources(get_settings()),
    )
    result = defs.resolve_job_def("landing_freshness").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _days_up_to_yesterday(platform_home: PlatformHome, monkeypatch, days: int) -> date:
    """Landing files for the `days` days that end yesterday; partitions start with them."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    first = yesterday - timedelta(days=days - 1)
    monkeypatch.setenv("MLPLATFORM_START_DATE", first.isoformat())
    simulate(
        SimulationConfig(n_cards=20, days=days, start_date=first, seed=7), platform_home.landing
    )
    return yesterday


def test_freshness_check_fails_while_the_due_day_is_not_loaded_then_passes(
    platform_home: PlatformHome, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_LANDING_DUE_HOURS", "0")  # yesterday is due from midnight
    yesterday = _days_up_to_yesterday(platform_home, monkeypatch, days=2)
    late_file = platform_home.landing / f"transactions_{yesterday}.csv"
    shutil.move(late_file, platform_home.home / "late.csv")
    load_warehouse(platform_home.landing, platform_home.warehouse)

    missing = _check_freshness(instance)
    shutil.move(platform_home.home / "late.csv", late_file)
    landed = _check_freshness(instance)
    load_warehouse(platform_home.landing, platform_home.warehouse)
    on_time = _check_freshness(instance)

    assert landing_due_day(datetime.now(UTC), 0) == yesterday
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.ERROR
    assert missing.description == (
        f"{yesterday} is late: its landing file was due by "
        f"{yesterday + timedelta(days=1)} 00:00 UTC (MLPLATFORM_LANDING_DUE_HOURS=0); no "
        f"landing file for {yesterday} in {platform_home.landing} (the landing sensor loads "
        "it when it arrives)."
    )
    assert not landed.passed
    assert f"transactions_{yesterday}.csv landed and is not loaded yet" in landed.description
    assert on_time.passed
    # What the UI shows on the asset's Checks tab: the latest evaluation, recorded.
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
    assert latest.status.value == "SUCCEEDED"


def test_freshness_check_fails_for_a_missing_day_under_the_default_due_hours(
    platform_home: PlatformHome, instance
) -> None:
    """The demo's history ended long ago: the day that is due now has no file."""
    simulate_landing(platform_home.landing, days=2)
    load_warehouse(platform_home.landing, platform_home.warehouse)

    evaluation = _check_freshness(instance)

    due = landing_due_day(datetime.now(UTC), get_settings().landing_due_hours)
    assert not evaluation.passed
    assert evaluation.description.startswith(f"{due} is late")
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
    assert latest.status.value == "FAILED"

"""The landing sensor: what the warehouse has loaded is never requested again, files that
arrive together are one range run, a corrected file gets its run, and every skip says why."""

from __future__ import annotations

import os
import shutil

import dagster as dg

from mlplatform.assets.ingestion import card_reference
from mlplatform.automation.sensors import landing_sensor
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from tests.conftest import PlatformHome, load_warehouse, simulate_landing, warehouse_held_open

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=build_resources(get_settings())
    ) as context:
        return landing_sensor(context)


def _daily(result: dg.SensorResult) -> list[dg.RunRequest]:
    return [r for r in result.run_requests if r.job_name == "daily_ingestion"]


def _days(request: dg.RunRequest) -> tuple[str, str]:
    """(first, last) partition of a request: one partition, or a range in one run."""
    if request.partition_key:
        return request.partition_key, request.partition_key
    return request.tags[RANGE_START], request.tags[RANGE_END]


def test_files_that_arrive_together_are_one_range_run_requested_once(
    platform_home: PlatformHome, instance
):
    simulate_landing(platform_home.landing, days=31, cards=20)

    first = _tick(instance, None)
    again = _tick(instance, first.cursor)

    daily = _daily(first)
    assert [_days(r) for r in daily] == [("2025-01-01", "2025-01-31")]
    assert "31 files" in daily[0].tags["mlplatform/files"]
    assert {r.job_name for r in first.run_requests} == {"daily_ingestion", "reference_data"}
    assert again.run_requests == []


def test_one_new_file_is_one_partition_keyed_by_its_hash(platform_home: PlatformHome, instance):
    simulate_landing(platform_home.landing, days=1)

    (request,) = _daily(_tick(instance, None))

    sha = request.tags["mlplatform/sha256"]
    assert request.partition_key == "2025-01-01" and len(sha) == 64
    assert request.run_key == f"2025-01-01:{sha}"


def test_corrected_file_gets_a_new_run_key_and_a_touched_one_does_not(
    platform_home: PlatformHome, instance
):
    summary = simulate_landing(platform_home.landing, days=1)
    first = _tick(instance, None)
    path = summary.files[0]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))  # same bytes, new mtime
    touched = _tick(instance, first.cursor)
    path.write_text(path.read_text().replace(",0\n", ",1\n", 1))  # a corrected label
    corrected = _tick(instance, touched.cursor)

    (before,) = _daily(first)
    assert touched.run_requests == []
    assert "touched, same content" in touched.skip_reason.skip_message
    (after,) = _daily(corrected)
    assert after.partition_key == "2025-01-01" and after.run_key != before.run_key


def test_files_the_warehouse_loaded_are_not_requested_a_corrected_and_a_new_day_are(
    platform_home: PlatformHome, instance
):
    """Days loaded outside Dagster (the domain functions, as the CLI does) and the reference
    by a Dagster run: a fresh sensor cursor requests none of them; then a corrected day 2 and
    a new day 4, not consecutive, are a run each."""
    summary = simulate_landing(platform_home.landing, days=4)
    parked = platform_home.home / "day4.csv"
    shutil.move(summary.files[3], parked)
    load_warehouse(platform_home.landing, platform_home.warehouse)
    dg.materialize([card_reference], instance=instance, resources=build_resources(get_settings()))

    after_load = _tick(instance, None)
    day2 = summary.files[1]
    day2.write_text(day2.read_text().replace(",0\n", ",1\n", 1))
    shutil.move(parked, summary.files[3])
    arrivals = _tick(instance, after_load.cursor)

    assert after_load.run_requests == []
    assert after_load.skip_reason.skip_message == (
        "cards.csv: the card reference already loaded (same SHA-256); "
        "3 files, transactions_2025-01-01.csv .. transactions_2025-01-03.csv: already loaded "
        "for its partition, same SHA-256 (raw.ingestion_log)"
    )
    assert [_days(r) for r in _daily(arrivals)] == [
        ("2025-01-02", "2025-01-02"),
        ("2025-01-04", "2025-01-04"),
    ]


def test_a_locked_warehouse_does_not_fail_the_tick_the_cursor_decides(
    platform_home: PlatformHome, instance
):
    simulate_landing(platform_home.landing, days=2)
    load_warehouse(platform_home.landing, platform_home.warehouse)

    with warehouse_held_open(platform_home.warehouse):
        locked = _tick(instance, None)

    # Loaded, but the sensor cannot see it: it requests by its cursor, and the runs wait.
    assert [_days(r) for r in _daily(locked)] == [("2025-01-01", "2025-01-02")]


def test_file_outside_the_partitions_is_skipped_with_the_reason(
    platform_home: PlatformHome, instance
):
    (platform_home.landing / "transactions_2024-12-31.csv").write_text("x\n")
    result = _tick(instance, None)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == (
        "transactions_2024-12-31.csv: no daily partition (yet) for the date in its name"
    )

"""The landing sensor: run keys from file hashes, one run per new or corrected file."""

from __future__ import annotations

import os

import dagster as dg

from mlplatform.automation.sensors import landing_sensor
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from tests.conftest import PlatformHome, simulate_landing


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=build_resources(get_settings())
    )
    return landing_sensor(context)


def test_new_files_request_their_partitions_once(platform_home: PlatformHome, instance):
    simulate_landing(platform_home.landing, days=2)

    first = _tick(instance, None)
    again = _tick(instance, first.cursor)

    daily = sorted(r.partition_key for r in first.run_requests if r.partition_key)
    assert daily == ["2025-01-01", "2025-01-02"]
    assert {r.job_name for r in first.run_requests} == {"daily_ingestion", "reference_data"}
    for request in first.run_requests:
        sha = request.tags["mlplatform/sha256"]
        assert request.run_key.endswith(sha) and len(sha) == 64
    assert again.run_requests == []


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

    before = {r.partition_key: r.run_key for r in first.run_requests if r.partition_key}
    assert touched.run_requests == []
    after = [r for r in corrected.run_requests if r.partition_key]
    assert len(after) == 1 and after[0].run_key != before["2025-01-01"]
    assert after[0].partition_key == "2025-01-01"


def test_file_outside_the_partitions_is_skipped(platform_home: PlatformHome, instance):
    (platform_home.landing / "transactions_2024-12-31.csv").write_text("x\n")
    result = _tick(instance, None)
    assert result.run_requests == []

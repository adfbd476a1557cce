"""Compute cost of asset materializations: metadata on the event and rows in
`monitoring.compute_cost`, from real runs of platform assets on a real Dagster instance."""

from __future__ import annotations

import time

import dagster as dg
import duckdb
import pytest
from conftest import PlatformHome, simulate_landing, wait_until

from mlplatform.assets.cost import with_compute_cost
from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.assets.performance import model_performance
from mlplatform.assets.training_data import target_labels
from mlplatform.definitions import build_resources, defs
from mlplatform.monitoring import compute_cost
from mlplatform.monitoring.compute_cost import (
    CostMeter,
    cost_record,
    load_compute_cost,
    write_cost_record,
)
from mlplatform.settings import get_settings
from mlplatform.warehouse.connection import connect

COST_KEYS = {"compute_seconds", "cpu_seconds", "peak_mb"}
MB = 1024 * 1024


def _burn_cpu(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass


@dg.asset
@with_compute_cost
def burns_cpu() -> dg.MaterializeResult:
    """Half a second of CPU in this thread, holding 300 MB (touched)."""
    held = bytearray(300 * MB)
    held[::4096] = b"x" * len(held[::4096])
    _burn_cpu(0.5)
    return dg.MaterializeResult(metadata={"dagster/row_count": len(held) // MB})


@dg.asset
@with_compute_cost
def sleeps() -> None:
    """Half a second of waiting: wall time, hardly any CPU."""
    time.sleep(0.5)


def _costs(warehouse) -> dict[str, tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rows = conn.execute(
            "SELECT asset, run_id, partition, seconds, cpu_seconds, peak_mb, rows "
            "FROM monitoring.compute_cost"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    (event,) = [
        e for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]  # fmt: skip
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_every_materialization_records_its_cost_as_metadata_and_in_the_table(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    simulate_landing(platform_home.landing, days=2)
    resources = build_resources(get_settings())
    # Outside the warehouse pool: the cost waits as a file until a warehouse asset loads it.
    measured = dg.materialize([burns_cpu, sleeps], instance=instance)
    assert not platform_home.warehouse.exists()
    assert len(list(get_settings().compute_cost_dir.glob("*.json"))) == 2
    dg.materialize([card_reference], instance=instance, resources=resources)
    daily = dg.materialize(
        [card_reference, raw_transactions, curated_transactions], instance=instance,
        resources=resources, selection=[raw_transactions, curated_transactions],
        partition_key="2025-01-02",
    )  # fmt: skip
    assert measured.success and daily.success
    costs = _costs(platform_home.warehouse)
    assert set(costs) == {"burns_cpu", "sleeps", "card_reference", "raw_transactions",
                          "curated_transactions"}  # fmt: skip
    assert list(get_settings().compute_cost_dir.glob("*.json")) == []  # all loaded
    for asset in ("raw_transactions", "curated_transactions"):
        run_id, partition, seconds, cpu_seconds, peak_mb, rows = costs[asset]
        shown = _metadata(daily, asset)
        assert set(shown) >= COST_KEYS
        assert (run_id, partition, rows) == (daily.run_id, "2025-01-02", shown["dagster/row_count"])
        assert seconds > 0 and peak_mb > 0 and cpu_seconds > 0
        assert (shown["compute_seconds"], shown["peak_mb"]) == (
            round(seconds, 3),
            round(peak_mb, 1),
        )
    assert costs["card_reference"][1] is None  # unpartitioned

    # CPU time follows what the step did: burning the CPU, about its wall time; sleeping, little
    *_, burn_seconds, burn_cpu, burn_peak, burn_rows = costs["burns_cpu"]
    *_, sleep_seconds, sleep_cpu, sleep_peak, sleep_rows = costs["sleeps"]
    assert burn_cpu >= 0.5 and burn_cpu <= burn_seconds * 1.1 + 0.05
    assert sleep_seconds >= 0.5 and sleep_cpu < 0.5 * sleep_seconds
    # The peak is the step's own: the 300 MB held by one step do not show in the next one.
    assert burn_peak - sleep_peak > 250
    assert (burn_rows, sleep_rows) == (300, None)
    assert _metadata(measured, "burns_cpu")["cpu_seconds"] == round(burn_cpu, 3)


def test_a_run_records_one_row_per_asset_with_its_partition_or_range(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    simulate_landing(platform_home.landing, days=3)
    result = dg.materialize(
        [raw_transactions], instance=instance, resources=build_resources(get_settings()),
        tags={"dagster/asset_partition_range_start": "2025-01-01",
              "dagster/asset_partition_range_end": "2025-01-03"},
    )  # fmt: skip
    events = result.get_asset_materialization_events()
    assert len(events) == 3 and all(set(e.materialization.metadata) >= COST_KEYS for e in events)
    # The model_performance job: an unpartitioned asset in a run of one partition
    performance = dg.materialize(
        [target_labels, model_performance], instance=instance, partition_key="2025-01-03",
        resources=build_resources(get_settings()),
    )  # fmt: skip
    assert result.success and performance.success
    costs = _costs(platform_home.warehouse)
    assert costs["raw_transactions"][1] == "2025-01-01..2025-01-03"
    assert (costs["target_labels"][1], costs["model_performance"][1]) == (None, "2025-01-03")


def test_loading_the_same_records_again_changes_nothing(platform_home: PlatformHome) -> None:
    folder = get_settings().compute_cost_dir
    with CostMeter() as meter:
        _burn_cpu(0.05)
    record = cost_record(meter.cost, run_id="run-1", asset="a", partition=None, rows=None)
    with connect(platform_home.warehouse) as conn:
        write_cost_record(folder, record)
        assert load_compute_cost(conn, folder) == 1
        write_cost_record(folder, record)  # e.g. the files were restored from a backup
        retried = cost_record(meter.cost, run_id="run-1", asset="b", partition="2025-01-01", rows=5)
        write_cost_record(folder, retried)
        write_cost_record(folder, retried)  # a retried step replaces its record
        assert load_compute_cost(conn, folder) == 2
        assert load_compute_cost(conn, folder) == 0
        rows = conn.execute(
            "SELECT asset, partition, rows FROM monitoring.compute_cost ORDER BY asset"
        ).fetchall()
    assert rows == [("a", None, None), ("b", "2025-01-01", 5)]


def test_peak_memory_is_sampled_where_the_kernel_peak_cannot_be_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compute_cost, "_CLEAR_REFS", compute_cost.Path("/proc/self/no-such-file"))
    with CostMeter() as small:
        pass
    with CostMeter() as large:
        held = bytearray(200 * MB)
        held[::4096] = b"x" * len(held[::4096])
        # Held until the sampler (every 10 ms) has seen it: a loaded machine may not run its
        # thread within a fixed sleep.
        wait_until(lambda: large._sampler.peak_kb > small.cost.peak_mb * 1024 + 150 * 1024,
                   "the sampler to see the 200 MB", timeout=60)  # fmt: skip
        del held
    assert large.cost.peak_mb - small.cost.peak_mb > 150


def test_every_asset_of_the_platform_records_its_compute_cost() -> None:
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    assert len(assets) >= 12
    unmeasured = [
        a.key.to_user_string()
        for a in assets
        if not getattr(a.op.compute_fn.decorated_fn, "records_compute_cost", False)
    ]
    assert unmeasured == [], "apply @with_compute_cost (mlplatform/assets/cost.py) to these"

"""The ingestion and curation assets run by a real Dagster instance on real files."""

from __future__ import annotations

import dagster as dg
import duckdb

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from tests.conftest import PlatformHome, simulate_landing

ASSETS = [card_reference, raw_transactions, curated_transactions]


DAYS = ["2025-01-01", "2025-01-02", "2025-01-03"]
# Columns that say when a row was written, not what it holds.
WRITE_TIMES = {"raw.transactions": "ingested_at", "raw.quarantine": "quarantined_at"}


def _materialize(
    instance: dg.DagsterInstance, partition: str, **kwargs
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS,
        partition_key=partition,
        instance=instance,
        resources=build_resources(get_settings()),
        selection=[raw_transactions, curated_transactions],
        **kwargs,
    )


def _materialize_range(
    instance: dg.DagsterInstance, first: str, last: str, **kwargs
) -> dg.ExecuteInProcessResult:
    """One run over the partition range first..last (Dagster's partition-range run tags)."""
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=build_resources(get_settings()),
        selection=[raw_transactions, curated_transactions],
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        **kwargs,
    )


def _load_reference(instance: dg.DagsterInstance) -> None:
    dg.materialize(ASSETS, instance=instance, resources=build_resources(get_settings()),
                   selection=[card_reference])  # fmt: skip


def _tables(warehouse) -> dict[str, list[tuple]]:
    """Every row of the partitioned tables, sorted, without the columns that are write times."""
    out = {}
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for table in ("raw.transactions", "raw.quarantine", "curated.transactions"):
            exclude = f"EXCLUDE ({WRITE_TIMES[table]})" if table in WRITE_TIMES else ""
            out[table] = conn.execute(f"SELECT * {exclude} FROM {table} ORDER BY ALL").fetchall()
    return out


def _materialized_partitions(instance: dg.DagsterInstance, asset: str) -> dict[str, str]:
    """Partition -> id of the run that materialized it last, as the Dagster instance records."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    latest: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        latest[record.partition_key] = record.run_id
    return latest


def test_partition_flows_from_landing_to_curated_with_checks(platform_home: PlatformHome, instance):
    summary = simulate_landing(platform_home.landing, malformed_rate=0.02)
    dg.materialize(ASSETS, instance=instance, resources=build_resources(get_settings()),
                   selection=[card_reference])  # fmt: skip

    result = _materialize(instance, "2025-01-02")

    assert result.success
    raw_meta = result.asset_materializations_for_node("raw_transactions")[0].metadata
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        loaded, quarantined = conn.execute(
            "SELECT (SELECT count(*) FROM raw.transactions), (SELECT count(*) FROM raw.quarantine)"
        ).fetchone()
        curated = conn.execute("SELECT count(*) FROM curated.transactions").fetchone()[0]
        with_reference = conn.execute(
            "SELECT count(*) FROM curated.transactions WHERE credit_limit IS NOT NULL"
        ).fetchone()[0]
    data_rows = sum(1 for _ in summary.files[1].open()) - 1
    assert raw_meta["rows_loaded"].value == loaded
    assert raw_meta["rows_quarantined"].value == quarantined > 0
    assert raw_meta["rows_read"].value == loaded + quarantined
    assert loaded + quarantined == data_rows  # every row of the file is accounted for
    assert curated == loaded and with_reference == curated
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks if c.asset_key.path == ["curated_transactions"]} >= {
        "schema", "required_not_null", "card_in_reference", "row_count_matches_raw"
    }  # fmt: skip
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]


def test_blocking_check_stops_bad_reference_and_says_why(platform_home: PlatformHome, instance):
    simulate_landing(platform_home.landing)
    cards = platform_home.landing / "cards.csv"
    lines = cards.read_text().splitlines()
    cards.write_text("\n".join(lines[:-5]) + "\n")  # five cards lose their reference row
    dg.materialize(ASSETS, instance=instance, resources=build_resources(get_settings()),
                   selection=[card_reference])  # fmt: skip

    result = _materialize(instance, "2025-01-01", raise_on_error=False)

    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [c.check_name for c in failed] == ["card_in_reference"]
    details = failed[0].metadata["failed_expectations"].value[0]
    assert details["rows_failing"] > 0 and details["examples"]
    assert "expect_column_values_to_be_in_set" in details["expectation"]


def test_missing_landing_file_fails_the_partition_with_its_name(
    platform_home: PlatformHome, instance
):
    result = _materialize(instance, "2025-01-05", raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "no landing file for 2025-01-05" in failure


def test_range_run_materializes_every_partition_like_per_partition_runs(
    platform_home: PlatformHome, instance
):
    simulate_landing(platform_home.landing, malformed_rate=0.02)
    _load_reference(instance)

    ranged = _materialize_range(instance, DAYS[0], DAYS[-1])

    assert ranged.success
    # One run; the instance records a materialization of every partition of both assets.
    for asset in ("raw_transactions", "curated_transactions"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAYS)
        assert _materialized_partitions(instance, asset) == dict.fromkeys(DAYS, ranged.run_id)
    # Each partition's materialization carries its own figures, and the run's totals.
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        loaded = dict(
            conn.execute(
                "SELECT strftime(partition_date, '%Y-%m-%d'), count(*) FROM raw.transactions "
                "GROUP BY 1"
            ).fetchall()
        )
        logged_runs = conn.execute("SELECT DISTINCT run_id FROM raw.ingestion_log").fetchall()
    events = ranged.asset_materializations_for_node("raw_transactions")
    assert {e.partition: e.metadata["rows_loaded"].value for e in events} == loaded
    assert {e.partition: e.metadata["dagster/row_count"].value for e in events} == loaded
    assert all(e.metadata["range_rows_loaded"].value == sum(loaded.values()) for e in events)
    # The table of the partitions on the range's last one only (on each, days² in all).
    (table,) = [e.metadata["range_by_partition"].value for e in events if e.partition == DAYS[-1]]
    assert all(f"| {day} |" in table for day in DAYS)
    assert all("range_by_partition" not in e.metadata for e in events if e.partition != DAYS[-1])
    # The column schema (the same for all) on the last partition only, the latest one.
    schemas = [e.partition for e in events if "dagster/column_schema" in e.metadata]
    assert schemas == [DAYS[-1]]
    assert logged_runs == [(ranged.run_id,)]
    # Checks: one result per check, covering every partition of the run.
    checks = ranged.get_asset_check_evaluations()
    assert len(checks) == 6 + 8 and all(c.passed for c in checks)
    assert all(c.metadata["partitions_checked"].value == len(DAYS) for c in checks)
    after_range = _tables(platform_home.warehouse)
    assert all(after_range.values())

    again = _materialize_range(instance, DAYS[0], DAYS[-1])
    assert again.success
    assert _tables(platform_home.warehouse) == after_range  # idempotent

    for day in DAYS:  # the same days, one run each
        assert _materialize(instance, day).success
    assert _tables(platform_home.warehouse) == after_range
    assert len(instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))) == 6


def test_rejected_file_in_a_range_fails_the_run_naming_it_and_the_other_days_load(
    platform_home: PlatformHome, instance
):
    summary = simulate_landing(platform_home.landing)
    _load_reference(instance)
    assert _materialize_range(instance, DAYS[0], DAYS[-1]).success
    before = _tables(platform_home.warehouse)
    bad = summary.files[1]
    assert DAYS[1] in bad.name
    bad.write_bytes(b"\x00\x01 not a csv \xff")  # day 2 is replaced by garbage

    result = _materialize_range(instance, DAYS[0], DAYS[-1], raise_on_error=False)

    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert failure.step_key == "raw_transactions"
    message = failure.event_specific_data.error.message
    assert f"{DAYS[1]}: rejected {bad}: binary content" in message
    assert "1 of 3 partitions not loaded" in message
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        log = conn.execute(
            "SELECT strftime(partition_date, '%Y-%m-%d'), file, status FROM raw.ingestion_log "
            "WHERE run_id = ? ORDER BY 1",
            [result.run_id],
        ).fetchall()
    # Days 1 and 3 were loaded again by this run, in order; day 2 was rejected and kept its rows.
    assert [(day, status) for day, _, status in log] == [
        (DAYS[0], "loaded"), (DAYS[1], "rejected"), (DAYS[2], "loaded")
    ]  # fmt: skip
    assert log[1][1] == bad.name
    assert _tables(platform_home.warehouse) == before
    # Dagster records what landed: days 1 and 3 materialized by the failed run, day 2 not.
    latest = _materialized_partitions(instance, "raw_transactions")
    assert latest[DAYS[0]] == latest[DAYS[2]] == result.run_id != latest[DAYS[1]]
    # ... so day 2 alone counts as a failed partition (planned by the run, not materialized).
    storage = instance.event_log_storage
    failed = storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        dg.AssetKey("raw_transactions")
    )
    assert {day: run_id for day, (run_id, _) in failed.items()} == {DAYS[1]: result.run_id}
    # Curation did not run: its upstream step failed.
    assert result.asset_materializations_for_node("curated_transactions") == []


def test_range_check_fails_if_any_day_fails_and_names_the_days(
    platform_home: PlatformHome, instance
):
    simulate_landing(platform_home.landing)
    cards = platform_home.landing / "cards.csv"
    lines = cards.read_text().splitlines()
    cards.write_text("\n".join(lines[:-5]) + "\n")  # five cards lose their reference row
    _load_reference(instance)

    result = _materialize_range(instance, DAYS[0], DAYS[-1], raise_on_error=False)

    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert [c.check_name for c in failed] == ["card_in_reference"]
    metadata = failed[0].metadata
    failing = metadata["failed_expectations"].value
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        expected = dict(
            conn.execute(
                "SELECT strftime(partition_date, '%Y-%m-%d'), count(*) FROM curated.transactions "
                "WHERE card_id NOT IN (SELECT card_id FROM raw.card_reference) GROUP BY 1"
            ).fetchall()
        )
    assert expected  # the simulation's last cards do spend in these days
    assert {f["partition"]: f["rows_failing"] for f in failing} == expected
    assert all(f["examples"] for f in failing)
    assert metadata["partitions_checked"].value == len(DAYS)
    assert metadata["partitions_failing"].value == len(expected)
    assert metadata["rows_failing"].value == sum(expected.values())
    assert all(f"| {day} |" in metadata["failing_partitions"].value for day in expected)
    assert all(day in failed[0].description for day in expected)

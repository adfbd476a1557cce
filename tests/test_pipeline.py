"""The ingestion and curation assets run by a real Dagster instance on real files."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import duckdb

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from tests.conftest import PlatformHome, simulate_landing

ASSETS = [card_reference, raw_transactions, curated_transactions]


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


def test_materialize_from_the_dagster_cli(platform_home: PlatformHome):
    simulate_landing(platform_home.landing, days=1)
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "mlplatform.definitions",
         "--select", "raw_transactions", "--partition", "2025-01-01"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw.transactions").fetchone()[0] > 0
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(dg.AssetKey("raw_transactions"), limit=5)
        assert [r.partition_key for r in records.records] == ["2025-01-01"]

"""The online feature store: what it holds, that it holds no PII, and its atomic replacement."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.features import card_features
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.assets.serving import online_feature_store
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.online_store import TABLES, write_online_store
from tests.conftest import PlatformHome, load_warehouse, simulate_landing

DAILY = [raw_transactions, curated_transactions, card_features, online_feature_store]


def _tables(store: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(store), read_only=True) as conn:
        names = conn.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY 1"
        ).fetchall()
        return {name: conn.execute(f"SELECT * FROM {name}").df() for (name,) in names}


def test_daily_run_writes_the_store_with_the_recent_history_and_pseudonyms_only(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    simulate_landing(platform_home.landing, days=3)
    resources = build_resources(get_settings())
    assets = [card_reference, *DAILY]
    dg.materialize(assets, instance=instance, resources=resources, selection=[card_reference])
    result = dg.materialize(
        assets, instance=instance, resources=resources, selection=DAILY,
        tags={"dagster/asset_partition_range_start": "2025-01-01",
              "dagster/asset_partition_range_end": "2025-01-03"},
    )  # fmt: skip
    assert result.success
    store = get_settings().online_store_path
    assert store == platform_home.home / "online" / "store.duckdb"
    assert sorted(p.name for p in store.parent.iterdir()) == ["store.duckdb"]  # nothing aside
    tables = _tables(store)
    assert sorted(tables) == sorted(TABLES)
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        curated = conn.execute("SELECT * FROM curated.transactions").df()
        reference = conn.execute("SELECT * FROM raw.card_reference").df()
    events = tables["curated.transactions"]
    # The warehouse's columns and types, every event of the lookback (3 days < 91 days).
    assert list(events.columns) == list(curated.columns)
    pd.testing.assert_frame_equal(
        events.sort_values("transaction_id", ignore_index=True),
        curated.sort_values("transaction_id", ignore_index=True),
    )
    assert events[["card_id", "event_time"]].equals(
        events[["card_id", "event_time"]].sort_values(["card_id", "event_time"])
    )  # stored by card, then time
    assert set(events.label.dropna()) <= {0, 1} and events.merchant.notna().all()
    assert len(tables["raw.card_reference"]) == len(reference) > 0
    (info,) = tables["online.store_info"].to_dict("records")
    assert info["events"] == len(curated) and info["cards"] == curated.card_id.nunique()
    assert info["last_event_time"] == curated.event_time.max()
    assert info["lookback_days"] > 90 and info["source_warehouse"] == str(platform_home.warehouse)
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == online_feature_store.key]  # fmt: skip
    metadata = event.materialization.metadata
    assert metadata["events"].value == len(curated) and metadata["cards"].value == info["cards"]
    assert metadata["last_event_time"].value == str(info["last_event_time"])
    # No card number, name, street or key anywhere in the store.
    landing = pd.concat(
        pd.read_csv(p, dtype=str) for p in sorted(platform_home.landing.glob("transactions_*.csv"))
    )
    secrets = {*landing.cc_num.dropna(), *landing["first"].dropna(), *landing["last"].dropna(),
               *landing.street.dropna(), "test-pii-key"}  # fmt: skip
    assert len(secrets) > 100
    for name, frame in tables.items():
        assert not {"card_number", "cc_num", "first_name", "last_name", "street"} & set(frame)
        for column in frame:
            values = set(frame[column].dropna().astype(str))
            assert not values & secrets, f"{name}.{column} holds PII"


def test_the_store_keeps_the_lookback_and_is_replaced_whole_under_an_open_reader(
    platform_home: PlatformHome, tmp_path: Path
) -> None:
    simulate_landing(platform_home.landing, days=3)
    load_warehouse(platform_home.landing, platform_home.warehouse)
    store = tmp_path / "online" / "store.duckdb"
    with connect(platform_home.warehouse) as conn:
        write_online_store(conn, store, lookback_days=30)
        last = conn.execute("SELECT max(event_time) FROM curated.transactions").fetchone()[0]
        recent = conn.execute(
            "SELECT count(*) FROM curated.transactions WHERE event_time >= ?",
            [last - timedelta(days=1)],
        ).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM curated.transactions").fetchone()[0]
        with duckdb.connect(str(store), read_only=True) as reader:
            assert reader.execute("SELECT count(*) FROM curated.transactions").fetchone()[0] == (
                total
            )
            result = write_online_store(conn, store, lookback_days=1)
            # The reader holds the old file: it still reads the old store, whole.
            old = reader.execute("SELECT count(*) FROM curated.transactions").fetchone()[0]
            assert old == total
    assert 0 < recent == result.events < total
    assert _tables(store)["online.store_info"].events.item() == recent
    assert sorted(p.name for p in store.parent.iterdir()) == ["store.duckdb"]


def test_a_failed_write_leaves_the_old_store_and_nothing_beside_it(
    platform_home: PlatformHome, tmp_path: Path
) -> None:
    simulate_landing(platform_home.landing, days=2)
    load_warehouse(platform_home.landing, platform_home.warehouse)
    store = tmp_path / "store.duckdb"
    with connect(platform_home.warehouse) as conn:
        before = write_online_store(conn, store, lookback_days=30)
        conn.execute("ALTER TABLE raw.card_reference RENAME TO card_reference_gone")
        with pytest.raises(duckdb.CatalogException):
            write_online_store(conn, store, lookback_days=1)
    assert _tables(store)["online.store_info"].events.item() == before.events
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

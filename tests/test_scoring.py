"""Batch scoring (`predictions`) and the challenger alias, on a small trained platform.

The module takes a copy of the suite's shared trained platform (real DuckDB file, real
MLflow SQLite store, real Dagster instance); a second registered version of the champion's
model files plays the new champion and the challenger. Tests that move an alias put it back.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import (
    START,
    PlatformHome,
    TrainedPlatform,
    environment,
    load_warehouse,
    simulate_landing,
)
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from mlplatform.assets.features import card_features
from mlplatform.assets.scoring import NO_CHAMPION, predictions
from mlplatform.cli import app
from mlplatform.contract import load_contract
from mlplatform.definitions import build_resources
from mlplatform.features.declarations import feature_registry
from mlplatform.features.offline import build_card_features
from mlplatform.ml.registry import CHAMPION, alias_version, configure
from mlplatform.serving.batch import KEYS, feature_batches, feature_matrix, score_partitions
from mlplatform.serving.model import CHALLENGER, load_version
from mlplatform.settings import DEFAULT_CONTRACT, Settings, get_settings
from mlplatform.warehouse.connection import connect


@dataclass(frozen=True)
class Platform:
    home: Path
    settings: Settings
    instance: dg.DagsterInstance
    client: MlflowClient
    scored_days: tuple[date, date]  # the days after the master table: scored by the tests


@pytest.fixture(scope="module")
def platform(
    trained_platform: TrainedPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    copy = trained_platform.copy(tmp_path_factory.mktemp("scoring"))
    with environment(copy.env), dg.DagsterInstance.get() as instance:
        settings = get_settings()
        client = configure(settings.tracking_uri)
        assert alias_version(client, settings.model_name, CHAMPION) == "1"
        # Version 2: the same model files registered again (a new champion to be).
        first = client.get_model_version(settings.model_name, "1")
        mlflow.register_model(first.source, settings.model_name, tags=first.tags)
        yield Platform(copy.home, settings, instance, client, copy.scored_days)


def _score(platform: Platform, first: date, last: date) -> dg.ExecuteInProcessResult:
    """One run of `predictions` over first..last (a backfill's single run)."""
    return dg.materialize(
        [predictions],
        instance=platform.instance,
        resources=build_resources(platform.settings),
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )


def _predictions(settings: Settings) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(
            "SELECT * EXCLUDE (scored_at) FROM ml.predictions ORDER BY transaction_id"
        ).df()


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = result.get_asset_materialization_events()[-1:]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_predictions_score_each_curated_transaction_once_with_the_champion_idempotently(
    platform: Platform,
) -> None:
    first, last = platform.scored_days
    once = _score(platform, first, last)
    rows = _predictions(platform.settings)
    again = _score(platform, first, last)
    assert once.success and again.success
    pd.testing.assert_frame_equal(_predictions(platform.settings), rows)  # idempotent
    handle = load_version(platform.settings.tracking_uri, platform.settings.model_name, "1")
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        curated = conn.execute(
            "SELECT transaction_id, card_id, partition_date FROM curated.transactions "
            "WHERE partition_date BETWEEN ? AND ? ORDER BY transaction_id",
            [first, last],
        ).df()
        features = conn.execute(
            "SELECT * FROM features.card_features WHERE partition_date BETWEEN ? AND ? "
            "ORDER BY transaction_id",
            [first, last],
        ).df()
    assert len(rows) == len(curated) > 0 and rows.transaction_id.is_unique
    pd.testing.assert_frame_equal(
        rows[["transaction_id", "card_id", "partition_date"]], curated, check_dtype=False
    )
    np.testing.assert_array_equal(rows.score.to_numpy(), handle.score(features))
    assert (rows.decision == (rows.score >= handle.threshold)).all()
    assert set(rows.model_version) == {"1"} and set(rows.model_name) == {handle.model_name}
    assert set(rows.dataset_version) == {handle.dataset_version} != {None}
    metadata = _metadata(again)
    assert metadata["status"] == f"scored by {handle.model_name} version 1"
    assert metadata["dagster/row_count"] == len(rows)
    assert metadata["model_version"] == "1"
    assert metadata["positive_share"] == pytest.approx(rows.decision.mean(), abs=1e-6)
    assert metadata["score_p50"] <= metadata["score_p90"] <= metadata["score_p99"]
    assert metadata["score_p50"] == pytest.approx(rows.score.median())


def test_a_day_scored_again_after_a_new_champion_records_the_new_version(
    platform: Platform,
) -> None:
    settings, client = platform.settings, platform.client
    first, last = platform.scored_days
    assert _score(platform, first, last).success
    client.set_registered_model_alias(settings.model_name, CHAMPION, "2")
    try:
        assert _score(platform, last, last).success
    finally:
        client.set_registered_model_alias(settings.model_name, CHAMPION, "1")
    rows = _predictions(settings)
    versions = rows.groupby("partition_date").model_version.unique().map(list).to_dict()
    days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
    assert versions == {pd.Timestamp(d): ["2" if d == last else "1"] for d in days}


def test_feature_batches_hold_the_keys_and_the_matrix_the_model_reads(platform: Platform) -> None:
    handle = load_version(platform.settings.tracking_uri, platform.settings.model_name, "1")
    first, last = platform.scored_days
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        batches = list(feature_batches(conn, handle.model.spec, first, last, rows=500))
        days = conn.sql(
            "FROM features.card_features WHERE partition_date BETWEEN $first AND $last",
            params={"first": first, "last": last},
        )
        keys, rows = days.select(*KEYS).to_arrow_table(), days.df()
    assert [b.num_rows for b in batches[:-1]] == [500] * (len(batches) - 1)
    assert pa.Table.from_batches(batches).select(list(KEYS)).equals(keys)
    matrix = np.vstack([feature_matrix(b) for b in batches])
    np.testing.assert_array_equal(matrix, handle.model.spec.matrix(rows))
    np.testing.assert_array_equal(handle.score_matrix(matrix), handle.score(rows))


def test_a_range_scored_in_chunks_equals_it_scored_in_one(
    platform: Platform, tmp_path: Path
) -> None:
    handle = load_version(platform.settings.tracking_uri, platform.settings.model_name, "1")
    first, last = platform.scored_days
    tables = {}
    for chunk_rows in (10**9, 300):
        shutil.copy(platform.settings.warehouse_path, tmp_path / f"{chunk_rows}.duckdb")
        with connect(tmp_path / f"{chunk_rows}.duckdb") as conn:
            result = score_partitions(conn, handle, first, last, chunk_rows=chunk_rows)
            tables[chunk_rows] = conn.execute(
                "SELECT * EXCLUDE (scored_at) FROM ml.predictions ORDER BY transaction_id"
            ).df()
        assert result.rows > 300 * 3
    pd.testing.assert_frame_equal(tables[300], tables[10**9], check_exact=True)


def test_a_write_that_fails_mid_range_leaves_the_days_as_they_were(
    platform: Platform, tmp_path: Path
) -> None:
    """The last chunk's insert breaks a NOT NULL rule of ml.predictions (a feature row without
    a card id, appended to the table, so read last) after earlier chunks were inserted: the
    whole range is rolled back, and the days keep the predictions they had."""
    handle = load_version(platform.settings.tracking_uri, platform.settings.model_name, "1")
    first, last = platform.scored_days
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(platform.settings.warehouse_path, path)
    query = "SELECT * FROM ml.predictions ORDER BY transaction_id"
    with connect(path) as conn:
        score_partitions(conn, handle, first, last)
        before = conn.execute(query).df()
        conn.execute("ALTER TABLE features.card_features ALTER COLUMN card_id DROP NOT NULL")
        conn.execute(
            "INSERT INTO features.card_features SELECT * REPLACE "
            "(transaction_id || '-nocard' AS transaction_id, NULL AS card_id) "
            "FROM features.card_features WHERE partition_date = ? LIMIT 1",
            [last],
        )
        with pytest.raises(duckdb.ConstraintException, match="card_id"):
            score_partitions(conn, handle, first, last, chunk_rows=300)
        pd.testing.assert_frame_equal(conn.execute(query).df(), before, check_exact=True)
    assert before.partition_date.nunique() == (last - first).days + 1


def test_challenger_command_sets_and_clears_the_alias_and_refuses_bad_versions(
    platform: Platform,
) -> None:
    def cli(*args: str) -> Result:  # in process: the module's environment is the platform's
        return CliRunner().invoke(app, ["challenger", *args])

    name = platform.settings.model_name
    champion = cli("1")
    assert champion.exit_code == 1 and "version 1" in champion.stdout
    assert "is the champion" in champion.stdout
    missing = cli("99")
    assert missing.exit_code == 1 and "has no version 99" in missing.stdout
    assert alias_version(platform.client, name, CHALLENGER) is None
    neither = cli()
    assert neither.exit_code == 2 and "VERSION or --clear" in neither.stdout
    done = cli("2")
    assert done.exit_code == 0, done.output
    assert "challenger is version 2 (was none)" in done.stdout
    assert alias_version(platform.client, name, CHALLENGER) == "2"
    cleared = cli("--clear")
    assert cleared.exit_code == 0 and "no challenger (was 2)" in cleared.stdout
    assert alias_version(platform.client, name, CHALLENGER) is None
    assert alias_version(platform.client, name, CHAMPION) == "1"  # untouched throughout


def test_predictions_before_any_champion_succeed_and_write_nothing(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    simulate_landing(platform_home.landing, days=2)
    load_warehouse(platform_home.landing, platform_home.warehouse)
    settings = get_settings()
    registry = feature_registry(settings, load_contract(DEFAULT_CONTRACT))
    with connect(platform_home.warehouse) as conn:
        build_card_features(conn, registry, START, START + timedelta(days=1))
    result = dg.materialize(
        [card_features, predictions], instance=instance, resources=build_resources(settings),
        selection=[predictions], partition_key=START.isoformat(),
    )  # fmt: skip
    assert result.success
    metadata = _metadata(result)
    assert metadata["status"] == NO_CHAMPION and metadata["dagster/row_count"] == 0
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM ml.predictions").fetchone()[0] == 0

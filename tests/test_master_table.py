"""The master table: splits, dataset version, feature selection, checks; the reference profile."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import START, load_warehouse

from mlplatform.contract import load_contract
from mlplatform.datagen import SimulationConfig, simulate
from mlplatform.features.declarations import Derived, Feature, feature_registry
from mlplatform.features.offline import build_card_features
from mlplatform.ml.master_table import (
    MasterTableError,
    build_master_table,
    master_table_checks,
)
from mlplatform.monitoring.profile import build_reference_profile
from mlplatform.settings import DEFAULT_CONTRACT, Settings
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.targets import build_targets

DAYS = 60
SETTINGS = Settings(home=Path("/nonexistent"), min_train_positives=5)
CONTRACT = load_contract(DEFAULT_CONTRACT)
REGISTRY = feature_registry(SETTINGS, CONTRACT)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("master")
    simulate(SimulationConfig(n_cards=100, days=DAYS, start_date=START, seed=21), root / "landing")
    path = root / "warehouse.duckdb"
    load_warehouse(root / "landing", path)
    with connect(path) as conn:
        build_card_features(conn, REGISTRY, START, START + timedelta(days=DAYS - 1))
        build_targets(conn, SETTINGS, CONTRACT)
    return path


@pytest.fixture
def copy(warehouse: Path, tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, path)
    return path


def test_splits_hold_out_the_latest_matured_days_and_group_validation_by_card(
    copy: Path, tmp_path: Path
) -> None:
    with connect(copy) as conn:
        result = build_master_table(conn, REGISTRY, SETTINGS, tmp_path / "datasets")
        table = conn.execute("SELECT * FROM ml.master_table").df()
        matured_days = conn.execute(
            "SELECT partition_date FROM ml.targets GROUP BY 1 HAVING bool_and(matured) "
            "ORDER BY 1 DESC LIMIT 7"
        ).fetchall()
        expected_rows = conn.execute(
            "SELECT count(*) FROM ml.targets WHERE target IS NOT NULL AND partition_date <= ?",
            [result.holdout_end],
        ).fetchone()[0]
        checks = master_table_checks(conn, SETTINGS)
    assert (result.holdout_start, result.holdout_end) == (matured_days[-1][0], matured_days[0][0])
    assert len(table) == expected_rows == sum(result.rows.values())
    assert table.target.notna().all()
    holdout = table[table.split == "holdout"]
    assert holdout.partition_date.dt.date.between(result.holdout_start, result.holdout_end).all()
    assert (table[table.split != "holdout"].partition_date.dt.date < result.holdout_start).all()
    train_cards = set(table[table.split == "train"].card_id)
    assert not train_cards & set(table[table.split == "validation"].card_id)
    in_sample = result.rows["train"] + result.rows["validation"]
    assert 0.1 < result.rows["validation"] / in_sample < 0.3
    assert result.positives["train"] >= 5 and result.positives["holdout"] >= 1
    assert [(c.name, c.passed) for c in checks] == [
        ("no_leakage", True),
        ("enough_rows_and_positives", True),
        ("splits_disjoint", True),
    ]


def test_the_snapshot_hash_is_the_dataset_version_and_is_reproducible(
    copy: Path, tmp_path: Path
) -> None:
    with connect(copy) as conn:
        first = build_master_table(conn, REGISTRY, SETTINGS, tmp_path / "a")
        second = build_master_table(conn, REGISTRY, SETTINGS, tmp_path / "b")
        differences = conn.execute(
            """SELECT (SELECT count(*) FROM (SELECT * FROM ml.master_table
                       EXCEPT ALL SELECT * FROM read_parquet($p))),
                      (SELECT count(*) FROM (SELECT * FROM read_parquet($p)
                       EXCEPT ALL SELECT * FROM ml.master_table)),
                      (SELECT count(*) FROM read_parquet($p))""",
            {"p": str(first.snapshot)},
        ).fetchone()
    assert differences == (0, 0, sum(first.rows.values()))
    assert first.version == second.version
    assert first.snapshot.read_bytes() == second.snapshot.read_bytes()
    assert first.version[:16] in first.snapshot.name
    assert list(tmp_path.glob("a/.*")) == []  # no staging file left behind


def test_feature_selection_drops_constant_missing_and_near_duplicate_features(
    copy: Path, tmp_path: Path
) -> None:
    extra = (
        Feature("always_one", Derived(np.ones_like, ("amount",)), "INTEGER", "A constant.",
                "transaction"),
        Feature("never_known", Derived(lambda a: np.full_like(a, np.nan), ("amount",)),
                "DOUBLE", "Always missing.", "transaction"),
        Feature("amount_in_cents", Derived(lambda a: a * 100 + 1, ("amount",)), "DOUBLE",
                "A twin of amount.", "transaction"),
    )  # fmt: skip
    registry = dataclasses.replace(REGISTRY, features=(*REGISTRY.features, *extra))
    with connect(copy) as conn:
        build_card_features(conn, registry, START, START + timedelta(days=DAYS - 1))
        result = build_master_table(conn, registry, SETTINGS, tmp_path)
        recorded = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT feature, kept, reason FROM ml.feature_selection"
            ).fetchall()
        }
        columns = [d[0] for d in conn.execute("SELECT * FROM ml.master_table LIMIT 0").description]
    assert recorded["always_one"] == (False, "constant (1)")
    assert recorded["never_known"] == (False, "all missing")
    assert recorded["amount_in_cents"][0] is False
    assert recorded["amount_in_cents"][1].startswith("near-duplicate of amount (|r| = 1.000)")
    assert recorded["amount"] == (True, "")
    assert not {"always_one", "never_known", "amount_in_cents"} & set(columns)
    assert set(result.features) == {f for f, (kept, _) in recorded.items() if kept}


def test_a_leaking_feature_fails_the_leakage_check(copy: Path, tmp_path: Path) -> None:
    """A source column that is the label itself (here, fraud as the target)."""
    contract = dataclasses.replace(CONTRACT, target="label")
    settings = Settings(home=Path("/nonexistent"), min_train_positives=1, label_delay_days=0)
    leak = Feature("fraud_flag", Derived(lambda label: label, ("label",)), "INTEGER",
                   "The label, leaked.", "transaction")  # fmt: skip
    registry = dataclasses.replace(REGISTRY, features=(*REGISTRY.features, leak))
    with connect(copy) as conn:
        build_card_features(conn, registry, START, START + timedelta(days=DAYS - 1))
        build_targets(conn, settings, contract)
        build_master_table(conn, registry, settings, tmp_path)
        checks = {c.name: c for c in master_table_checks(conn, settings)}
    assert not checks["no_leakage"].passed
    assert checks["no_leakage"].details["leaking_features"] == {"fraud_flag": 1.0}
    assert checks["splits_disjoint"].passed


def test_too_few_rows_or_positives_fail_their_check(copy: Path, tmp_path: Path) -> None:
    strict = Settings(home=Path("/nonexistent"), min_train_rows=10**9)
    with connect(copy) as conn:
        build_master_table(conn, REGISTRY, strict, tmp_path)
        checks = {c.name: c for c in master_table_checks(conn, strict)}
    assert not checks["enough_rows_and_positives"].passed
    assert checks["enough_rows_and_positives"].details["rows"]["train"] > 0
    assert checks["no_leakage"].passed


def test_no_matured_day_is_a_clear_error(tmp_path: Path) -> None:
    with connect(tmp_path / "w.duckdb") as conn:
        conn.execute(
            "INSERT INTO curated.transactions BY NAME SELECT 't1' AS transaction_id, "
            "TIMESTAMP '2025-01-01 10:00' AS event_time, DATE '2025-01-01' AS partition_date, "
            "'c' AS card_id, 5.0 AS amount, 10 AS hour, 3 AS weekday, false AS is_weekend, "
            "'f' AS source_file, 1 AS source_line"
        )
        build_card_features(conn, REGISTRY, START, START)
        build_targets(conn, SETTINGS, CONTRACT)
        with pytest.raises(MasterTableError, match="no day has fully matured targets"):
            build_master_table(conn, REGISTRY, SETTINGS, tmp_path)


def test_reference_profile_bins_the_training_split(copy: Path, tmp_path: Path) -> None:
    with connect(copy) as conn:
        result = build_master_table(conn, REGISTRY, SETTINGS, tmp_path)
        kinds = {f.name: f.dtype for f in REGISTRY.enabled if f.name in result.features}
        profile = build_reference_profile(conn, kinds, result.version, bins=10)
        rows = conn.execute("SELECT * FROM ml.training_reference_profile").df()
        train = conn.execute("SELECT * FROM ml.master_table WHERE split = 'train'").df()
    assert profile.rows == len(train) and (rows.dataset_version == result.version).all()
    assert (rows.groupby("feature")["count"].sum() == len(train)).all()
    amount = rows[rows.feature == "amount"].sort_values("bin")
    assert list(amount.bin) == list(range(10))
    assert amount.share.between(0.08, 0.12).all()  # deciles of a continuous amount
    first, last = amount.iloc[0], amount.iloc[-1]
    assert pd.isna(first.lower) and pd.isna(last.upper)
    assert (train.amount <= first.upper).sum() == first["count"]
    categories = rows[rows.feature == "category"].set_index("category")["count"]
    assert categories.to_dict() == train.category.value_counts().to_dict()
    missing = rows[(rows.feature == "card_seconds_since_previous") & (rows.bin == -1)]
    assert missing["count"].sum() == train.card_seconds_since_previous.isna().sum()


def test_bins_are_shared_with_drift_checks() -> None:
    from mlplatform.monitoring.profile import bin_sql

    with duckdb.connect() as conn:
        bins = conn.execute(
            f"SELECT {bin_sql('x', '[1.0, 2.0, 3.0]')} FROM "
            "(VALUES (0.5), (1.0), (1.5), (3.0), (9.0), (NULL)) AS v(x)"
        ).fetchall()
    assert [b[0] for b in bins] == [0, 0, 1, 2, 3, -1]

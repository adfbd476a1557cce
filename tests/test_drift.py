"""Drift statistics on known distributions, against scipy and Evidently, and the day's reference.

Reference samples are profiled with the platform's own profile code into a real DuckDB
warehouse; days are compared from the stored bins alone.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from mlplatform.monitoring.drift import (
    DriftRule,
    FeatureDrift,
    compare,
    data_drift,
    effective_rows,
    judge_data_drift,
    prediction_drift,
    reference_profile,
    store_drift,
)
from mlplatform.monitoring.profile import build_reference_profile, record_model_profile
from mlplatform.warehouse.connection import connect

CATEGORIES = [f"c{i:02d}" for i in range(14)]
MERCHANTS = [f"m{i:03d}" for i in range(300)]
REFERENCE_ROWS = 200_000
KINDS = {"amount": "DOUBLE", "flag": "DOUBLE", "category": "VARCHAR", "merchant": "VARCHAR"}


def _shares(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    small = rng.dirichlet(np.full(len(CATEGORIES), 2.0))
    zipf = 1 / np.arange(1, len(MERCHANTS) + 1)
    return small, zipf / zipf.sum()


SMALL, WIDE = _shares(np.random.default_rng(0))


def draw(
    rows: int,
    seed: int,
    *,
    shift: float = 0.0,
    scale: float = 1.0,
    category_shares: np.ndarray = SMALL,
    flag_share: float = 0.3,
) -> pd.DataFrame:
    """``rows`` rows of the population: amount lognormal (location ``shift``, spread
    ``scale``), a 0/1 flag, 14 categories and 300 Zipf-distributed merchants."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "amount": np.exp(rng.normal(3 + shift, 0.8 * scale, rows)),
        "flag": (rng.random(rows) < flag_share).astype(float),
        "category": rng.choice(CATEGORIES, rows, p=category_shares),
        "merchant": rng.choice(MERCHANTS, rows, p=WIDE),
    })  # fmt: skip


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    """A warehouse whose reference (dataset ``v1``) profiles 200,000 rows of the population."""
    conn = connect(tmp_path_factory.mktemp("drift") / "warehouse.duckdb")
    conn.register("population", draw(REFERENCE_ROWS, seed=1))
    conn.execute("CREATE TABLE reference_rows AS SELECT * FROM population")
    build_reference_profile(conn, KINDS, "v1", bins=10, source="reference_rows")
    yield conn
    conn.close()


def _compare(conn: duckdb.DuckDBPyConnection, day: pd.DataFrame) -> dict[str, object]:
    conn.register("day_rows", day)
    try:
        results = compare(conn, reference_profile(conn, "v1"), "SELECT * FROM day_rows")
    finally:
        conn.unregister("day_rows")
    return {r.feature: r for r in results}


def test_statistics_match_scipy_on_the_exact_samples(warehouse: duckdb.DuckDBPyConnection) -> None:
    reference = warehouse.execute("SELECT * FROM reference_rows").df()
    day = draw(100_000, seed=2, shift=0.1, scale=1.3)
    drift = _compare(warehouse, day)
    exact = wasserstein_distance(reference.amount, day.amount) / reference.amount.std(ddof=0)
    # From ten bins' means, within 2% of the exact normed distance of the raw values.
    assert drift["amount"].distance_name == "wasserstein_normed"
    assert drift["amount"].distance == pytest.approx(exact, rel=0.02)
    for name in ("category", "merchant"):
        p = reference[name].value_counts(normalize=True)
        q = day[name].value_counts(normalize=True).reindex(p.index, fill_value=0)
        assert drift[name].distance_name == "jensen_shannon"
        assert drift[name].distance == pytest.approx(jensenshannon(p, q), rel=1e-6)
    # A 0/1 number has two values: compared as a category (Evidently's rule).
    assert drift["flag"].distance_name == "jensen_shannon"
    assert drift["amount"].rows == 100_000


@pytest.mark.parametrize("rows", [100_000, 800])
def test_a_shift_is_flagged_and_no_shift_is_not(
    warehouse: duckdb.DuckDBPyConnection, rows: int
) -> None:
    moved = SMALL.copy()
    moved[:3] = moved[:3] * 4  # the first three categories four times as frequent
    moved /= moved.sum()
    shifted = _compare(
        warehouse, draw(rows, seed=3, shift=0.5, category_shares=moved, flag_share=0.6)
    )
    unchanged = _compare(warehouse, draw(rows, seed=4))
    for name in ("amount", "flag", "category"):
        assert shifted[name].drifted, shifted[name]
        assert not unchanged[name].drifted, unchanged[name]
    assert not shifted["merchant"].drifted and not unchanged["merchant"].drifted
    assert shifted["amount"].psi > 0.25 > unchanged["amount"].psi


def test_unchanged_small_days_raise_false_alarms_at_about_the_nominal_rate(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    """200 unchanged days of 800 rows: the distance alone flags the 300-merchant feature on
    every one (its noise at 800 rows is over 0.1); the test keeps alarms near 5%."""
    flagged = {"category": 0, "merchant": 0}
    over_distance = 0
    for seed in range(200):
        drift = _compare(warehouse, draw(800, seed=1000 + seed))
        for name in flagged:
            flagged[name] += drift[name].drifted
        over_distance += drift["merchant"].distance >= 0.1
    assert over_distance == 200
    assert flagged["category"] <= 20 and flagged["merchant"] <= 20, flagged


def _amount(results: list[FeatureDrift]) -> FeatureDrift:
    (amount,) = [r for r in results if r.feature == "amount"]
    return amount


def test_rows_clustered_by_card_count_at_their_effective_size(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    """A cardholder's values repeat on every row of the card: 200 unchanged days of 80 cards
    with 10 rows each. Counted as 800 independent rows, the test rejects "unchanged" on
    most days; at Kish's effective size (80 rows) on about 5%."""
    profile = reference_profile(warehouse, "v1")
    alarms = {"independent": 0, "effective": 0}
    for seed in range(200):
        cards = draw(80, seed=2000 + seed)
        day = cards.loc[cards.index.repeat(10)].assign(card_id=np.repeat(np.arange(80), 10))
        warehouse.register("day_rows", day)
        try:
            size = effective_rows(warehouse, "SELECT * FROM day_rows", "card_id", {})
            independent = _amount(compare(warehouse, profile, "SELECT * FROM day_rows"))
            effective = _amount(compare(warehouse, profile, "SELECT * FROM day_rows",
                                        effective=dict.fromkeys(KINDS, size)))  # fmt: skip
        finally:
            warehouse.unregister("day_rows")
        assert size == 80 and effective.effective_rows == 80 and independent.effective_rows == 800
        alarms["independent"] += independent.significant
        alarms["effective"] += effective.significant
    assert alarms["independent"] >= 100 and alarms["effective"] <= 20, alarms


def test_the_same_verdict_as_evidently_on_large_samples(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference = warehouse.execute("SELECT * FROM reference_rows").df()
    moved = np.roll(SMALL, 3)
    cases = {
        "unchanged": {},
        "amount_up": {"shift": 0.3},
        "amount_wider": {"scale": 1.5},
        "amount_nudged": {"shift": 0.02},
        "categories_rotated": {"category_shares": moved},
        "flag_up": {"flag_share": 0.5},
        "flag_nudged": {"flag_share": 0.31},
    }
    definition = DataDefinition(numerical_columns=["amount", "flag"],
                                categorical_columns=["category", "merchant"])  # fmt: skip
    ours, theirs = {}, {}
    for case, options in cases.items():
        day = draw(50_000, seed=hash(case) % 10_000, **options)
        drift = _compare(warehouse, day)
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(day, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        for metric in snapshot.dict()["metrics"]:
            config = metric["config"]
            if config.get("column"):
                theirs[case, config["column"]] = metric["value"] >= config["threshold"]
                ours[case, config["column"]] = drift[config["column"]].drifted
    assert len(ours) == len(cases) * 4
    assert ours == theirs
    assert sum(theirs.values()) >= 4  # the cases drift some columns, not none


def test_a_day_is_compared_with_the_profile_of_the_version_that_scored_it(
    tmp_path: Path,
) -> None:
    day = date(2025, 3, 1)
    with connect(tmp_path / "warehouse.duckdb") as conn:
        conn.register("population", draw(20_000, seed=1))
        conn.execute("CREATE TABLE old_rows AS SELECT * FROM population")
        conn.register("population", draw(20_000, seed=2, shift=1.0))
        conn.execute("CREATE TABLE new_rows AS SELECT * FROM population")
        build_reference_profile(conn, KINDS, "old", bins=10, source="old_rows")
        build_reference_profile(conn, KINDS, "new", bins=10, source="new_rows")  # no promotion
        before = conn.execute("SELECT count(*) FROM ml.training_reference_profile").fetchall()
        build_reference_profile(conn, KINDS, "new", bins=10, source="new_rows")  # a rebuild
        after = conn.execute("SELECT count(*) FROM ml.training_reference_profile").fetchall()
        assert before == after  # a rebuild replaces its version's rows
        # The day's features look like the old data; the champion (version 7, trained on
        # "old") scored it.
        conn.register("population", draw(2_000, seed=3).assign(
            transaction_id=[f"t{i}" for i in range(2_000)], card_id="c", partition_date=day
        ))  # fmt: skip
        conn.execute("CREATE TABLE features.card_features AS SELECT * FROM population")
        conn.execute(
            "INSERT INTO ml.predictions SELECT transaction_id, card_id, partition_date, "
            "0.1, false, 'm', '7', 'old', now() FROM population"
        )
        rule = DriftRule()
        result = data_drift(conn, day, rule)
        assert result.scorer.model_version == "7" and result.scorer.dataset_version == "old"
        assert {f.feature for f in result.features} == set(KINDS)
        amount = {f.feature: f for f in result.features}["amount"]
        against_new = compare(conn, reference_profile(conn, "new"),
                              "SELECT * FROM features.card_features")  # fmt: skip
        assert not amount.drifted and [f.drifted for f in against_new if f.feature == "amount"]
        assert amount.psi < 0.05 and all(f.psi > 0.25 for f in against_new if f.feature == "amount")
        store_drift(conn, [result], ("numeric", "categorical"))
        store_drift(conn, [result], ("numeric", "categorical"))
        stored = conn.execute(
            "SELECT reference_dataset_version, count(*) FROM monitoring.drift GROUP BY 1"
        ).fetchall()
        assert stored == [("old", len(KINDS))]
        # No score profile of version 7 yet: prediction drift says so.
        assert prediction_drift(conn, day, rule).status == "no holdout score profile of version 7"
        record_model_profile(conn, "7", "old", np.full(500, 0.1), {"amount": 1.0}, bins=10)
        scores = prediction_drift(conn, day, rule)
        assert [f.feature for f in scores.features] == ["score"] and not scores.drifted
        # The service answered 300 of the day's transactions with version 7, scoring higher.
        conn.execute(
            "INSERT INTO monitoring.serving_log SELECT 'r' || i, now(), now(), ?, 'c', 't' || i, "
            "'m', '7', 'champion', true, 0.3, true, 1, 1, 1 FROM range(300) AS r(i)",
            [day],
        )
        served = {f.feature: f for f in prediction_drift(conn, day, rule).features}
        assert set(served) == {"score", "served_score"} and served["served_score"].rows == 300
        assert served["served_score"].drifted and not served["score"].drifted


def test_the_drift_check_judges_the_share_and_the_important_features(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    from mlplatform.monitoring.drift import DayDrift, Scorer

    moved = np.roll(SMALL, 3)
    features = tuple(_compare(warehouse, draw(50_000, seed=5, category_shares=moved)).values())
    day = DayDrift(date(2025, 3, 1), "computed", Scorer("1", "v1", 50_000), features)
    assert [f.feature for f in day.drifted] == ["category"]
    quiet = judge_data_drift(day, ["amount"], share_threshold=0.5, psi_threshold=0.25)
    assert quiet.passed and quiet.share == 0.25
    watched = judge_data_drift(day, ["category"], share_threshold=0.5, psi_threshold=0.25)
    assert not watched.passed and [f.feature for f in watched.watched] == ["category"]
    assert "category" in watched.reasons[0]
    share = judge_data_drift(day, [], share_threshold=0.25, psi_threshold=0.25)
    assert not share.passed and share.reasons == ("1 of 4 features drifted (25% >= 25%)",)


def test_known_edges_bin_as_the_list_expression_does() -> None:
    from mlplatform.monitoring.profile import bin_sql

    values = "(VALUES (0.5), (1.0), (1.5), (3.0), (9.0), (NULL), ('nan'::DOUBLE)) AS v(x)"
    with duckdb.connect() as conn:
        listed = conn.execute(f"SELECT {bin_sql('x', '[1.0, 2.0, 3.0]')} FROM {values}").fetchall()
        known = conn.execute(f"SELECT {bin_sql('x', [1.0, 2.0, 3.0])} FROM {values}").fetchall()
    assert known == listed == [(0,), (0,), (1,), (2,), (3,), (-1,), (3,)]


def test_the_reports_train_sample_counts_a_feature_only_once_its_window_was_full(
    tmp_path: Path,
) -> None:
    """As in the reference profile: a 30-day sum on the first 30 days of history is still
    filling up, so the Evidently report's train rows leave it missing there."""
    from mlplatform.monitoring.drift_report import train_sample

    days = pd.date_range("2025-01-01", periods=60).date
    snapshot = tmp_path / "snapshot.parquet"
    pd.DataFrame({
        "partition_date": days, "split": ["train"] * 50 + ["holdout"] * 10,
        "sum_30d": np.arange(60.0), "category": ["a"] * 60,
    }).to_parquet(snapshot)  # fmt: skip
    with duckdb.connect() as conn:
        sample = train_sample(
            conn, snapshot, {"sum_30d": "numeric", "category": "categorical"},
            {"sum_30d": date(2025, 1, 31)}, rows=1000,
        )  # fmt: skip
    assert len(sample) == 50  # the train split only
    assert sorted(sample.sum_30d.dropna()) == [float(i) for i in range(30, 50)]
    assert sample.category.eq("a").all()  # a feature without a warm-up counts on every row

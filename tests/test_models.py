"""Candidate models, the champion competition and the champion from Python.

The module takes a copy of the suite's shared trained platform (real DuckDB file, real
MLflow SQLite store, real Dagster instance: conftest's ``trained_platform``); the tests read
what its training run left behind, and the last test plays a worse challenger, a manual
promotion and a rollback on top of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TrainedPlatform, environment, shuffle_training_labels
from mlflow import MlflowClient
from sklearn.metrics import average_precision_score

from mlplatform import load_champion
from mlplatform.assets.models import candidate_asset, champion_asset
from mlplatform.contract import load_contract
from mlplatform.definitions import build_resources, defs
from mlplatform.features.declarations import feature_registry
from mlplatform.ml.artifacts import read_scoring_model
from mlplatform.ml.champion import SmokeTest
from mlplatform.ml.master_table import build_master_table
from mlplatform.ml.models import FAMILIES, TrainingPlan, model_inputs, train_candidate
from mlplatform.ml.registry import configure, download_model
from mlplatform.ml.training import load_holdout
from mlplatform.settings import DEFAULT_CONTRACT, Settings, get_settings
from mlplatform.warehouse.connection import connect


@dataclass(frozen=True)
class Trained:
    home: Path
    settings: Settings
    instance: dg.DagsterInstance
    run_id: str  # the training run (every candidate and the champion step)
    events: list[dg.DagsterEvent]  # its events, read from the instance


@pytest.fixture(scope="module")
def trained(
    trained_platform: TrainedPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    platform = trained_platform.copy(tmp_path_factory.mktemp("models"))
    with environment(platform.env), dg.DagsterInstance.get() as instance:
        run_id = instance.get_latest_materialization_event(dg.AssetKey("champion_model")).run_id
        events = [e.dagster_event for e in instance.all_logs(run_id) if e.is_dagster_event]
        yield Trained(platform.home, get_settings(), instance, run_id, events)


def _client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _promotion_log(settings: Settings) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute("SELECT * FROM ml.promotion_log ORDER BY decided_at").df()


def test_each_candidate_logs_a_tagged_run_with_metrics_plots_and_a_model_card(
    trained: Trained,
) -> None:
    client = _client(trained.settings)
    experiment = client.get_experiment_by_name(trained.settings.mlflow_experiment)
    runs = client.search_runs([experiment.experiment_id])
    with duckdb.connect(str(trained.settings.warehouse_path), read_only=True) as conn:
        version = conn.execute("SELECT any_value(dataset_version) FROM ml.feature_selection")
        dataset_version = version.fetchone()[0]
    by_family = {
        r.data.tags["mlplatform.family"]: r for r in runs if "mlplatform.family" in r.data.tags
    }
    assert set(by_family) == set(FAMILIES)
    (competition,) = [r for r in runs if r.data.tags["dagster.asset_key"] == "champion_model"]
    assert competition.data.tags["mlplatform.decision"] == "promoted"
    assert competition.data.metrics["challenger_average_precision"] == max(
        r.data.metrics["holdout_average_precision"] for r in by_family.values()
    )
    for family, run in by_family.items():
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["dagster.run_id"] == trained.run_id
        assert tags["dagster.asset_key"] == f"candidate_{family}"
        assert tags["mlplatform.dataset_version"] == dataset_version
        assert tags["mlplatform.code_version"].startswith("0.1.0")
        # beats the prevalence-only baseline on the out-of-time holdout
        assert metrics["holdout_average_precision"] > metrics["baseline_average_precision"]
        assert 0 <= metrics["holdout_ece"] <= 1 and 0 <= metrics["holdout_brier"] <= 1
        artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
        plots = sorted(p.stem for p in (artifacts / "plots").glob("*.png"))
        assert plots == sorted(
            ["roc", "precision_recall", "lift_gain", "calibration", "confusion_matrix",
             "learning_curve", "feature_importance"]
        )  # fmt: skip
        card = (artifacts / "model_card.md").read_text()
        assert dataset_version in card and family in card
        slices = pd.read_csv(artifacts / "fairness_slices.csv")
        assert {"gender", "age_band"} <= set(slices["slice"])
        assert run.data.params["calibration"] in {"sigmoid", "isotonic"}
    materialized = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in trained.events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    checks = {
        (e.asset_check_key.asset_key.to_user_string(), e.check_name): e.passed
        for e in (
            event.asset_check_evaluation_data
            for event in trained.events
            if event.event_type_value == "ASSET_CHECK_EVALUATION"
        )
    }
    assert checks == {(f"candidate_{f}", "beats_prevalence_baseline"): True for f in FAMILIES}
    meta = materialized["candidate_lightgbm"]
    assert meta["model_uri"].value.startswith("models:/")
    assert "model_card" in meta
    # links to the run's page in the MLflow UI (MLPLATFORM_MLFLOW_UI_URL), not to a folder
    page = (
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/"
        f"{by_family['lightgbm'].info.run_id}"
    )
    assert meta["mlflow_run"] == dg.MetadataValue.url(page)
    assert meta["plots"] == dg.MetadataValue.url(f"{page}/artifacts/plots")
    champion_page = materialized["champion_model"]["model_page"]
    assert champion_page == dg.MetadataValue.url(
        f"http://127.0.0.1:5000/#/models/{trained.settings.model_name}/versions/1"
    )


def test_the_first_candidate_clearing_the_floors_becomes_champion(trained: Trained) -> None:
    log = _promotion_log(trained.settings)
    first = log.iloc[0]
    assert first.decision == "promoted" and first.version == "1"
    assert pd.isna(first.champion_before) and first.champion_after == "1"
    assert "no champion yet" in first.reason and "smoke test" in first.reason
    assert first.actor == trained.run_id
    client = _client(trained.settings)
    champion = client.get_model_version_by_alias(trained.settings.model_name, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["mlplatform.decision"] == "promoted"


def test_champion_loads_in_a_fresh_process_with_pickle_disabled(trained: Trained) -> None:
    code = (
        "import sys, json\n"
        "sys.addaudithook(lambda e, a: (_ for _ in ()).throw(RuntimeError(e))"
        " if e == 'pickle.find_class' else None)\n"
        "import mlplatform\n"
        "c = mlplatform.load_champion()\n"
        "print(json.dumps({'version': c.version, 'family': c.model.family,"
        " 'features': len(c.feature_names), 'ap': c.metrics['average_precision']}))\n"
    )
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["version"] == "1" and loaded["features"] > 20 and loaded["ap"] > 0


def test_smoke_test_fails_a_model_folder_that_would_need_pickle(
    trained: Trained, tmp_path: Path
) -> None:
    configure(trained.settings.tracking_uri)
    folder = download_model(f"models:/{trained.settings.model_name}/1", tmp_path)
    model = read_scoring_model(folder)
    with duckdb.connect(str(trained.settings.warehouse_path), read_only=True) as conn:
        sample = load_holdout(conn).head(20)[list(model.feature_names)]
    expected = model.predict_proba(sample)[:, 1]
    with SmokeTest() as smoke:
        smoke.load(folder, sample)
        passed = smoke.result(expected, budget_ms=5000)
    assert passed.passed and passed.max_abs_difference <= 1e-9, passed.detail
    with SmokeTest() as smoke:
        smoke.load(folder, sample)
        differs = smoke.result(expected + 0.01, budget_ms=5000)
    assert not differs.passed and "scores differ from this process" in differs.detail
    with SmokeTest() as smoke:  # a process that hangs is a failed smoke test
        smoke.load(folder, sample)
        late = smoke.result(expected, budget_ms=5000, timeout_seconds=0.01)
    assert not late.passed and "did not finish in 0.01 s" in late.detail
    # The same folder claiming a pickled scikit-learn model (MLflow's default format).
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"] = {
        "sklearn": {"pickled_model": "model.pkl", "serialization_format": "cloudpickle"}
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with SmokeTest() as smoke:
        smoke.load(folder, sample)
        refused = smoke.result(expected, budget_ms=5000)
    assert not refused.passed
    assert "fresh process failed" in refused.detail and "never loaded" in refused.detail


def test_a_small_batch_scores_as_a_large_one_does(trained: Trained) -> None:
    champion = load_champion(trained.settings)
    with duckdb.connect(str(trained.settings.warehouse_path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT * FROM features.card_features ORDER BY hash(transaction_id) LIMIT 300"
        ).df()
    rows.loc[rows.index[:5], "category"] = "a category train never saw"
    model = champion.model
    large = model.raw_score(rows)  # pandas frame, both threads
    small = np.concatenate([model.raw_score(rows.iloc[[i]]) for i in range(len(rows))])
    # LightGBM's and numpy's exp may differ in the last bit between one row and many
    np.testing.assert_allclose(small, large, rtol=0, atol=1e-12)
    one_by_one = np.vstack([model.predict_proba(rows.iloc[[i]]) for i in range(len(rows))])
    np.testing.assert_allclose(one_by_one, model.predict_proba(rows), rtol=0, atol=1e-12)


def test_load_champion_scores_canonical_transactions_as_the_batch_path_does(
    trained: Trained,
) -> None:
    champion = load_champion(trained.settings)
    contract = load_contract(DEFAULT_CONTRACT)
    with duckdb.connect(str(trained.settings.warehouse_path), read_only=True) as conn:
        rows = conn.execute(
            """SELECT f.*, c.source_file, c.source_line FROM features.card_features AS f
               JOIN curated.transactions AS c USING (transaction_id)
               WHERE f.partition_date = (SELECT max(partition_date) FROM ml.master_table)
               ORDER BY hash(transaction_id) LIMIT 25"""
        ).df()
    batch = champion.model.predict_proba(rows)
    landing = pd.concat(
        pd.read_csv(trained.home / "landing" / name, dtype=str)
        for name in sorted(set(rows.source_file.map(lambda p: Path(p).name)))
    )
    canonical = (
        landing.rename(columns={column: name for name, column in contract.columns.items()})
        .set_index("transaction_id")
        .loc[rows.transaction_id]
        .reset_index()
    )
    assert "card_number" in canonical and "card_id" not in canonical
    online = champion.predict_proba(canonical)
    assert online.shape == (25, 2)
    np.testing.assert_allclose(online, batch, rtol=0, atol=1e-12)
    assert champion.threshold > 0 and champion.version == "1"


def test_defs_load_asset_value_returns_the_champion(trained: Trained) -> None:
    value = defs.load_asset_value("champion_model", instance=trained.instance)
    assert value.version == "1" and value.model.family in FAMILIES


@pytest.mark.e2e
def test_worse_challenger_is_rejected_then_manual_promotion_and_rollback(
    trained: Trained,
) -> None:
    settings = trained.settings
    with connect(
        settings.warehouse_path
    ) as conn:  # a new dataset: labels before the holdout are noise
        shuffle_training_labels(conn)
        registry = feature_registry(settings, load_contract(DEFAULT_CONTRACT))
        noise = build_master_table(conn, registry, settings, settings.datasets_dir).version
    # One family is enough for a challenger (the fastest: the suite's time is the fits').
    dg.materialize(
        [candidate_asset("logistic_regression"), champion_asset(("logistic_regression",))],
        instance=trained.instance, resources=build_resources(settings), raise_on_error=True,
    )  # fmt: skip
    log = _promotion_log(settings)
    rejected = log.iloc[-1]
    assert rejected.decision == "rejected" and rejected.version == "2"
    assert rejected.champion_before == rejected.champion_after == "1"
    assert rejected.dataset_version == noise != log.iloc[0].dataset_version
    assert any(why in rejected.reason for why in ("lower bound", "floor", "baseline"))
    assert rejected.average_precision < log.iloc[0].average_precision
    client = _client(settings)
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == 1
    assert client.get_model_version(settings.model_name, "2").tags["mlplatform.decision"] == (
        "rejected"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlplatform.cli", *args],
            capture_output=True,
            text=True,
        )

    promoted = cli("promote", "2", "--reason", "business asked for it")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == 2
    assert client.get_model_version_by_alias(settings.model_name, "previous").version == 1
    rolled = cli("rollback", "--reason", "version 2 is noise")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert client.get_model_version_by_alias(settings.model_name, "champion").version == 1
    again = cli("rollback", "--reason", "once more")
    assert again.returncode == 1 and "no previous champion" in again.stdout
    missing = cli("promote", "99", "--reason", "typo")
    assert missing.returncode == 1 and "has no version 99" in missing.stdout
    manual = _promotion_log(settings).iloc[-2:]
    assert list(manual.decision) == ["manual_promotion", "rollback"]
    assert list(manual.reason) == ["business asked for it", "version 2 is noise"]
    assert list(manual.champion_after) == ["2", "1"]
    assert all(actor.startswith("cli:") for actor in manual.actor)


def _small_frame(
    rng: np.random.Generator, rows: int, cards: int, categories: list[str | None]
) -> pd.DataFrame:
    """Rows of ``cards`` cards: a gamma amount, a ratio with 10% missing, a category."""
    return pd.DataFrame({
        "card_id": [f"card{i % cards}" for i in range(rows)],
        "amount": rng.gamma(2.0, 30.0, rows),
        "ratio": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(size=rows)),
        "category": rng.choice(categories, rows),
    })  # fmt: skip


@pytest.mark.parametrize("family", ["lightgbm", "logistic_regression"])
def test_a_model_scores_its_feature_matrix_as_it_scores_the_frame(family: str) -> None:
    """Batch scoring hands the model a float64 matrix (category codes among the train
    levels); LightGBM reads it as it is, other families get the frame back from it."""
    rng = np.random.default_rng(5)
    rows = 3000
    frame = _small_frame(rng, rows, cards=rows, categories=["food", "travel", "misc", None])
    frame["target"] = (rng.random(rows) < 0.05 + 0.3 * (frame["category"] == "travel")).astype(int)
    half = rows // 2
    inputs = model_inputs(
        frame.iloc[:half], frame.iloc[half:].reset_index(drop=True), ["amount", "ratio", "category"]
    )
    plan = TrainingPlan(iterations=1, folds=2, search_max_rows=rows)
    model = train_candidate(family, inputs, plan, lambda y, p: 0.5).model
    scored = frame.copy()
    scored.loc[:9, "category"] = "a category train never saw"
    matrix = model.spec.matrix(scored)
    np.testing.assert_array_equal(model.score_matrix(matrix), model.predict_proba(scored)[:, 1])
    # A request's few rows as mappings (the service's path): the same scores, and the same
    # matrix for every kind of value a feature row holds (None, NaN, booleans, decimals...).
    head = scored.head(20).to_dict("records")
    np.testing.assert_array_equal(
        model.score_rows(head), model.predict_proba(scored.head(20))[:, 1]
    )
    odd = [{"amount": Decimal("12.50"), "ratio": None, "category": None},
           {"amount": True, "ratio": float("nan"), "category": "travel"},
           {"amount": 3, "ratio": "0.25", "category": 7}]  # fmt: skip
    np.testing.assert_array_equal(
        model.spec.matrix_of_rows(odd), model.spec.matrix(pd.DataFrame(odd))
    )


@pytest.mark.parametrize("family", ["lightgbm", "logistic_regression"])
def test_learning_curve_train_score_is_the_models_average_precision_on_its_fit_rows(
    family: str,
) -> None:
    """LightGBM's train score comes from its training booster (no extra predictions); it
    must be what scoring the fit rows gives, as it is for the other families."""
    rng = np.random.default_rng(3)
    rows = 6000
    frame = _small_frame(rng, rows, cards=300, categories=["food", "travel", "misc"])
    logit = -4 + frame["amount"] / 40 + (frame["category"] == "travel")
    frame["target"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    is_train = frame["card_id"].str[4:].astype(int) < 200
    inputs = model_inputs(
        frame[is_train].reset_index(drop=True), frame[~is_train].reset_index(drop=True),
        ["amount", "ratio", "category"],
    )  # fmt: skip
    plan = TrainingPlan(iterations=1, folds=2, search_max_rows=rows)
    result = train_candidate(family, inputs, plan, lambda y, p: 0.5)
    final = result.learning_curve[-1]
    scored = result.model.raw_score(frame[is_train])
    assert final.train_rows == int(is_train.sum())
    assert final.train_score == pytest.approx(
        average_precision_score(inputs.y_train, scored), rel=1e-12
    )
    assert [p.train_rows for p in result.learning_curve] == sorted(
        p.train_rows for p in result.learning_curve
    )

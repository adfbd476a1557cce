"""`model_performance` on a real warehouse: simulated days up to `ml.targets` (the real target
SQL, the last days still immature), predictions written into `ml.predictions` as a good or a
degraded model would score them, a real MLflow registry holding the champion's holdout
figures, and a real Dagster instance reading the check `performance_within_margin`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import START, TRAINING_ENV, build_training_data
from sklearn.metrics import average_precision_score, roc_auc_score

from mlplatform.assets.performance import CHECK, model_performance
from mlplatform.assets.training_data import target_labels
from mlplatform.automation.schedules import model_performance_schedule
from mlplatform.definitions import build_resources
from mlplatform.ml.registry import configure
from mlplatform.monitoring.performance import PerformanceRule, measure_performance
from mlplatform.resources import LandingZoneResource
from mlplatform.settings import DEFAULT_CONTRACT, Settings, get_settings
from mlplatform.warehouse.targets import latest_matured_day, target_maturity

DAYS, CARDS = 45, 150
HOLDOUT = {"average_precision": 0.62, "roc_auc": 0.93, "ece": 0.01}
# A good model: positives score high; a degraded one ranks them last (scores inverted). The
# spread comes from the transaction id's hash, so every run scores the same.
GOOD_SCORE = "least(0.95, 0.02 + 0.55 * coalesce(t.target, 0) + 0.4 * (hash(t.transaction_id) % 1000) / 1000)"  # noqa: E501
DEGRADED_SCORE = f"1 - {GOOD_SCORE}"


@dataclass(frozen=True)
class Platform:
    settings: Settings
    instance: dg.DagsterInstance
    matured_day: date  # the matured day with the most positives
    immature_day: date  # the last simulated day: its labels have not matured


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data home with DAYS simulated days up to ml.targets (built once for the module)."""
    home = tmp_path_factory.mktemp("performance-base") / "home"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**TRAINING_ENV, "MLPLATFORM_HOME": str(home)}.items():
            patch.setenv(name, value)
        build_training_data(home, cards=CARDS, days=DAYS)
    return home


@pytest.fixture
def platform(
    simulated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Platform]:
    """A copy of the simulated warehouse, an MLflow store with champion version 1 (holdout
    figures HOLDOUT) and a Dagster instance, all in tmp_path."""
    home, dagster_home = tmp_path / "home", tmp_path / "dagster"
    home.mkdir()
    dagster_home.mkdir()
    shutil.copy(simulated / "warehouse.duckdb", home / "warehouse.duckdb")
    env = {**TRAINING_ENV, "MLPLATFORM_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "MLPLATFORM_PERFORMANCE_MIN_POSITIVES": "5"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = get_settings()
    _register_champion(settings, HOLDOUT)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        (matured_day,) = conn.execute(
            "SELECT partition_date FROM ml.targets GROUP BY 1 HAVING bool_and(matured) "
            "ORDER BY sum(target) DESC, 1 LIMIT 1"
        ).fetchone()
    with dg.DagsterInstance.get() as instance:
        yield Platform(settings, instance, matured_day, START + timedelta(days=DAYS - 1))


def _register_champion(settings: Settings, holdout: dict[str, float]) -> None:
    """Version 1 of the registered model: a run with these holdout metrics (as training logs
    them); the performance needs the figures, not the model files."""
    client = configure(settings.tracking_uri)
    experiment = client.create_experiment("performance", str(settings.artifacts_dir.as_uri()))
    run = client.create_run(experiment)
    for name, value in holdout.items():
        client.log_metric(run.info.run_id, f"holdout_{name}", value)
    client.create_registered_model(settings.model_name)
    client.create_model_version(
        settings.model_name, f"{run.info.artifact_uri}/model", run.info.run_id,
        tags={"mlplatform.dataset_version": "dataset-1"},
    )  # fmt: skip
    mlflow.set_tracking_uri(None)


def _score_days(settings: Settings, first: date, last: date, score_sql: str = GOOD_SCORE) -> None:
    """ml.predictions of the days first..last, scored by version 1 with ``score_sql``."""
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        conn.execute(
            "DELETE FROM ml.predictions WHERE partition_date BETWEEN ? AND ?", [first, last]
        )
        conn.execute(
            f"""INSERT INTO ml.predictions
                SELECT t.transaction_id, t.card_id, t.partition_date, {score_sql} AS score,
                       {score_sql} >= 0.5, ?, '1', 'dataset-1', now()
                FROM ml.targets AS t WHERE t.partition_date BETWEEN ? AND ?""",
            [settings.model_name, first, last],
        )


def _materialize(
    platform: Platform, first: date, last: date | None = None
) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": (last or first).isoformat()}  # fmt: skip
    return dg.materialize(
        [model_performance], instance=platform.instance, tags=tags,
        resources=build_resources(platform.settings),
    )  # fmt: skip


def _performance(settings: Settings) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute("SELECT * FROM monitoring.performance ORDER BY partition_date").df()


def _check(platform: Platform) -> tuple[bool, dict[str, object]]:
    """The latest evaluation of performance_within_margin, read from the instance."""
    key = dg.AssetCheckKey(model_performance.key, CHECK)
    record = platform.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    evaluation = record.event.dagster_event.event_specific_data
    return evaluation.passed, {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def _day_metadata(result: dg.ExecuteInProcessResult, day: date) -> dict[str, object]:
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.partition == day.isoformat()
    ]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_day_figures_are_scikit_learns_on_the_days_matured_rows(platform: Platform) -> None:
    day = platform.matured_day
    _score_days(platform.settings, day, day)
    result = _materialize(platform, day)
    assert result.success
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT p.card_id, p.score, t.target FROM ml.predictions AS p "
            "JOIN ml.targets AS t USING (transaction_id) WHERE p.partition_date = ?",
            [day],
        ).df()
    y, p = rows["target"].to_numpy(), rows["score"].to_numpy()
    (row,) = _performance(platform.settings).itertuples()
    assert (row.rows, row.matured, row.positives) == (len(rows), len(rows), int(y.sum()))
    assert row.judged and not row.degraded
    assert row.average_precision == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert row.roc_auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    # ECE over 10 equal-width bins: |observed rate - mean score| weighted by the bin's rows
    bins = np.minimum((p * 10).astype(int), 9)
    per_bin = pd.DataFrame({"bin": bins, "y": y, "p": p}).groupby("bin").agg(["mean", "size"])
    ece = (per_bin[("y", "size")] * (per_bin[("y", "mean")] - per_bin[("p", "mean")]).abs()).sum()
    assert row.calibration_error == pytest.approx(ece / len(rows), abs=1e-12)
    # card precision@k: the share of the k cards with the highest max score having a positive
    cards = rows.groupby("card_id").agg(score=("score", "max"), positive=("target", "max"))
    k = min(platform.settings.card_precision_k, len(cards))
    assert row.card_precision_at_k == pytest.approx(cards.nlargest(k, "score")["positive"].mean())
    assert (row.holdout_average_precision, row.holdout_roc_auc) == (0.62, 0.93)
    assert row.ap_drop == pytest.approx(0.62 - row.average_precision)
    assert (row.model_version, row.dataset_version) == ("1", "dataset-1")
    passed, metadata = _check(platform)
    assert passed and metadata["partition"] == day.isoformat()
    assert _day_metadata(result, day)["average_precision"] == pytest.approx(row.average_precision)


def test_a_degraded_day_fails_the_check_naming_its_figures_and_partition(
    platform: Platform,
) -> None:
    day = platform.matured_day
    _score_days(platform.settings, day, day, DEGRADED_SCORE)
    assert _materialize(platform, day).success  # a failed check does not fail the run
    (row,) = _performance(platform.settings).itertuples()
    assert row.judged and row.degraded and row.ap_drop > 0.10
    passed, metadata = _check(platform)
    assert not passed
    assert metadata["partition"] == day.isoformat()
    assert metadata["average_precision"] == pytest.approx(row.average_precision)
    assert metadata["holdout_average_precision"] == 0.62
    assert metadata["ap_drop"] == pytest.approx(row.ap_drop)
    assert metadata["ap_margin"] == 0.10 and metadata["positives"] == row.positives
    assert f"= {row.ap_drop:.4f} > margin 0.1" in metadata["reason"]


def test_a_day_with_too_few_matured_positives_is_not_judged_and_passes(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = platform.matured_day
    _score_days(platform.settings, day, day, DEGRADED_SCORE)
    monkeypatch.setenv("MLPLATFORM_PERFORMANCE_MIN_POSITIVES", "1000")
    result = _materialize(platform, day)
    (row,) = _performance(platform.settings).itertuples()
    reason = f"not enough matured positives to judge ({row.positives} < 1000)"
    assert not row.judged and row.reason == reason and pd.isna(row.degraded)
    assert row.average_precision > 0  # the figures are there, only not judged
    passed, metadata = _check(platform)
    assert passed and metadata["reason"] == reason and metadata["judged"] is False
    assert _day_metadata(result, day)["judged"] is False


def test_a_day_whose_labels_have_not_matured_is_not_judged(platform: Platform) -> None:
    day = platform.immature_day
    _score_days(platform.settings, day, day, DEGRADED_SCORE)
    result = _materialize(platform, day)
    (row,) = _performance(platform.settings).itertuples()
    assert not row.judged and row.matured == 0 and row.rows > 0
    assert row.reason == (
        f"labels not matured yet: 0 of {row.rows:,} scored rows have a matured target in ml.targets"
    )
    assert pd.isna(row.average_precision) and pd.isna(row.ap_drop)
    assert _day_metadata(result, day)["status"] == row.reason
    passed, metadata = _check(platform)
    assert passed and not metadata["judged"] and metadata["partition"] == day.isoformat()


def test_a_range_computes_each_day_and_rerunning_it_changes_nothing(platform: Platform) -> None:
    first, last = platform.matured_day - timedelta(days=2), platform.matured_day
    _score_days(platform.settings, first, last)
    once = _materialize(platform, first, last)
    rows = _performance(platform.settings).drop(columns="computed_at")
    again = _materialize(platform, first, last)
    assert once.success and again.success
    pd.testing.assert_frame_equal(_performance(platform.settings).drop(columns="computed_at"), rows)
    assert list(rows["partition_date"].dt.date) == [first + timedelta(days=i) for i in range(3)]
    for day, row in zip(rows["partition_date"].dt.date, rows.itertuples(), strict=True):
        shown = _day_metadata(again, day)
        assert shown["status"] == row.reason and shown["rows"] == row.rows


def test_a_day_without_predictions_gets_a_row_saying_so(platform: Platform) -> None:
    day = platform.matured_day
    rule = PerformanceRule(ap_margin=0.1, min_positives=5, k=100)
    with duckdb.connect(str(platform.settings.warehouse_path)) as conn:
        (result,) = measure_performance(conn, day, day, lambda version: HOLDOUT, rule)
    assert not result.judged and result.rows == 0
    assert result.reason == f"no predictions for {day} in ml.predictions"


def test_the_schedule_runs_the_latest_day_whose_labels_have_matured(
    platform: Platform, tmp_path: Path
) -> None:
    # ml.targets of the simulation is as of the end of its last day: the schedule's arithmetic
    # names the same latest matured day as the real target SQL.
    with duckdb.connect(str(platform.settings.warehouse_path), read_only=True) as conn:
        (latest,) = conn.execute(
            "SELECT max(partition_date) FROM ml.targets WHERE partition_date NOT IN "
            "(SELECT partition_date FROM ml.targets WHERE NOT matured)"
        ).fetchone()
    as_of = datetime.combine(platform.immature_day + timedelta(days=1), datetime.min.time())
    assert latest_matured_day(as_of, target_maturity("revenge_spending", 7, 72)) == latest

    label_contract = tmp_path / "label.yaml"
    label_contract.write_text(
        DEFAULT_CONTRACT.read_text().replace("target: revenge_spending", "target: label")
    )
    morning = datetime(2025, 3, 10, 5, tzinfo=UTC)
    for contract, expected in ((DEFAULT_CONTRACT, "2025-03-06"), (label_contract, "2025-03-02")):
        assert _scheduled(morning, contract) == expected
    assert _scheduled(datetime(2025, 1, 3, 5, tzinfo=UTC), DEFAULT_CONTRACT) is None


def _scheduled(when: datetime, contract: Path) -> str | None:
    """The partition the schedule requests at ``when`` (None: it skips)."""
    landing = LandingZoneResource(landing_dir=str(contract.parent), contract_path=str(contract))
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        request = model_performance_schedule(context, landing=landing)
    return request.partition_key if isinstance(request, dg.RunRequest) else None


def test_the_code_location_has_the_performance_job_and_its_schedule() -> None:
    from mlplatform.definitions import defs

    dg.Definitions.validate_loadable(defs)  # e.g. no job named like an asset's op
    job = defs.resolve_job_def("performance_monitoring")
    assert job.asset_layer.executable_asset_keys == {target_labels.key, model_performance.key}
    assert defs.resolve_schedule_def("model_performance_schedule").job_name == job.name

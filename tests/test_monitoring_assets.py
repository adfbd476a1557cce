"""`data_drift` and `prediction_drift` on a small trained platform, and their checks.

The module takes a copy of the suite's shared trained platform (real DuckDB file, real MLflow
SQLite store, real Dagster instance: its reference profile built by the asset, the days after
its master table scored by `predictions`); then a new dataset version (labels shuffled) gets
its profile without a promotion, as after a rejected challenger. The tests read what
that left behind; the drifted-day tests change one scored day's feature rows and put them
back. The last test runs the loop end to end: a drifted day, the real daemon, a retraining
run, the champion step's decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from conftest import (
    FINISHED,
    START,
    TrainedPlatform,
    dagster_daemon,
    environment,
    retraining_runs,
    sensor_ticks,
    shuffle_training_labels,
    wait_until,
)

from mlplatform.assets.monitoring import (
    DRIFT_CHECK,
    PREDICTION_DRIFT_CHECK,
    data_drift,
    prediction_drift,
)
from mlplatform.assets.partitions import partition_range_tags
from mlplatform.assets.training_data import training_reference_profile
from mlplatform.automation.sensors import TRIGGER_CHECK, TRIGGER_PARTITION, TRIGGER_REASON
from mlplatform.contract import load_contract
from mlplatform.definitions import build_resources
from mlplatform.features.declarations import feature_registry
from mlplatform.ml.master_table import build_master_table
from mlplatform.settings import DEFAULT_CONTRACT, Settings, get_settings
from mlplatform.warehouse.connection import connect


@dataclass(frozen=True)
class Platform:
    home: Path
    dagster_home: Path
    settings: Settings
    instance: dg.DagsterInstance
    scored_days: tuple[date, ...]  # the days after the first master table, scored by version 1
    champion_dataset: str  # the dataset version of the champion (version 1)
    rejected_dataset: str  # a newer dataset version, profiled, never promoted


@pytest.fixture(scope="module")
def platform(
    trained_platform: TrainedPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    copy = trained_platform.copy(tmp_path_factory.mktemp("monitoring"))
    # The retraining run of the last test trains one family, once: a champion step to decide.
    env = {**copy.env, "MLPLATFORM_CANDIDATE_FAMILIES": '["lightgbm"]',
           "MLPLATFORM_SEARCH_ITERATIONS": "1"}  # fmt: skip
    with environment(env), dg.DagsterInstance.get() as instance:
        settings = get_settings()
        with connect(settings.warehouse_path) as conn:
            champion_dataset = conn.execute(
                "SELECT any_value(dataset_version) FROM ml.feature_selection"
            ).fetchone()[0]
            shuffle_training_labels(conn)
            registry = feature_registry(settings, load_contract(DEFAULT_CONTRACT))
            rejected = build_master_table(conn, registry, settings, settings.datasets_dir)
        # The new dataset version's profile, without a training that could promote.
        dg.materialize([training_reference_profile], instance=instance,
                       resources=build_resources(settings), raise_on_error=True)  # fmt: skip
        first, last = copy.scored_days
        days = tuple(first + timedelta(days=i) for i in range((last - first).days + 1))
        yield Platform(
            copy.home, copy.dagster_home, settings, instance, days, champion_dataset,
            rejected.version,
        )  # fmt: skip


def _run(platform: Platform, first: date, last: date | None = None) -> dg.ExecuteInProcessResult:
    """One run of both monitoring assets over first..last."""
    return dg.materialize(
        [data_drift, prediction_drift], instance=platform.instance,
        resources=build_resources(platform.settings),
        tags=partition_range_tags(first, last or first), raise_on_error=True,
    )  # fmt: skip


def _drift(settings: Settings) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(
            "SELECT * EXCLUDE (computed_at) FROM monitoring.drift "
            "ORDER BY partition_date, kind, feature"
        ).df()


def _query(settings: Settings, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(sql).df()


def _check(platform: Platform, asset: str, name: str) -> tuple[bool, dict[str, object]]:
    """The latest evaluation of a check: passed, and its metadata values."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), name)
    record = platform.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    evaluation = record.event.dagster_event.event_specific_data
    return evaluation.passed, {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(asset)][-1:]  # fmt: skip
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_after_a_rejected_challenger_drift_uses_the_champions_dataset_version(
    platform: Platform,
) -> None:
    settings = platform.settings
    log = _query(settings, "SELECT * FROM ml.promotion_log ORDER BY decided_at")
    assert list(log.decision) == ["promoted"]
    assert list(log.dataset_version) == [platform.champion_dataset] != [platform.rejected_dataset]
    profiles = _query(
        settings, "SELECT dataset_version, count(DISTINCT feature) AS features "
        "FROM ml.training_reference_profile GROUP BY 1",
    ).set_index("dataset_version").features  # fmt: skip
    assert set(profiles.index) == {platform.champion_dataset, platform.rejected_dataset}
    day = platform.scored_days[0]
    _run(platform, day)
    rows = _drift(settings)
    data = rows[(rows.partition_date == pd.Timestamp(day)) & (rows.kind != "prediction")]
    assert len(data) == profiles[platform.champion_dataset]
    assert (data.reference_dataset_version == platform.champion_dataset).all()
    assert (data.model_version == "1").all()
    # The champion's holdout scores and importances were recorded when it was elected.
    scores = _query(
        settings, "SELECT model_version, any_value(dataset_version) AS dataset, "
        "sum(count) AS rows, sum(share) AS share FROM ml.champion_score_profile GROUP BY 1",
    )  # fmt: skip
    assert list(scores.model_version) == ["1"]
    assert list(scores.dataset) == [platform.champion_dataset]
    holdout = _query(settings, "SELECT count(*) AS n FROM ml.master_table WHERE split = 'holdout'")
    assert scores.rows.iloc[0] == holdout.n.iloc[0] and scores.share.round(9).eq(1).all()
    importance = _query(
        settings, "SELECT model_version, sum(importance) AS total, min(rank) AS top "
        "FROM ml.champion_feature_importance GROUP BY 1",
    )  # fmt: skip
    assert list(importance.model_version) == ["1"] and importance.total.round(6).eq(1).all()


def test_a_range_run_writes_one_row_per_feature_and_day_idempotently(platform: Platform) -> None:
    settings = platform.settings
    first, last = platform.scored_days[0], platform.scored_days[-1]
    once = _run(platform, first, last)
    rows = _drift(settings)
    again = _run(platform, first, last)
    pd.testing.assert_frame_equal(_drift(settings), rows)
    assert once.success and again.success
    features = _query(
        settings, "SELECT count(DISTINCT feature) AS n FROM ml.training_reference_profile "
        f"WHERE dataset_version = '{platform.champion_dataset}'",
    ).n.iloc[0]  # fmt: skip
    data = rows[rows.kind != "prediction"]
    per_day = data.groupby("partition_date").feature.agg(["count", "nunique"])
    assert len(per_day) == len(platform.scored_days)
    assert (per_day["count"] == features).all() and (per_day["nunique"] == features).all()
    day_rows = _query(
        settings, "SELECT partition_date, count(*) AS n FROM features.card_features "
        f"WHERE partition_date BETWEEN '{first}' AND '{last}' GROUP BY 1",
    ).set_index("partition_date").n  # fmt: skip
    assert (data.groupby("partition_date")["rows"].first() == day_rows.sort_index()).all()
    scores = rows[rows.kind == "prediction"]
    assert list(scores.feature.unique()) == ["score"] and len(scores) == len(platform.scored_days)
    assert (scores.distance_name == "wasserstein_normed").all() and scores.psi.notna().all()
    # Each day's report, its path in the day's metadata.
    for day in platform.scored_days:
        report = settings.reports_dir / "data_drift" / f"data_drift_{day}.html"
        assert report.is_file() and report.stat().st_size > 10_000
    _, metadata = _check(platform, "data_drift", DRIFT_CHECK)
    assert metadata["partitions_checked"] == len(platform.scored_days)
    assert metadata["partition"] in {str(day) for day in platform.scored_days}


def test_a_day_no_champion_scored_is_skipped_with_its_reason(platform: Platform) -> None:
    day = START + timedelta(days=3)  # before the first champion: never scored
    result = _run(platform, day)
    assert result.success
    metadata = _metadata(result, "data_drift")
    assert metadata["status"] == "no champion has scored the day (ml.predictions)"
    assert _drift(platform.settings).query("partition_date == @day").empty
    for asset, check in (("data_drift", DRIFT_CHECK), ("prediction_drift", PREDICTION_DRIFT_CHECK)):
        passed, check_metadata = _check(platform, asset, check)
        assert passed and check_metadata["skipped"] and check_metadata["partition"] == str(day)


@contextmanager
def _drifted(platform: Platform, day: date) -> Iterator[None]:
    """Within the block, ``day``'s feature rows are what a broken feed might deliver: every
    numeric feature of the champion's profile tripled, every purchase online."""
    with connect(platform.settings.warehouse_path) as conn:
        conn.execute("CREATE TABLE saved AS SELECT * FROM features.card_features "
                     "WHERE partition_date = ?", [day])  # fmt: skip
        numbers = [name for (name,) in conn.execute(
            "SELECT DISTINCT feature FROM ml.training_reference_profile "
            "WHERE dataset_version = ? AND kind = 'numeric' AND n_distinct > 5",
            [platform.champion_dataset],
        ).fetchall()]  # fmt: skip
        shifted = ", ".join(f"{name} = {name} * 3 + 1" for name in numbers)
        conn.execute(f"UPDATE features.card_features SET {shifted}, category = 'shopping_net' "
                     "WHERE partition_date = ?", [day])  # fmt: skip
    try:
        yield
    finally:
        with connect(platform.settings.warehouse_path) as conn:
            conn.execute("DELETE FROM features.card_features WHERE partition_date = ?", [day])
            conn.execute("INSERT INTO features.card_features SELECT * FROM saved")
            conn.execute("DROP TABLE saved")


def test_the_check_fails_on_a_drifted_day_naming_the_features(platform: Platform) -> None:
    settings = platform.settings
    day = platform.scored_days[-1]
    _run(platform, day)
    before = _drift(settings).query("partition_date == @day").set_index("feature")
    assert not before.loc["amount"].drifted
    with _drifted(platform, day):
        result = _run(platform, day)
        after = _drift(settings).query("partition_date == @day").set_index("feature")
        passed, metadata = _check(platform, "data_drift", DRIFT_CHECK)
    assert after.loc["amount"].drifted and after.loc["category"].drifted
    assert after.loc["amount"].psi > 1 and after.loc["amount"].p_value < 1e-6
    assert not passed and metadata["share"] >= settings.drift_share_threshold
    assert metadata["partition"] == str(day)
    assert {"amount", "category"} <= set(metadata["failed_features"])
    assert metadata["failed_features"]["amount"]["distance_name"] == "wasserstein_normed"
    assert "amount" in metadata["failed_feature_names"]
    assert _metadata(result, "data_drift")["drifted"] >= 2


# Last in the module: the retraining run rebuilds the master table and may elect a champion.
@pytest.mark.e2e
def test_a_drifted_day_leads_to_a_retraining_run_the_daemon_launches_and_the_champion_step_decides(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole loop on real parts: the drift check fails on a drifted day (after passing on
    it), the real `dagster-daemon` ticks `retraining_sensor`, which requests one `training`
    run; the daemon launches it, and its champion step records a decision with a reason.
    The day is the latest one judged, so its pass ends any episode earlier tests began."""
    instance, day = platform.instance, platform.scored_days[-1]
    # The check judges on the share of drifted features only: on this 250-card platform the
    # merchants' fraud counts move with the simulation's fraud bursts (95 positives one week,
    # none the next), which the rule on the important features' PSI rightly flags every day.
    monkeypatch.setenv("MLPLATFORM_DRIFT_TOP_FEATURES", "0")
    _run(platform, day)
    assert _check(platform, "data_drift", DRIFT_CHECK)[0]  # the clean day passes
    with _drifted(platform, day):
        _run(platform, day)
    passed, metadata = _check(platform, "data_drift", DRIFT_CHECK)
    assert not passed and metadata["partition"] == str(day)
    assert not retraining_runs(instance)
    monkeypatch.setenv("MLPLATFORM_SENSOR_INTERVAL_SECONDS", "1")
    log = platform.dagster_home / "daemon.log"

    with dagster_daemon(platform.dagster_home):
        (record,) = wait_until(
            lambda: [r for r in retraining_runs(instance) if r.dagster_run.status in FINISHED],
            "the retraining run", timeout=1200, log=log,
        )  # fmt: skip
        # A completed tick after the run (the newest tick may still be running).
        later = wait_until(
            lambda: next((t for t in sensor_ticks(instance, "retraining_sensor")
                          if t.timestamp > record.end_time + 1 and t.is_completed), None),
            "a tick after the retraining run", log=log,
        )  # fmt: skip

    run = record.dagster_run
    assert run.status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-3000:]
    assert run.job_name == "training"
    assert run.tags[TRIGGER_CHECK] == f"data_drift:{DRIFT_CHECK}"
    assert run.tags[TRIGGER_PARTITION] == str(day)
    reason = run.tags[TRIGGER_REASON]
    assert reason.startswith(f"{day}: ") and "features drifted" in reason
    assert len(retraining_runs(instance)) == 1 and "same episode" in later.skip_reason
    # The champion step decided, in the promotion log, under the run's id.
    decision = _query(platform.settings, "SELECT * FROM ml.promotion_log "
                      f"WHERE actor = '{run.run_id}'")  # fmt: skip
    assert len(decision) == 1 and decision.decision.iloc[0] in {"promoted", "rejected"}
    assert decision.reason.iloc[0] and decision.champion_before.iloc[0] == "1"

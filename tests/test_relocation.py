"""A data home (and its Dagster home) moved, copied or restored from a backup works as the
original did: MLflow's recorded artifact locations follow it, nothing reads the old place."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import dagster as dg
from conftest import TrainedPlatform, environment
from mlflow import MlflowClient

from mlplatform.assets.partitions import partition_range_tags
from mlplatform.assets.scoring import predictions
from mlplatform.definitions import build_resources
from mlplatform.ml.registry import CHAMPION, LOCATION_COLUMNS, relocate_sqlite_store
from mlplatform.settings import get_settings


def test_a_moved_data_home_loads_its_champion_and_runs_on_its_instance(
    trained_platform: TrainedPlatform, tmp_path: Path
) -> None:
    original = trained_platform.copy(tmp_path / "original")
    # The original in use (the platform opened it where it is), then moved away from there.
    relocate_sqlite_store(original.home / "mlflow.db", original.home / "mlartifacts")
    moved = original.copy(tmp_path / "moved")
    shutil.rmtree(tmp_path / "original")  # nothing may still read the old place
    artifacts = (moved.home / "mlartifacts").resolve().as_uri()
    old = (original.home / "mlartifacts").resolve().as_uri()
    with closing(sqlite3.connect(moved.home / "mlflow.db")) as conn:
        recorded = sum(
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE {column} LIKE 'file:///%'"
            ).fetchone()[0]
            for table, column in LOCATION_COLUMNS
        )
        under_old = sum(
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE substr({column}, 1, ?) = ?",
                [len(old), old],
            ).fetchone()[0]
            for table, column in LOCATION_COLUMNS
        )
    assert recorded == under_old > 0  # every recorded location names the deleted folder

    # A user's first command on the moved home: the champion, from a fresh process.
    code = (
        "import json, logging, mlplatform\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "c = mlplatform.load_champion()\n"
        "print(json.dumps({'version': c.version, 'features': len(c.feature_names)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ, **moved.env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["version"] == "1" and loaded["features"] > 20
    assert f"was moved: {recorded} artifact locations now under {artifacts}" in done.stderr

    with environment(moved.env):
        settings = get_settings()
        database = moved.home / "mlflow.db"
        assert relocate_sqlite_store(database, moved.home / "mlartifacts") == 0  # done once
        client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
        experiment = client.get_experiment_by_name(settings.mlflow_experiment)
        assert experiment.artifact_location == artifacts
        runs = client.search_runs([experiment.experiment_id])
        assert runs and all(r.info.artifact_uri.startswith(f"{artifacts}/") for r in runs)
        for run in runs:  # every run's files are where the store now says
            assert Path(run.info.artifact_uri.removeprefix("file://")).is_dir()
        with closing(sqlite3.connect(database)) as conn:  # MLflow's client does not show it
            (stored,) = conn.execute(
                "SELECT storage_location FROM model_versions WHERE version = ?",
                [client.get_model_version_by_alias(settings.model_name, CHAMPION).version],
            ).fetchone()
        assert stored.startswith(f"{artifacts}/") and Path(stored[len("file://") :]).is_dir()

        with dg.DagsterInstance.get() as instance:
            trained = instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
            assert trained is not None  # the original's runs and events came along
            day = moved.scored_days[1]
            result = dg.materialize(
                [predictions], instance=instance, resources=build_resources(settings),
                tags=partition_range_tags(day, day),
            )  # fmt: skip
            assert result.success
            event = instance.get_latest_materialization_event(dg.AssetKey("predictions"))
            assert event.run_id == result.run_id


def test_a_store_that_never_moved_is_left_as_it_is(
    trained_platform: TrainedPlatform, tmp_path: Path
) -> None:
    platform = trained_platform.copy(tmp_path)
    database = platform.home / "mlflow.db"
    relocate_sqlite_store(database, platform.home / "mlartifacts")
    before = database.read_bytes()
    assert relocate_sqlite_store(database, platform.home / "mlartifacts") == 0
    assert database.read_bytes() == before
    assert relocate_sqlite_store(tmp_path / "none.db", tmp_path / "mlartifacts") == 0
    assert not (tmp_path / "none.db").exists()

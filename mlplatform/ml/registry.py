"""The MLflow side of models: the store, logging a scoring model, loading it without pickle.

A :class:`~mlplatform.ml.models.ScoringModel` is logged as one MLflow model: LightGBM boosters
in LightGBM's native text format, scikit-learn pipelines through skops; the calibrator,
threshold and feature spec travel in the MLmodel file's metadata. :func:`load_scoring_model`
downloads the files and reads them with :mod:`mlplatform.ml.artifacts` (no pickle, so
loading works with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``).
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import tempfile
from contextlib import closing
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from mlplatform.ml.artifacts import METADATA_KEY, TRUSTED_SKOPS_TYPES, read_scoring_model
from mlplatform.ml.models import ScoringModel
from mlplatform.settings import ARTIFACTS_FOLDER

CHAMPION, PREVIOUS = "champion", "previous"
#: Where a SQLite store records artifact locations, as absolute URIs: (table, column).
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)
log = logging.getLogger(__name__)


def configure(tracking_uri: str) -> MlflowClient:
    """Point MLflow (tracking and registry) at ``tracking_uri``; a client for it. A SQLite
    store that was moved with its data home is first made to name its new place
    (:func:`relocate_sqlite_store`)."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        relocate_sqlite_store(database, database.parent / ARTIFACTS_FOLDER)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def relocate_sqlite_store(database: Path, artifacts_dir: Path) -> int:
    """The platform's SQLite store keeps its artifacts beside it, in ``artifacts_dir``, but
    MLflow records every location as an absolute URI. When the data home was moved, copied
    or restored from a backup, the recorded locations still name the old folder (a copy
    would read, or miss, the original's files): rewrite each location under an old
    ``mlartifacts`` folder to the same place under ``artifacts_dir``, in one transaction.
    Returns how many locations were rewritten (0 when the store has not moved)."""
    if not database.is_file():
        return 0
    new = artifacts_dir.resolve().as_uri()

    def old_roots() -> list[str]:
        return [
            location for (location,) in conn.execute(
                "SELECT DISTINCT artifact_location FROM experiments "
                "WHERE artifact_location LIKE 'file:///%/' || ? AND artifact_location <> ?",
                [ARTIFACTS_FOLDER, new],
            )
        ]  # fmt: skip

    with closing(sqlite3.connect(database, timeout=60)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        # A read first: every configure() comes here, and only a moved store needs the lock.
        if "experiments" not in tables or not old_roots():
            return 0
        conn.execute("BEGIN IMMEDIATE")  # one mover at a time; the others then find it done
        moved_from = old_roots()
        rewritten = 0
        for old in moved_from:
            for table, column in LOCATION_COLUMNS:
                if table in tables:
                    rewritten += conn.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {column} = ? OR substr({column}, 1, ?) = ? || '/'",
                        [new, len(old) + 1, old, len(old) + 1, old],
                    ).rowcount
        conn.commit()
    if rewritten:
        log.info("the MLflow store %s was moved: %d artifact locations now under %s (were %s)",
                 database, rewritten, new, ", ".join(moved_from))  # fmt: skip
    return rewritten


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, created (with its artifacts at ``artifact_location``, a URI, or
    where a tracking server puts them when None) if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def package_version() -> str:
    """The installed package's version (from its metadata: no import of the package)."""
    return version("mlplatform")


def code_version() -> str:
    """The package version plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return package_version()
    return f"{package_version()}+{commit}"


def log_scoring_model(model: ScoringModel, name: str = "model") -> str:
    """Log ``model`` to the active MLflow run; returns its model URI (``models:/<id>``)."""
    signature = ModelSignature(
        inputs=Schema(
            [ColSpec("double", n) for n in model.spec.numeric]
            + [ColSpec("string", n, required=False) for n in model.spec.categorical]
        ),
        outputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2))]),
    )
    common: dict[str, Any] = {
        "name": name,
        "signature": signature,
        "metadata": {METADATA_KEY: model.metadata()},
        "pip_requirements": [f"mlplatform=={package_version()}"],
    }
    if isinstance(model.estimator, lgb.Booster):
        info = mlflow.lightgbm.log_model(model.estimator, **common)
    else:
        info = mlflow.sklearn.log_model(
            model.estimator,
            serialization_format="skops",
            skops_trusted_types=sorted(TRUSTED_SKOPS_TYPES),
            **common,
        )
    return info.model_uri


def register_version(client: MlflowClient, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register the logged model ``model_uri`` (``models:/<model id>``) as a new version of
    ``name`` (created if missing); its version. Through the client: ``mlflow.register_model``
    prints two lines to stderr for every version, which no setting silences."""
    if not model_uri.startswith("models:/"):
        raise ValueError(f"not a logged model's URI (models:/<model id>): {model_uri}")
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(
        name, source=model_uri, tags=tags, model_id=model_uri.removeprefix("models:/")
    )
    return str(version.version)


def download_model(model_uri: str, folder: Path) -> Path:
    """Download the model folder of any MLflow model URI into ``folder``; its local path."""
    return Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder)))


def load_scoring_model(model_uri: str) -> ScoringModel:
    """Load a model logged by :func:`log_scoring_model` (any MLflow model URI), unpickled."""
    with tempfile.TemporaryDirectory(prefix="mlplatform-model-") as folder:
        return read_scoring_model(download_model(model_uri, Path(folder)), model_uri)


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version the alias points at, or None (no such model or alias)."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def set_champion(client: MlflowClient, model_name: str, version: str) -> str | None:
    """Point ``champion`` at ``version`` and ``previous`` at the old champion; returns it."""
    old = alias_version(client, model_name, CHAMPION)
    if old is not None and old != version:
        client.set_registered_model_alias(model_name, PREVIOUS, old)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    return old

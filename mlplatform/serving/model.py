"""A registered model as the scoring paths use it: loaded from the MLflow registry alone.

:func:`load_model` resolves an alias (``champion``, ``challenger``) or a version to a
:class:`ModelHandle`: the :class:`~mlplatform.ml.models.ScoringModel` (no pickle), its
version, the dataset version it was trained on, its threshold and holdout metrics. Batch
scoring, the REST service and :func:`mlplatform.load_champion` all score through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlplatform.ml.models import ScoringModel
from mlplatform.ml.registry import alias_version, configure, load_scoring_model

CHALLENGER = "challenger"


class NoModelError(LookupError):
    """The registry has no model under that alias (e.g. no champion yet)."""


@dataclass(frozen=True)
class ModelHandle:
    """One registered model version, ready to score feature rows."""

    model_name: str
    version: str
    dataset_version: str | None
    model: ScoringModel = field(repr=False)
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def threshold(self) -> float:
        """Scores at or above it are positive decisions."""
        return self.model.threshold

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.model.feature_names

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class, one per row of ``features``."""
        return self.model.predict_proba(features)[:, 1]

    def score_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`score` of a few rows given as mappings (a request's), without a DataFrame
        where the model allows."""
        return self.model.score_rows(rows)

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """:meth:`score` of rows laid out as :meth:`~mlplatform.ml.models.FeatureSpec.matrix`
        does (float64 ``(n, features)``, category codes among the train levels)."""
        return self.model.score_matrix(matrix)

    def describe(self) -> dict[str, object]:
        """What a person (or ``GET /v1/model``) wants to know about the model."""
        return {
            "model_name": self.model_name,
            "version": self.version,
            "family": self.model.family,
            "dataset_version": self.dataset_version,
            "threshold": self.threshold,
            "holdout_metrics": self.metrics,
            "features": list(self.feature_names),
        }


def load_model(tracking_uri: str, model_name: str, alias: str) -> ModelHandle:
    """The version ``alias`` points at in the registry, loaded without pickle.

    Raises :class:`NoModelError` when the alias is not set.
    """
    return load_version(tracking_uri, model_name, aliased(tracking_uri, model_name, alias))


def aliased(tracking_uri: str, model_name: str, alias: str) -> str:
    """The version ``alias`` points at; raises :class:`NoModelError` when it is not set."""
    version = alias_version(configure(tracking_uri), model_name, alias)
    if version is None:
        raise NoModelError(
            f"no {alias} for {model_name!r} in {tracking_uri}: "
            "materialize champion_model (the `training` job) first"
        )
    return version


def load_version(tracking_uri: str, model_name: str, version: str) -> ModelHandle:
    """Version ``version`` of the registered model, loaded without pickle."""
    client = configure(tracking_uri)
    registered = client.get_model_version(model_name, version)
    model = load_scoring_model(f"models:/{model_name}/{version}")
    return ModelHandle(
        model_name=model_name,
        version=str(version),
        dataset_version=registered.tags.get("mlplatform.dataset_version"),
        model=model,
        metrics=_holdout_metrics(client, registered.run_id),
        run_id=registered.run_id,
    )


def registered_holdout_metrics(
    tracking_uri: str, model_name: str, version: str
) -> dict[str, float]:
    """Holdout metrics of version ``version`` (``average_precision``, ``roc_auc``, ``ece``,
    ``card_precision_at_k``, ...: the names of :class:`~mlplatform.ml.evaluation.HoldoutMetrics`),
    without loading the model."""
    client = configure(tracking_uri)
    return _holdout_metrics(client, client.get_model_version(model_name, version).run_id)


def _holdout_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The run's ``holdout_<name>`` metrics as name -> value."""
    return {
        name.removeprefix("holdout_"): value
        for name, value in client.get_run(run_id).data.metrics.items()
        if name.startswith("holdout_")
    }

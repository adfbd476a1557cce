"""The champion model from Python: ``mlplatform.load_champion()``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlplatform.contract import load_contract
from mlplatform.ml.models import ScoringModel
from mlplatform.ml.registry import CHAMPION, alias_version, configure, load_scoring_model
from mlplatform.serving.online import curated_rows, feature_frame
from mlplatform.settings import Settings, get_settings
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.feature_registry import FeatureRegistry, feature_registry


class NoChampionError(LookupError):
    """The registry has no champion yet."""


@dataclass
class Champion:
    """The registered champion: ``predict_proba`` on transactions in canonical columns."""

    model_name: str
    version: str
    model: ScoringModel
    metrics: dict[str, float]
    registry: FeatureRegistry
    settings: Settings = field(repr=False)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.model.feature_names

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def features(self, transactions: pd.DataFrame) -> pd.DataFrame:
        """Online features of ``transactions`` (canonical columns), in their order."""
        with connect(self.settings.warehouse_path, read_only=True) as conn:
            curated = curated_rows(conn, transactions, self.settings.pseudonym_key)
            frame = feature_frame(conn, self.registry, curated)
        ids = transactions["transaction_id"].astype(str)
        absent = sorted(set(ids) - set(frame["transaction_id"]))
        if absent:
            raise ValueError(
                f"transactions repeat another row's card, time, amount and merchant (curation "
                f"keeps one): {absent[:5]}"
            )
        return frame.set_index("transaction_id").loc[ids].reset_index()

    def predict_proba(self, transactions: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities ``(n, 2)`` for ``transactions`` in the contract's
        canonical columns (``transaction_id``, ``event_time``, ``card_number``, ``amount``,
        and whatever optional columns the data has), features computed online."""
        return self.model.predict_proba(self.features(transactions))


def load_champion(settings: Settings | None = None) -> Champion:
    """The model the registry's ``champion`` alias points at, loaded without pickle."""
    settings = settings or get_settings()
    client = configure(settings.tracking_uri)
    version = alias_version(client, settings.model_name, CHAMPION)
    if version is None:
        raise NoChampionError(
            f"no champion for {settings.model_name!r} in {settings.tracking_uri}: "
            "materialize champion_model (the `training` job) first"
        )
    model = load_scoring_model(f"models:/{settings.model_name}/{version}")
    run = client.get_run(client.get_model_version(settings.model_name, version).run_id)
    metrics = {
        name.removeprefix("holdout_"): value
        for name, value in run.data.metrics.items()
        if name.startswith("holdout_")
    }
    registry = feature_registry(settings, load_contract(settings.contract))
    return Champion(settings.model_name, version, model, metrics, registry, settings)

"""The champion model from Python: ``mlplatform.load_champion()``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlplatform.contract import load_contract
from mlplatform.ml.models import ScoringModel
from mlplatform.ml.registry import CHAMPION
from mlplatform.serving.model import ModelHandle, load_model
from mlplatform.serving.online import curated_rows, feature_frame
from mlplatform.settings import Settings, get_settings
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.feature_registry import FeatureRegistry, feature_registry


@dataclass
class Champion:
    """The registered champion: ``predict_proba`` on transactions in canonical columns."""

    handle: ModelHandle
    registry: FeatureRegistry
    settings: Settings = field(repr=False)

    @property
    def model_name(self) -> str:
        return self.handle.model_name

    @property
    def version(self) -> str:
        return self.handle.version

    @property
    def model(self) -> ScoringModel:
        return self.handle.model

    @property
    def metrics(self) -> dict[str, float]:
        return self.handle.metrics

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
    handle = load_model(settings.tracking_uri, settings.model_name, CHAMPION)
    registry = feature_registry(settings, load_contract(settings.contract))
    return Champion(handle, registry, settings)

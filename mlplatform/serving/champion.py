"""The champion model from Python: ``mlplatform.load_champion()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from mlplatform.contract import load_contract
from mlplatform.features.declarations import FeatureRegistry, feature_registry
from mlplatform.ml.models import ScoringModel
from mlplatform.ml.registry import CHAMPION
from mlplatform.serving.model import ModelHandle, load_model
from mlplatform.serving.online import OnlineFeatures
from mlplatform.settings import Settings, get_settings


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

    @cached_property
    def source(self) -> OnlineFeatures:
        """The online store when it exists, else the warehouse (opened read-only once)."""
        store = self.settings.online_store_path
        path = store if store.exists() else self.settings.warehouse_path
        return OnlineFeatures(
            path, self.registry, self.settings.pseudonym_key, max_amount=self.settings.max_amount
        )

    def features(self, transactions: pd.DataFrame) -> pd.DataFrame:
        """Online features of ``transactions`` (canonical columns), in their order.

        Raises :class:`~mlplatform.serving.online.InvalidTransactions` for rows that
        ingestion would quarantine (the same rule names)."""
        rows = [
            {k: None if _missing(v) else v for k, v in row.items()}
            for row in transactions.to_dict("records")
        ]
        return self.source.compute(rows).frame

    def predict_proba(self, transactions: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities ``(n, 2)`` for ``transactions`` in the contract's
        canonical columns (``transaction_id``, ``event_time``, ``card_number``, ``amount``,
        and whatever optional columns the data has), features computed online."""
        return self.model.predict_proba(self.features(transactions))


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def load_champion(settings: Settings | None = None) -> Champion:
    """The model the registry's ``champion`` alias points at, loaded without pickle."""
    settings = settings or get_settings()
    handle = load_model(settings.tracking_uri, settings.model_name, CHAMPION)
    registry = feature_registry(settings, load_contract(settings.contract))
    return Champion(handle, registry, settings)

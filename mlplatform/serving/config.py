"""The REST service's configuration, read once from the settings (tests build their own).

Kept apart from the service so that ``mlplatform serve`` can check it (keys, bind address)
before it imports the model libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlplatform.contract import load_contract
from mlplatform.features.declarations import FeatureRegistry, feature_registry
from mlplatform.settings import Settings

ChallengerMode = Literal["off", "shadow", "canary"]


@dataclass(frozen=True)
class ServiceConfig:
    """What the service needs, read once from the settings (tests build their own)."""

    tracking_uri: str
    model_name: str
    store_path: Path
    registry: FeatureRegistry = field(repr=False)
    pii_key: bytes = field(repr=False)
    serving_dir: Path
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_batch: int = 1000
    max_amount: float = 100_000.0
    max_store_age_hours: float = 36.0
    reload_seconds: float = 10.0
    challenger_mode: ChallengerMode = "off"
    canary_share: float = 0.1
    online_state: str = "memory"

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceConfig:
        """The service's configuration; API keys from ``api_keys`` and ``api_keys_file``."""
        keys = list(settings.api_keys)
        if settings.api_keys_file is not None:
            lines = settings.api_keys_file.read_text().splitlines()
            keys += [line.strip() for line in lines if line.strip()]
        return cls(
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            store_path=settings.online_store_path,
            registry=feature_registry(settings, load_contract(settings.contract)),
            pii_key=settings.pseudonym_key,
            serving_dir=settings.serving_dir,
            api_keys=tuple(keys),
            max_batch=settings.max_batch,
            max_amount=settings.max_amount,
            max_store_age_hours=settings.max_store_age_hours,
            reload_seconds=settings.reload_seconds,
            challenger_mode=settings.challenger_mode,
            canary_share=settings.canary_share,
            online_state=settings.online_state,
        )

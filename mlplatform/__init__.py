"""mlplatform: a Dagster asset-based data and ML platform for card transactions."""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING

__version__ = version("mlplatform")

if TYPE_CHECKING:
    from mlplatform.serving.champion import Champion
    from mlplatform.settings import Settings


def load_champion(settings: Settings | None = None) -> Champion:
    """The champion model from the MLflow registry (see :mod:`mlplatform.serving.champion`)."""
    from mlplatform.serving.champion import load_champion as _load_champion

    return _load_champion(settings)


__all__ = ["__version__", "load_champion"]

"""Deterministic synthetic card-transaction simulator (no Dagster here).

``simulate(SimulationConfig(...), out_dir)`` writes daily ``transactions_YYYY-MM-DD.csv`` landing
files and a ``cards.csv`` reference file, and returns a :class:`SimulationSummary`.
"""

from mlplatform.datagen.categories import CATEGORIES, DISCRETIONARY_CATEGORIES
from mlplatform.datagen.episodes import RevengeEpisode
from mlplatform.datagen.malformed import MALFORMED_KINDS
from mlplatform.datagen.simulator import (
    CARD_COLUMNS,
    TRANSACTION_COLUMNS,
    SimulationConfig,
    SimulationSummary,
    simulate,
    transaction_file_name,
)

__all__ = [
    "CARD_COLUMNS",
    "CATEGORIES",
    "DISCRETIONARY_CATEGORIES",
    "MALFORMED_KINDS",
    "TRANSACTION_COLUMNS",
    "RevengeEpisode",
    "SimulationConfig",
    "SimulationSummary",
    "simulate",
    "transaction_file_name",
]

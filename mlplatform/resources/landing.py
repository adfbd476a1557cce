"""The landing zone (daily files and reference data) and its contract, as a Dagster resource."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path

import dagster as dg

from mlplatform.contract import Contract, load_contract
from mlplatform.ingestion import landing_files, landing_files_by_day


class LandingZoneResource(dg.ConfigurableResource):
    """Where landing files arrive and which contract maps their columns."""

    landing_dir: str
    contract_path: str

    @cached_property
    def contract(self) -> Contract:
        return load_contract(Path(self.contract_path))

    @property
    def path(self) -> Path:
        return Path(self.landing_dir)

    def files_for(self, partition_date: date) -> list[Path]:
        """The partition's landing files, sorted by name."""
        return landing_files(self.path, partition_date)

    def files_by_day(self, days: list[date]) -> dict[date, list[Path]]:
        """Each day's landing files, sorted by name (the folder listed once)."""
        return landing_files_by_day(self.path, days)

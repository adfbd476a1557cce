"""The platform's one settings object, read from ``MLPLATFORM_*`` environment variables."""

from __future__ import annotations

import os
import secrets
from datetime import date
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONTRACT = PACKAGE_DIR / "contract" / "generator.yaml"


class Settings(BaseSettings):
    """Paths, dates and thresholds of the platform; every field is ``MLPLATFORM_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MLPLATFORM_", frozen=True)

    home: Path = Field(
        default=Path(".mlplatform"), description="Data home: landing, warehouse, registry."
    )
    contract: Path = Field(
        default=DEFAULT_CONTRACT, description="Landing-file mapping YAML (`contract/*.yaml`)."
    )
    start_date: date = Field(default=date(2025, 1, 1), description="First daily partition.")
    pii_key: str | None = Field(
        default=None,
        description="Key of the card-number pseudonym (HMAC-SHA256). When unset, a random key "
        "is created once in the data home (`pii.key`, mode 0600).",
    )
    max_amount: float = Field(
        default=100_000.0, description="Largest plausible amount (currency units)."
    )
    max_line_bytes: int = Field(
        default=1_000_000, description="A landing-file line longer than this is quarantined."
    )
    duckdb_memory_limit: str = Field(
        default="1GB",
        description="DuckDB's memory limit per connection; beyond it, work spills to disk.",
    )
    sensor_interval_seconds: int = Field(default=30, description="Landing sensor tick.")
    landing_settle_seconds: float = Field(
        default=5.0,
        description="A landing file changed more recently than this is left for the next tick "
        "(it may still be being written).",
    )

    @field_validator("home", "contract")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        """Dagster instance folder used when ``DAGSTER_HOME`` is not set."""
        return Path(os.environ.get("DAGSTER_HOME") or (self.home / "dagster")).resolve()

    @cached_property
    def pseudonym_key(self) -> bytes:
        """The PII key: ``MLPLATFORM_PII_KEY`` or, once created, ``<home>/pii.key`` (0600)."""
        if self.pii_key:
            return self.pii_key.encode()
        path = self.home / "pii.key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


def get_settings() -> Settings:
    """Settings as the environment says now (read again on every call: tests change it)."""
    return Settings()

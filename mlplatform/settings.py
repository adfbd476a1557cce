"""The platform's one settings object, read from ``MLPLATFORM_*`` environment variables."""

from __future__ import annotations

import os
import secrets
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONTRACT = PACKAGE_DIR / "contract" / "generator.yaml"
#: The artifacts folder of the default MLflow store, beside its database in the data home.
ARTIFACTS_FOLDER = "mlartifacts"
#: MLflow's database stores (SQLAlchemy dialects): they keep no artifacts, so a run's artifacts
#: go to ``mlflow_artifacts``. Any other tracking URI (a server, a file store) keeps its own.
_DATABASE_STORES = ("sqlite", "postgresql", "mysql", "mssql")


def is_lake(warehouse: str) -> bool:
    """Whether a warehouse location is a DuckLake (``ducklake:<catalog>``), not a DuckDB file."""
    return warehouse.startswith("ducklake:")


def _is_database_store(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in _DATABASE_STORES


DISCRETIONARY_CATEGORIES = (
    "entertainment", "food_dining", "misc_net", "misc_pos", "shopping_net", "shopping_pos",
    "travel",
)  # fmt: skip


class RevengeTargetSettings(BaseModel):
    """The revenge-spending target (``MLPLATFORM_REVENGE__<NAME>``): see ``transaction_targets``.

    Label 1 when the card has ``min_history_days`` of history, its mean daily discretionary
    spend R over (T-recent, T) is at most ``restraint_ratio`` x its baseline B over
    (T-baseline, T-recent], and its discretionary spend S over [T, T+horizon) reaches
    max(``burst_multiple`` x B, min burst): ``min_burst_credit_limit_share`` of the credit limit
    when known, else ``min_burst_amount``.
    """

    min_history_days: int = 30
    baseline_days: int = 90
    recent_days: int = 14
    horizon_hours: int = 72
    restraint_ratio: float = 0.5
    burst_multiple: float = 9.0
    min_burst_credit_limit_share: float = 0.10
    min_burst_amount: float = 500.0


class Settings(BaseSettings):
    """Paths, dates and thresholds of the platform; every field is ``MLPLATFORM_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="MLPLATFORM_", env_nested_delimiter="__", frozen=True
    )

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
    duckdb_threads: int | None = Field(
        default=None,
        ge=1,
        description="DuckDB's threads per connection (default: one per core); e.g. 1 for a "
        "worker given one core.",
    )
    warehouse: str | None = Field(
        default=None,
        description="Where the warehouse is: unset, the DuckDB file `warehouse.duckdb` in the "
        "data home; a path, that DuckDB file; `ducklake:<catalog>` (DuckLake's ATTACH string, "
        "e.g. `ducklake:postgres:dbname=lake host=db user=... password=...`), a DuckLake that "
        "several workers write at once, its tables in `warehouse_data_path`.",
    )
    warehouse_data_path: str | None = Field(
        default=None,
        description="A DuckLake warehouse's data files: a folder every worker mounts, or an "
        "object-store prefix (s3://bucket/prefix/).",
    )
    warehouse_snapshot_days: int = Field(
        default=7,
        ge=1,
        description="A DuckLake warehouse keeps its snapshots (time travel) this many days.",
    )
    warehouse_orphan_days: int = Field(
        default=1,
        ge=1,
        description="A DuckLake data file no snapshot needs (or a killed worker left) is "
        "deleted this many days after it was written.",
    )
    warehouse_lock_timeout_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long a run waits (retrying with backoff) for another process to "
        "close the warehouse file before it fails naming that process.",
    )
    landing_due_hours: float = Field(
        default=6.0,
        ge=0,
        description="Hours after the midnight (UTC) that ends a day by which its landing file "
        "is due: later, the freshness check `raw_transactions` `landed_on_time` fails.",
    )
    sensor_interval_seconds: int = Field(
        default=30, description="Tick of the landing and retraining sensors."
    )
    landing_settle_seconds: float = Field(
        default=5.0,
        description="A landing file changed more recently than this is left for the next tick "
        "(it may still be being written).",
    )

    label_delay_days: int = Field(
        default=7,
        ge=0,
        description="Days before a carried label (e.g. fraud) is known: features never use a "
        "younger label, and such a target matures this long after the transaction.",
    )
    discretionary_categories: tuple[str, ...] = Field(
        default=DISCRETIONARY_CATEGORIES,
        description="Categories of discretionary spending (the revenge-spending signal).",
    )
    income_band_monthly_income: dict[str, float] = Field(
        default={"low": 2_500.0, "middle": 4_500.0, "high": 8_000.0, "very_high": 15_000.0},
        description="Nominal monthly income of each reference income band (spend-to-income).",
    )
    revenge: RevengeTargetSettings = Field(default_factory=lambda: RevengeTargetSettings())
    holdout_days: int = Field(
        default=7, ge=1, description="Latest matured days kept out of time as the holdout."
    )
    validation_share: float = Field(
        default=0.2, gt=0, lt=1, description="Share of cards (before the holdout) in validation."
    )
    min_train_rows: int = Field(default=1_000, description="Master-table check: train rows.")
    min_train_positives: int = Field(
        default=20, description="Master-table check: positive targets in train."
    )
    max_feature_correlation: float = Field(
        default=0.98, description="Of two features correlated above this (|r|), one is dropped."
    )
    leakage_auc: float = Field(
        default=0.98, description="A single feature this predictive on train is a leak (ERROR)."
    )
    profile_min_rows: int = Field(
        default=1000,
        ge=1,
        description="A feature is profiled (and monitored for drift) from the train rows whose "
        "window was full; with fewer such rows than this it is left out.",
    )
    profile_bins: int = Field(
        default=10, ge=2, description="Quantile bins per numeric feature in the reference profile."
    )

    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking and registry server; default: SQLite `<home>/mlflow.db` "
        "with artifacts in `<home>/mlartifacts`.",
    )
    executor: Literal["multiprocess", "k8s"] = Field(
        default="multiprocess",
        description="How a run executes its steps: `multiprocess` (a process per step beside "
        "the run worker) or `k8s` (a Kubernetes job per step: Dagster's k8s_job_executor, with "
        "platform/k8s/). The training job keeps its steps in one process either way.",
    )
    mlflow_artifacts: str | None = Field(
        default=None,
        description="Where experiments created on a database tracking store "
        "(MLPLATFORM_MLFLOW_TRACKING_URI=postgresql://...) keep their artifacts: a folder every "
        "worker mounts at the same path, or an object-store URI (s3://bucket/prefix). Required "
        "with a database store; an MLflow server (http://...) keeps the artifacts itself.",
    )
    mlflow_experiment: str = Field(default="mlplatform", description="MLflow experiment.")
    model_name: str = Field(
        default="mlplatform-transactions", description="Registered model of the champion."
    )
    search_iterations: int = Field(
        default=4, ge=1, description="Random-search trials per candidate family."
    )
    search_folds: int = Field(
        default=2, ge=2, description="Card-grouped folds of the random search (on train)."
    )
    search_max_rows: int = Field(
        default=150_000,
        description="Train rows the search sees (whole cards, deterministic sample); the "
        "final fit uses all of train.",
    )
    candidate_families: tuple[str, ...] = Field(
        default=("logistic_regression", "random_forest", "lightgbm"),
        description="Candidate model families trained by the `training` job.",
    )
    value_true_positive: float = Field(
        default=100.0, description="Value of a correctly flagged positive (threshold choice)."
    )
    cost_false_positive: float = Field(
        default=5.0, description="Cost of flagging a negative (threshold choice)."
    )
    precision_at_k_cards: int = Field(
        default=100, description="k of card precision@k on the holdout."
    )
    min_average_precision: float = Field(
        default=0.05, description="Promotion floor: holdout average precision."
    )
    max_calibration_error: float = Field(
        default=0.05, description="Promotion floor: holdout expected calibration error."
    )
    bootstrap_resamples: int = Field(
        default=200, ge=20, description="Paired card bootstrap of challenger vs champion."
    )
    bootstrap_confidence: float = Field(
        default=0.90, gt=0, lt=1, description="Confidence of the bootstrap's lower bound."
    )
    smoke_latency_ms: float = Field(
        default=250.0,
        description="Smoke test: a fresh process must score 100 rows within this budget.",
    )

    performance_ap_margin: float = Field(
        default=0.10,
        ge=0,
        description="Check `performance_within_margin` of `model_performance` fails when the "
        "champion's holdout average precision minus a day's exceeds this.",
    )
    performance_min_positives: int = Field(
        default=30,
        ge=1,
        description="Matured positives a day needs before its performance is judged.",
    )
    card_precision_k: int = Field(
        default=100,
        ge=1,
        description="k of a monitored day's card precision@k (`model_performance`): the cards "
        "investigators can check in a day.",
    )

    serve_host: str = Field(default="127.0.0.1", description="`mlplatform serve` binds here.")
    serve_port: int = Field(default=8000, description="`mlplatform serve` listens here.")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="API keys of the REST service, comma-separated; without any key the "
        "service only binds to 127.0.0.1.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file of more API keys, one per line."
    )
    max_batch: int = Field(default=1000, ge=1, description="Transactions per request (413).")
    max_store_age_hours: float = Field(
        default=36.0, description="Readiness: the online store is at most this old."
    )
    reload_seconds: float = Field(
        default=10.0, gt=0, description="Poll of the registry aliases and the online store."
    )
    challenger_mode: Literal["off", "shadow", "canary"] = Field(
        default="off",
        description="The `challenger` alias: off; shadow (scored and logged, never returned); "
        "canary (answers `canary_share` of the cards).",
    )
    online_state: str = Field(
        default="memory",
        pattern=r"^(memory|rediss?://.+|unix://.+)$",
        description="Where the service keeps the fresh online state (each card's history "
        "and the transactions scored since the store): `memory` (one process) or a Redis URL "
        "(`redis://host:port/db`), shared by `serve --workers N` and replicas.",
    )
    canary_share: float = Field(
        default=0.1, ge=0, le=1, description="Share of cards a canary challenger answers."
    )

    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="The MLflow UI (`make mlflow-ui`): asset metadata links to its run pages.",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="Alerts (e.g. a retraining request) are POSTed here as JSON when set; "
        "they are always logged.",
    )
    alert_timeout_seconds: float = Field(
        default=3.0, gt=0, description="A webhook slower than this is given up (logged)."
    )
    retraining_cooldown_hours: float = Field(
        default=24.0,
        ge=0,
        description="`retraining_sensor`: at most one retraining request per this many hours.",
    )
    drift_distance_threshold: float = Field(
        default=0.1,
        gt=0,
        description="A feature drifts when its distance (normed Wasserstein for numbers, "
        "Jensen-Shannon for categories; Evidently's defaults) reaches this and the change is "
        "significant (`drift_p_value`).",
    )
    drift_p_value: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Significance of the chi-square test of a day's bins against the reference "
        "proportions: a change a day of that size shows by chance is not drift.",
    )
    drift_share_threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Check `drift_within_threshold` fails when this share of the features drifts.",
    )
    drift_psi_threshold: float = Field(
        default=0.25,
        gt=0,
        description="Check `drift_within_threshold` (`prediction_drift_within_threshold`) fails "
        "when an important feature's (the score's) PSI passes this, significantly.",
    )
    drift_top_features: int = Field(
        default=5, ge=0, description="The champion's most important features the PSI rule watches."
    )
    drift_report: bool = Field(
        default=True, description="Write an Evidently HTML drift report per day (`reports/`)."
    )
    drift_report_columns: int = Field(
        default=10,
        ge=1,
        description="Features in the Evidently report: the day's drifted ones first, then by PSI.",
    )
    drift_report_rows: int = Field(
        default=5_000, ge=100, description="Rows of the day and of train in the Evidently report."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @model_validator(mode="after")
    def _database_store_has_artifacts(self) -> Settings:
        uri = self.mlflow_tracking_uri
        if uri and _is_database_store(uri) and not self.mlflow_artifacts:
            raise ValueError(
                f"MLPLATFORM_MLFLOW_TRACKING_URI={uri.split('://')[0]}://... is a database "
                "store: set MLPLATFORM_MLFLOW_ARTIFACTS to where its artifacts go (a folder every "
                "worker mounts, or s3://bucket/prefix), or use an MLflow server (http://...)"
            )
        return self

    @model_validator(mode="after")
    def _lake_has_data_path(self) -> Settings:
        if self.warehouse_is_lake and not self.warehouse_data_path:
            raise ValueError(
                "MLPLATFORM_WAREHOUSE is a DuckLake: set MLPLATFORM_WAREHOUSE_DATA_PATH to where "
                "its tables' files go (a folder every worker mounts, or s3://bucket/prefix/)"
            )
        return self

    @field_validator("api_keys_file", "alert_webhook_url", "warehouse", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return value or None

    @field_validator("home", "contract")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse_is_lake(self) -> bool:
        return is_lake(self.warehouse or "")

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file of the embedded warehouse (not used with a DuckLake)."""
        if self.warehouse and not self.warehouse_is_lake:
            return Path(self.warehouse).expanduser().resolve()
        return self.home / "warehouse.duckdb"

    @property
    def warehouse_location(self) -> str:
        """What :func:`mlplatform.warehouse.connection.connect` opens: the DuckDB file's path
        or the DuckLake ATTACH string."""
        return self.warehouse if self.warehouse_is_lake else str(self.warehouse_path)

    @property
    def datasets_dir(self) -> Path:
        """Parquet snapshots of the master table, named by their content hash."""
        return self.home / "datasets"

    @property
    def online_store_path(self) -> Path:
        """The online feature store (asset ``online_feature_store``), replaced atomically."""
        return self.home / "online" / "store.duckdb"

    @property
    def serving_dir(self) -> Path:
        """The REST service's prediction log: ``predictions-YYYY-MM-DD.jsonl`` files."""
        return self.home / "serving"

    @property
    def reports_dir(self) -> Path:
        """Evidently HTML reports (drift per day)."""
        return self.home / "reports"

    @property
    def compute_cost_dir(self) -> Path:
        """Compute-cost records of steps, until loaded into ``monitoring.compute_cost``."""
        return self.home / "compute_cost"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking (and registry) URI."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        """Artifacts of the default (SQLite) MLflow store."""
        return self.home / ARTIFACTS_FOLDER

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: beside the default store, or
        ``mlflow_artifacts`` for a database store; None for a server or a file store (its own)."""
        if not self.mlflow_tracking_uri:
            return self.artifacts_dir.resolve().as_uri()
        if not _is_database_store(self.mlflow_tracking_uri):
            return None
        artifacts = self.mlflow_artifacts or ""
        return Path(artifacts).resolve().as_uri() if "://" not in artifacts else artifacts

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

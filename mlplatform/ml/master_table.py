"""``ml.master_table``: features + matured target + card + split, its snapshot and its checks.

The latest ``holdout_days`` days whose targets have all matured are the out-of-time holdout;
earlier matured rows split into train and validation by card (a card is on one side only).
Feature selection (on train) drops all-missing, constant and near-duplicate features and
records what and why in ``ml.feature_selection``. The table is also written as a Parquet
snapshot whose content hash is the dataset version that training records, and
``master_table_current.json`` beside it names that version and its kept features, so training
reads the snapshot without opening the warehouse.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np

from mlplatform.features.declarations import KEY_COLUMNS, FeatureRegistry
from mlplatform.settings import Settings
from mlplatform.warehouse.connection import transactions

SPLITS = ("train", "validation", "holdout")
#: Rows of train the correlation screen looks at (a deterministic sample beyond this).
CORRELATION_SAMPLE_ROWS = 200_000


CURRENT_FILE = "master_table_current.json"


def snapshot_path(snapshot_dir: Path, version: str) -> Path:
    """The Parquet snapshot of dataset ``version`` (its sha256) in ``snapshot_dir``."""
    return snapshot_dir / f"master_table_{version[:16]}.parquet"


@dataclass(frozen=True)
class CurrentDataset:
    """The latest master table's dataset version and the features it kept (model order)."""

    version: str
    features: tuple[str, ...]


def current_dataset(snapshot_dir: Path) -> CurrentDataset:
    """The dataset version the latest master-table build wrote to ``snapshot_dir``."""
    path = snapshot_dir / CURRENT_FILE
    if not path.exists():
        raise MasterTableError(f"{path} does not exist: materialize master_table first")
    data = json.loads(path.read_text(encoding="utf-8"))
    return CurrentDataset(data["dataset_version"], tuple(data["features"]))


def _write_current(snapshot_dir: Path, dataset: CurrentDataset) -> None:
    """Replace ``CURRENT_FILE`` atomically: a reader sees the old or the new version."""
    staging = snapshot_dir / f".{CURRENT_FILE}.{os.getpid()}"
    staging.write_text(
        json.dumps({"dataset_version": dataset.version, "features": list(dataset.features)}),
        encoding="utf-8",
    )
    os.replace(staging, snapshot_dir / CURRENT_FILE)


class MasterTableError(RuntimeError):
    """The master table cannot be built (e.g. no matured day to hold out)."""


@dataclass(frozen=True)
class SelectionDecision:
    """Whether feature selection kept a feature, and why not."""

    feature: str
    kept: bool
    reason: str
    train_auc: float | None


@dataclass(frozen=True)
class MasterTableResult:
    """A built master table: version (content hash), snapshot, splits and selection."""

    version: str
    snapshot: Path
    rows: dict[str, int]
    positives: dict[str, int]
    holdout_start: date
    holdout_end: date
    features: tuple[str, ...]
    selection: tuple[SelectionDecision, ...]


@dataclass(frozen=True)
class CheckOutcome:
    """One master-table check: passed or not, a one-line description and details."""

    name: str
    passed: bool
    description: str
    details: dict[str, object]


def build_master_table(
    conn: duckdb.DuckDBPyConnection,
    registry: FeatureRegistry,
    settings: Settings,
    snapshot_dir: Path,
) -> MasterTableResult:
    """Rebuild ``ml.master_table`` and ``ml.feature_selection``; write the Parquet snapshot."""
    holdout = _holdout_days(conn, settings.holdout_days)
    features = [f.name for f in registry.enabled]
    feature_columns = ", ".join(f"f.{name}" for name in features)
    validation_permille = round(settings.validation_share * 1000)
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE master_candidates AS
            SELECT {", ".join(f"f.{k}" for k in KEY_COLUMNS)},
                CASE WHEN f.partition_date >= $holdout_start THEN 'holdout'
                     WHEN ('0x' || left(md5(f.card_id), 8))::UBIGINT % 1000
                          < {validation_permille} THEN 'validation'
                     ELSE 'train' END AS split,
                t.target, {feature_columns}
            FROM features.card_features AS f
            JOIN ml.targets AS t USING (transaction_id)
            WHERE t.target IS NOT NULL AND f.partition_date <= $holdout_end""",
        {"holdout_start": holdout[0], "holdout_end": holdout[1]},
    )
    selection = _select_features(conn, registry, settings)
    kept = [d.feature for d in selection if d.kept]
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    staging = snapshot_dir / f".master_table.{datetime.now():%Y%m%d%H%M%S%f}.parquet"
    columns = ", ".join([*KEY_COLUMNS, "split", "target", *kept])
    try:
        for attempt in transactions(conn):
            with attempt:
                conn.execute(
                    f"CREATE OR REPLACE TABLE ml.master_table AS SELECT {columns} "
                    "FROM master_candidates ORDER BY transaction_id"
                )
                conn.execute(
                    f"COPY (SELECT * FROM ml.master_table ORDER BY transaction_id) TO '{staging}' "
                    "(FORMAT parquet)"
                )
                version = hashlib.sha256(staging.read_bytes()).hexdigest()
                conn.execute(
                    "CREATE OR REPLACE TABLE ml.feature_selection (dataset_version VARCHAR, "
                    "feature VARCHAR, kept BOOLEAN, reason VARCHAR, train_auc DOUBLE)"
                )
                conn.executemany(
                    "INSERT INTO ml.feature_selection VALUES (?, ?, ?, ?, ?)",
                    [[version, d.feature, d.kept, d.reason, d.train_auc] for d in selection],
                )
        snapshot = snapshot_path(snapshot_dir, version)
        shutil.move(staging, snapshot)
        _write_current(snapshot_dir, CurrentDataset(version, tuple(kept)))
    finally:
        staging.unlink(missing_ok=True)
        conn.execute("DROP TABLE IF EXISTS master_candidates")
    counts = dict.fromkeys(SPLITS, 0)
    positives = dict.fromkeys(SPLITS, 0)
    for split, rows, positive in conn.execute(
        "SELECT split, count(*), sum(target) FROM ml.master_table GROUP BY split"
    ).fetchall():
        counts[split], positives[split] = rows, int(positive or 0)
    return MasterTableResult(
        version=version,
        snapshot=snapshot,
        rows=counts,
        positives=positives,
        holdout_start=holdout[0],
        holdout_end=holdout[1],
        features=tuple(kept),
        selection=tuple(selection),
    )


def _holdout_days(conn: duckdb.DuckDBPyConnection, days: int) -> tuple[date, date]:
    """First and last of the latest ``days`` days whose targets have all matured."""
    matured = [
        row[0]
        for row in conn.execute(
            """SELECT partition_date FROM ml.targets GROUP BY partition_date
               HAVING bool_and(matured) ORDER BY partition_date DESC LIMIT ?""",
            [days],
        ).fetchall()
    ]
    if not matured:
        raise MasterTableError(
            "no day has fully matured targets yet: load more days (the revenge target needs "
            "its 72-hour horizon, a label its delay) before building the master table"
        )
    return matured[-1], matured[0]


def _select_features(
    conn: duckdb.DuckDBPyConnection, registry: FeatureRegistry, settings: Settings
) -> list[SelectionDecision]:
    """Keep or drop each enabled feature, judged on the train split."""
    features = registry.enabled
    train = conn.execute(
        f"""SELECT target, {", ".join(f.name for f in features)} FROM master_candidates
            WHERE split = 'train' ORDER BY transaction_id"""
    ).df()
    target = train.pop("target").to_numpy()
    decisions: dict[str, SelectionDecision] = {}
    numeric: list[str] = []
    for feature in features:
        column = train[feature.name]
        if column.notna().sum() == 0:
            decisions[feature.name] = SelectionDecision(feature.name, False, "all missing", None)
        elif column.nunique(dropna=True) <= 1 and not column.isna().any():
            value = column.dropna().iloc[0]
            value = value.item() if hasattr(value, "item") else value
            decisions[feature.name] = SelectionDecision(
                feature.name, False, f"constant ({value!r})", None
            )
        elif feature.dtype != "VARCHAR":
            numeric.append(feature.name)
    values = train[numeric].astype("float64")
    auc = {name: single_feature_auc(values[name].to_numpy(), target) for name in numeric}
    sample = values.iloc[:: max(1, len(values) // CORRELATION_SAMPLE_ROWS)]
    correlation = sample.corr().abs()
    kept_numeric: list[str] = []
    for name in numeric:  # declaration order: the earlier of two near-duplicates stays
        twin = next(
            (k for k in kept_numeric if correlation.at[name, k] > settings.max_feature_correlation),
            None,
        )
        if twin is None:
            kept_numeric.append(name)
            decisions[name] = SelectionDecision(name, True, "", auc[name])
        else:
            r = correlation.at[name, twin]
            decisions[name] = SelectionDecision(
                name, False, f"near-duplicate of {twin} (|r| = {r:.3f})", auc[name]
            )
    return [decisions.get(f.name, SelectionDecision(f.name, True, "", None)) for f in features]


def single_feature_auc(values: np.ndarray, target: np.ndarray) -> float | None:
    """ROC AUC of one feature alone against a 0/1 target, direction-free (>= 0.5).

    Missing values rank below every observed value. None when the target has one class.
    """
    from sklearn.metrics import roc_auc_score  # scikit-learn loads only where models are built

    if len(np.unique(target)) < 2:
        return None
    filled = np.where(
        np.isnan(values), np.nanmin(values) - 1 if np.isfinite(values).any() else 0, values
    )
    auc = float(roc_auc_score(target, filled))
    return max(auc, 1 - auc)


def master_table_checks(conn: duckdb.DuckDBPyConnection, settings: Settings) -> list[CheckOutcome]:
    """Leakage, minimum rows and positives, and split disjointness of ``ml.master_table``."""
    leaks = conn.execute(
        "SELECT feature, train_auc FROM ml.feature_selection WHERE kept AND train_auc >= ? "
        "ORDER BY train_auc DESC",
        [settings.leakage_auc],
    ).fetchall()
    rows = dict(conn.execute("SELECT split, count(*) FROM ml.master_table GROUP BY 1").fetchall())
    positives = dict(
        conn.execute("SELECT split, sum(target) FROM ml.master_table GROUP BY 1").fetchall()
    )
    train_rows, train_positives = rows.get("train", 0), int(positives.get("train") or 0)
    shared_cards = conn.execute(
        """SELECT count(*) FROM (SELECT card_id FROM ml.master_table WHERE split = 'train'
           INTERSECT SELECT card_id FROM ml.master_table WHERE split = 'validation')"""
    ).fetchone()[0]
    last_in_sample, first_holdout = conn.execute(
        """SELECT max(event_time) FILTER (WHERE split <> 'holdout'),
                  min(event_time) FILTER (WHERE split = 'holdout') FROM ml.master_table"""
    ).fetchone()
    overlap_in_time = (
        last_in_sample is not None and first_holdout is not None and last_in_sample >= first_holdout
    )
    return [
        CheckOutcome(
            "no_leakage",
            not leaks,
            f"no single feature reaches ROC AUC {settings.leakage_auc} against the target on train",
            {"leaking_features": {name: round(value, 4) for name, value in leaks}},
        ),
        CheckOutcome(
            "enough_rows_and_positives",
            train_rows >= settings.min_train_rows
            and train_positives >= settings.min_train_positives
            and int(positives.get("holdout") or 0) > 0,
            f"train has >= {settings.min_train_rows} rows and >= "
            f"{settings.min_train_positives} positives; the holdout has a positive",
            {"rows": rows, "positives": {k: int(v or 0) for k, v in positives.items()}},
        ),
        CheckOutcome(
            "splits_disjoint",
            shared_cards == 0 and not overlap_in_time,
            "no card in both train and validation; the holdout comes after both in time",
            {
                "cards_in_train_and_validation": shared_cards,
                "last_train_or_validation_event": str(last_in_sample),
                "first_holdout_event": str(first_holdout),
            },
        ),
    ]

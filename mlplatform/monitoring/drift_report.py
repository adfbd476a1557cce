"""The Evidently HTML drift report of a day: DataDriftPreset on bounded samples.

A person's view beside ``monitoring.drift``: a reservoir sample of the day's feature rows
against one of the train split of the champion's dataset version (its Parquet snapshot). As
in the reference profile, a train row's feature counts only once its window was full: before
that day it is missing (a 90-day sum still filling up would look drifted on every day).
Evidently is imported here only, when a report is written.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mlplatform.features.offline import TABLE as FEATURES_TABLE
from mlplatform.ml.master_table import snapshot_path


def report_path(reports_dir: Path, day: date) -> Path:
    """Where the data drift report of ``day`` is written."""
    return reports_dir / "data_drift" / f"data_drift_{day.isoformat()}.html"


def _columns(kinds: Mapping[str, str], full_from: Mapping[str, date]) -> str:
    """The features typed as the report reads them, each NULL before its ``full_from`` day."""
    columns = []
    for name, kind in kinds.items():
        value = f"{name}::{'VARCHAR' if kind == 'categorical' else 'DOUBLE'}"
        if name in full_from:
            value = f"CASE WHEN partition_date >= DATE '{full_from[name]}' THEN {value} END"
        columns.append(f"{value} AS {name}")
    return ", ".join(columns)


def _sample(conn: duckdb.DuckDBPyConnection, source: str, columns: str, rows: int) -> pd.DataFrame:
    return conn.sql(
        f"SELECT {columns} FROM ({source}) USING SAMPLE reservoir({rows} ROWS) REPEATABLE (7)"
    ).df()


def train_sample(
    conn: duckdb.DuckDBPyConnection,
    snapshot: Path,
    kinds: Mapping[str, str],
    full_from: Mapping[str, date],
    rows: int,
) -> pd.DataFrame:
    """``rows`` train rows of a dataset's Parquet ``snapshot``: the features ``kinds`` (name
    -> ``numeric`` or ``categorical``), each missing on the rows before its ``full_from``
    day (its window was still filling up; a feature absent from it counts on every row)."""
    train = f"SELECT * FROM read_parquet('{snapshot}') WHERE split = 'train'"
    return _sample(conn, train, _columns(kinds, full_from), rows)


def write_drift_report(
    conn: duckdb.DuckDBPyConnection,
    day: date,
    kinds: dict[str, str],
    dataset_version: str,
    datasets_dir: Path,
    reports_dir: Path,
    rows: int,
    full_from: Mapping[str, date],
) -> Path | None:
    """Write the report of ``day`` for the features ``kinds`` against ``rows`` rows of the
    day and :func:`train_sample` rows of ``dataset_version``; its path, or None when the
    dataset's snapshot is gone."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    snapshot = snapshot_path(datasets_dir, dataset_version)
    if not snapshot.is_file():
        return None
    current = f"SELECT * FROM {FEATURES_TABLE} WHERE partition_date = DATE '{day.isoformat()}'"
    definition = DataDefinition(
        numerical_columns=[name for name, kind in kinds.items() if kind != "categorical"],
        categorical_columns=[name for name, kind in kinds.items() if kind == "categorical"],
    )
    # Evidently's correlations divide by a constant column's zero spread: numpy's warnings
    # about it are not the user's to act on.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot_report = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(
                _sample(conn, current, _columns(kinds, {}), rows), data_definition=definition
            ),
            Dataset.from_pandas(
                train_sample(conn, snapshot, kinds, full_from, rows), data_definition=definition
            ),
        )
        path = report_path(reports_dir, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot_report.save_html(str(path))
    return path

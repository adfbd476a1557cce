"""The Evidently HTML drift report of a day: DataDriftPreset on bounded samples.

A person's view beside ``monitoring.drift``: a reservoir sample of the day's feature rows
against one of the train split of the champion's dataset version (its Parquet snapshot).
Evidently is imported here only, when a report is written.
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mlplatform.ml.master_table import snapshot_path
from mlplatform.warehouse.features import TABLE as FEATURES_TABLE


def report_path(reports_dir: Path, day: date) -> Path:
    """Where the data drift report of ``day`` is written."""
    return reports_dir / "data_drift" / f"data_drift_{day.isoformat()}.html"


def _sample(conn: duckdb.DuckDBPyConnection, source: str, columns: str, rows: int) -> pd.DataFrame:
    return conn.sql(
        f"SELECT {columns} FROM ({source}) USING SAMPLE reservoir({rows} ROWS) REPEATABLE (7)"
    ).df()


def write_drift_report(
    conn: duckdb.DuckDBPyConnection,
    day: date,
    kinds: dict[str, str],
    dataset_version: str,
    datasets_dir: Path,
    reports_dir: Path,
    rows: int,
) -> Path | None:
    """Write the report of ``day`` for the features ``kinds`` (name -> ``numeric`` or
    ``categorical``) against ``rows`` train rows of ``dataset_version``; its path, or None
    when the dataset's snapshot is gone."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    snapshot = snapshot_path(datasets_dir, dataset_version)
    if not snapshot.is_file():
        return None
    columns = ", ".join(
        f"{name}::{'VARCHAR' if kind == 'categorical' else 'DOUBLE'} AS {name}"
        for name, kind in kinds.items()
    )
    train = f"SELECT * FROM read_parquet('{snapshot}') WHERE split = 'train'"
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
            Dataset.from_pandas(_sample(conn, current, columns, rows), data_definition=definition),
            Dataset.from_pandas(_sample(conn, train, columns, rows), data_definition=definition),
        )
        path = report_path(reports_dir, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot_report.save_html(str(path))
    return path

"""``monitoring.serving_log``: the REST service's prediction log, one day at a time.

``mlplatform serve`` appends one JSON object per scored transaction per model (champion,
canary or shadow) to ``predictions-YYYY-MM-DD.jsonl`` under the serving folder, the file
named by the event's day. Loading a day replaces its rows (delete, insert, one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from mlplatform.warehouse.connection import read_sql, transactions

TABLE = "monitoring.serving_log"


@dataclass(frozen=True)
class ServingLogResult:
    """A loaded day: its file (None when there is none), rows loaded, and rows per role."""

    partition_date: date
    file: Path | None
    rows: int
    rows_by_role: dict[str, int] = field(default_factory=dict)


def log_file(folder: Path, day: date) -> Path:
    """The prediction-log file of ``day`` in ``folder``."""
    return folder / f"predictions-{day.isoformat()}.jsonl"


def load_serving_log(conn: duckdb.DuckDBPyConnection, folder: Path, day: date) -> ServingLogResult:
    """Replace the day's rows of ``monitoring.serving_log`` with its log file's lines (none
    when the day has no file)."""
    path = log_file(folder, day)
    exists = path.is_file()
    for attempt in transactions(conn):
        with attempt:
            conn.execute(f"DELETE FROM {TABLE} WHERE partition_date = ?", [day])
            if exists:
                conn.execute(read_sql("insert_serving_log"), {"path": str(path), "day": day})
    by_role = dict(
        conn.execute(
            f"SELECT role, count(*) FROM {TABLE} WHERE partition_date = ? GROUP BY 1 ORDER BY 1",
            [day],
        ).fetchall()
    )
    return ServingLogResult(day, path if exists else None, sum(by_role.values()), by_role)

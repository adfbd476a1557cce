"""``monitoring.serving_log``: the REST service's prediction log, one day at a time.

``mlplatform serve`` appends one JSON object per scored transaction per model (champion,
canary or shadow) to ``predictions-YYYY-MM-DD.<host>-<pid>.jsonl`` under the serving folder:
a file per event day and service process. Loading a day reads all its files and replaces the
day's rows (delete, insert, one transaction), so loading again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from mlplatform.serving.prediction_log import day_files
from mlplatform.warehouse.connection import read_sql, transactions

TABLE = "monitoring.serving_log"


@dataclass(frozen=True)
class ServingLogResult:
    """A loaded day: its files (none when no process logged it), rows loaded, rows per role."""

    partition_date: date
    files: tuple[Path, ...]
    rows: int
    rows_by_role: dict[str, int] = field(default_factory=dict)
    unreadable_lines: int = 0


def load_serving_log(conn: duckdb.DuckDBPyConnection, folder: Path, day: date) -> ServingLogResult:
    """Replace the day's rows of ``monitoring.serving_log`` with the lines of its log files
    (none when the day has no file)."""
    files = tuple(day_files(folder, day))
    for attempt in transactions(conn):
        with attempt:
            conn.execute(f"DELETE FROM {TABLE} WHERE partition_date = ?", [day])
            if files:
                conn.execute(
                    read_sql("insert_serving_log"), {"paths": [str(f) for f in files], "day": day}
                )
    by_role = dict(
        conn.execute(
            f"SELECT role, count(*) FROM {TABLE} WHERE partition_date = ? GROUP BY 1 ORDER BY 1",
            [day],
        ).fetchall()
    )
    return ServingLogResult(
        day, files, sum(by_role.values()), by_role, _unreadable_lines(conn, files)
    )


def _unreadable_lines(conn: duckdb.DuckDBPyConnection, files: tuple[Path, ...]) -> int:
    """Lines of ``files`` that are not JSON objects (cut short when a process was killed
    mid-write): the load skips them, and says how many."""
    if not files:
        return 0
    return conn.execute(
        """SELECT count(*) FROM (SELECT unnest(string_split(content, chr(10))) AS line
                                 FROM read_text($paths))
           WHERE line <> '' AND NOT json_valid(line)""",
        {"paths": [str(f) for f in files]},
    ).fetchone()[0]

"""``raw.ingestion_log``: the record of every landing file ingestion loaded or rejected, and
what the warehouse has loaded as it records it (whoever loaded it); when a day's file is due.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import duckdb
import pandas as pd

from mlplatform.ingestion.files import FileRejected, inspect_file
from mlplatform.warehouse.connection import read_sql


@dataclass(frozen=True)
class FileOutcome:
    """What became of one landing file (one row of ``raw.ingestion_log``)."""

    file: str
    sha256: str | None
    size_bytes: int | None
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    status: str
    error: str | None = None


def log_frame(
    outcomes: Mapping[date, Sequence[FileOutcome]],
    started: datetime,
    finished: datetime,
    run_id: str | None,
) -> pd.DataFrame:
    """Rows of ``raw.ingestion_log`` (its columns, in order) for each partition's file
    outcomes, in one frame however many partitions."""
    return pd.DataFrame(
        [
            (
                partition_date,
                o.file,
                o.sha256,
                o.size_bytes,
                o.rows_read,
                o.rows_loaded,
                o.rows_quarantined,
                o.status,
                o.error,
                run_id,
                started,
                finished,
            )
            for partition_date, files in outcomes.items()
            for o in files
        ],
        columns=[
            "partition_date",
            "file",
            "sha256",
            "size_bytes",
            "rows_read",
            "rows_loaded",
            "rows_quarantined",
            "status",
            "error",
            "run_id",
            "started_at",
            "finished_at",
        ],
    ).astype({"sha256": "object", "size_bytes": "Int64", "error": "object", "run_id": "object"})


def log_rejection(
    conn: duckdb.DuckDBPyConnection,
    rejected: FileRejected,
    partition_date: date,
    started: datetime,
    run_id: str | None,
) -> None:
    """Record a rejected file in ``raw.ingestion_log`` (hash and size when it exists)."""
    inspection = inspect_file(rejected.file) if rejected.file.exists() else None
    outcome = FileOutcome(
        file=rejected.file.name,
        sha256=inspection.sha256 if inspection else None,
        size_bytes=inspection.size_bytes if inspection else None,
        rows_read=0,
        rows_loaded=0,
        rows_quarantined=0,
        status="rejected",
        error=rejected.reason,
    )
    frame = log_frame({partition_date: [outcome]}, started, datetime.now(), run_id)
    conn.register("log_frame", frame)
    conn.execute("INSERT INTO raw.ingestion_log SELECT * FROM log_frame")
    conn.unregister("log_frame")


def loaded_files(conn: duckdb.DuckDBPyConnection) -> dict[tuple[date, str], str]:
    """(partition date, file name) -> SHA-256 of every file in its partition's current load."""
    rows = conn.execute(read_sql("loaded_files")).fetchall()
    return {(partition_date, file): sha256 for partition_date, file, sha256 in rows}


def landing_due_day(now: datetime, due_hours: float) -> date:
    """The latest day whose landing file is due at ``now``: a day's file is due ``due_hours``
    hours after the midnight (UTC) that ends the day."""
    return (now.astimezone(UTC) - timedelta(hours=due_hours)).date() - timedelta(days=1)


def landing_due_at(day: date, due_hours: float) -> datetime:
    """When ``day``'s landing file is due (UTC)."""
    return datetime.combine(day + timedelta(days=1), time(), UTC) + timedelta(hours=due_hours)

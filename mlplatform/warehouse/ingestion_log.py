"""What the warehouse has loaded, as ``raw.ingestion_log`` records it (whoever loaded it)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import duckdb

from mlplatform.warehouse.connection import read_sql


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

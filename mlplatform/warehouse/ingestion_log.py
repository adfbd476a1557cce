"""What the warehouse has loaded, as ``raw.ingestion_log`` records it (whoever loaded it)."""

from __future__ import annotations

from datetime import date

import duckdb

from mlplatform.warehouse.connection import read_sql


def loaded_files(conn: duckdb.DuckDBPyConnection) -> dict[tuple[date, str], str]:
    """(partition date, file name) -> SHA-256 of every file in its partition's current load."""
    rows = conn.execute(read_sql("loaded_files")).fetchall()
    return {(partition_date, file): sha256 for partition_date, file, sha256 in rows}

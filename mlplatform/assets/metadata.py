"""Metadata that a person wants to see next to a warehouse table in the Dagster UI."""

from __future__ import annotations

from datetime import date

import dagster as dg
import duckdb


def table_metadata(
    conn: duckdb.DuckDBPyConnection, table: str, partition_date: date | None = None
) -> dict[str, object]:
    """Table name, column schema, row count (of the partition) and a 10-row preview."""
    where = "WHERE partition_date = ?" if partition_date else ""
    params = [partition_date] if partition_date else []
    schema, name = table.split(".")
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? AND table_catalog = current_database() "
        "ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    rows = conn.execute(f"SELECT count(*) FROM {table} {where}", params).fetchone()[0]
    preview = conn.execute(f"SELECT * FROM {table} {where} LIMIT 10", params).df()
    return {
        "dagster/table_name": table,
        "dagster/row_count": rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(column, data_type) for column, data_type in columns]
        ),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False) if rows else "(empty)"),
    }

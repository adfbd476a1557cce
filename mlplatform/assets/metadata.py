"""Metadata that a person wants to see next to a warehouse table in the Dagster UI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import dagster as dg
import duckdb
import pandas as pd

_PREVIEW_ROWS = 10


def table_metadata(
    conn: duckdb.DuckDBPyConnection, table: str, partition_date: date | None = None
) -> dict[str, object]:
    """Table name, column schema, row count (of the partition) and a 10-row preview."""
    if partition_date is not None:
        return partitions_metadata(conn, table, [partition_date])[partition_date]
    rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    preview = conn.execute(f"SELECT * FROM {table} LIMIT {_PREVIEW_ROWS}").df()
    return _metadata(table, _column_schema(conn, table), rows, preview)


def partitions_metadata(
    conn: duckdb.DuckDBPyConnection, table: str, partition_dates: Sequence[date]
) -> dict[date, dict[str, object]]:
    """:func:`table_metadata` of each partition, in three queries whatever their number."""
    bounds = [min(partition_dates), max(partition_dates)]
    where = "WHERE partition_date BETWEEN ? AND ?"
    counts = dict(
        conn.execute(
            f"SELECT partition_date, count(*) FROM {table} {where} GROUP BY partition_date",
            bounds,
        ).fetchall()
    )
    previews = conn.execute(
        f"""SELECT * FROM {table} {where}
            QUALIFY row_number() OVER (PARTITION BY partition_date) <= {_PREVIEW_ROWS}""",
        bounds,
    ).df()
    by_day = {
        pd.Timestamp(key).date(): positions
        for key, positions in previews.groupby("partition_date", sort=False).indices.items()
    }
    schema = _column_schema(conn, table)
    return {
        day: _metadata(
            table,
            schema,
            counts.get(day, 0),
            previews.iloc[by_day[day]] if day in by_day else previews.iloc[:0],
        )
        for day in partition_dates
    }


def _column_schema(conn: duckdb.DuckDBPyConnection, table: str) -> dg.TableSchema:
    schema, name = table.split(".")
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? AND table_catalog = current_database() "
        "ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(column, kind) for column, kind in columns])


def _metadata(
    table: str, schema: dg.TableSchema, rows: int, preview: pd.DataFrame
) -> dict[str, object]:
    return {
        "dagster/table_name": table,
        "dagster/row_count": rows,
        "dagster/column_schema": schema,
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False) if rows else "(empty)"),
    }

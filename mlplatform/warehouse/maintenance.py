"""Upkeep of a DuckLake warehouse: what its daily checkpoint merges, expires and deletes."""

from __future__ import annotations

import duckdb

from mlplatform.warehouse.connection import LAKE, sql_literal


def checkpoint_lake(
    conn: duckdb.DuckDBPyConnection, *, snapshot_days: int, orphan_days: int
) -> dict[str, int]:
    """DuckLake's ``CHECKPOINT``: inlined rows flushed to Parquet, snapshots older than
    ``snapshot_days`` expired (time travel reaches that far back), small files merged, and the
    files no snapshot needs, or no commit ever referenced (a worker killed mid-write), deleted
    once older than ``orphan_days`` (well past any running write). Counts before and after."""
    conn.execute(
        f"CALL {LAKE}.set_option('expire_older_than', {sql_literal(f'{snapshot_days} days')})"
    )
    conn.execute(
        f"CALL {LAKE}.set_option('delete_older_than', {sql_literal(f'{orphan_days} days')})"
    )
    before = _counts(conn)
    conn.execute("CHECKPOINT")
    after = _counts(conn)
    return {f"{name}_before": count for name, count in before.items()} | {
        f"{name}_after": count for name, count in after.items()
    }


def _counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Snapshots and data files in the lake's catalog."""
    snapshots, files = conn.execute(
        f"""SELECT (SELECT count(*) FROM ducklake_snapshots({sql_literal(LAKE)})),
                   (SELECT count(*) FROM __ducklake_metadata_{LAKE}.ducklake_data_file)"""
    ).fetchone()
    return {"snapshots": snapshots, "data_files": files}

"""Opening the DuckDB warehouse with its schema in place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parent / "sql"


def read_sql(name: str) -> str:
    """The text of ``warehouse/sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def sql_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def connect(
    path: Path, *, read_only: bool = False, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file; a writable one creates the schema if missing.

    ``memory_limit`` (e.g. ``"1GB"``) bounds DuckDB's memory; larger work spills to disk.
    """
    config = {"memory_limit": memory_limit} if memory_limit else {}
    if read_only:
        conn = duckdb.connect(str(path), read_only=True, config=config)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(str(path), config=config)
        conn.execute(read_sql("create_schema"))
    conn.execute(read_sql("macros"))
    return conn


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the block in one transaction: committed when it ends, rolled back if it raises."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def insertion_order(conn: duckdb.DuckDBPyConnection, *, preserve: bool) -> Iterator[None]:
    """Set ``preserve_insertion_order`` for the block, then restore its value.

    The setting is global to the database instance: use it only where no other connection
    of the process depends on it meanwhile (warehouse writers share a pool of size 1).
    """
    before = conn.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    conn.execute(f"SET preserve_insertion_order = {str(preserve).lower()}")
    try:
        yield
    finally:
        conn.execute(f"SET preserve_insertion_order = {str(before).lower()}")

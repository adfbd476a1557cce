"""Opening the DuckDB warehouse with its schema in place."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parent / "sql"
# DuckDB's message when another process holds the file: 'Conflicting lock is held in
# /usr/bin/duckdb (PID 1234)'.
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")
_FIRST_WAIT_SECONDS = 0.1
_MAX_WAIT_SECONDS = 5.0
logger = logging.getLogger(__name__)


class WarehouseLockedError(RuntimeError):
    """The warehouse file stayed locked by another process for longer than the wait allowed."""

    def __init__(self, path: Path, *, read_only: bool, holder: str, waited_seconds: float) -> None:
        if read_only:
            advice = (
                "Close that session, or open it read-only (`duckdb -readonly FILE` in the "
                "DuckDB CLI, `duckdb.connect(FILE, read_only=True)` in Python): read-only "
                "sessions share the file."
            )
        else:
            advice = (
                "Close that session: DuckDB lets one process write, and none while another "
                "has the file open, even read-only; to look at the data while runs write, "
                "query a copy of the file."
            )
        super().__init__(
            f"warehouse {path} is locked by {holder}; gave up after waiting "
            f"{waited_seconds:.0f}s (MLPLATFORM_WAREHOUSE_LOCK_TIMEOUT_SECONDS). {advice} "
            "Nothing was written; run again once it is closed."
        )
        self.path = path
        self.holder = holder


def lock_holder(error: duckdb.IOException) -> str | None:
    """Who holds the lock that ``error`` reports ('PID 1234 (duckdb warehouse.duckdb)'), or
    None when the error is not a lock conflict."""
    match = _LOCK_HOLDER.search(str(error))
    if match is None:
        return None
    pid = match["pid"]
    try:  # the command line says more than the program path (which script, which file)
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"PID {pid} ({command or match['program']})"


def read_sql(name: str) -> str:
    """The text of ``warehouse/sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def sql_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def connect(
    path: Path,
    *,
    read_only: bool = False,
    memory_limit: str | None = None,
    lock_timeout_seconds: float = 0.0,
) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file; a writable one creates the schema if missing.

    ``memory_limit`` (e.g. ``"1GB"``) bounds DuckDB's memory; larger work spills to disk.
    While another process holds the file, retries with backoff (0.1 s doubling to 5 s) for
    up to ``lock_timeout_seconds``, then raises :class:`WarehouseLockedError` naming it.
    """
    config = {"memory_limit": memory_limit} if memory_limit else {}
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    wait = _FIRST_WAIT_SECONDS
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only, config=config)
            break
        except duckdb.IOException as error:
            holder = lock_holder(error)
            if holder is None:
                raise
            waited = time.monotonic() - started
            if waited >= lock_timeout_seconds:
                raise WarehouseLockedError(
                    path, read_only=read_only, holder=holder, waited_seconds=waited
                ) from error
            if wait == _FIRST_WAIT_SECONDS:
                logger.warning(
                    "warehouse %s is locked by %s: waiting up to %.0fs for it to close",
                    path,
                    holder,
                    lock_timeout_seconds,
                )
            time.sleep(min(wait, lock_timeout_seconds - waited))
            wait = min(wait * 2, _MAX_WAIT_SECONDS)
    if not read_only:
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

"""Opening the warehouse with its schema in place: a DuckDB file (one writer at a time) or a
DuckLake (a catalog database plus Parquet files, written by several workers at once)."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from types import TracebackType

import duckdb

from mlplatform.settings import is_lake

SQL_DIR = Path(__file__).resolve().parent / "sql"
# DuckDB's message when another process holds the file: 'Conflicting lock is held in
# /usr/bin/duckdb (PID 1234)'.
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")
_FIRST_WAIT_SECONDS = 0.1
_MAX_WAIT_SECONDS = 5.0
#: The name a DuckLake warehouse is attached under (and made the default database).
LAKE = "warehouse"
#: DuckLake's message when a commit conflicts with another writer's (the transaction is gone).
_CONFLICT = "Transaction conflict"
_CONFLICT_ATTEMPTS = 10
_CONFLICT_FIRST_WAIT_SECONDS = 0.05
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


def on_lake(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``conn``'s warehouse is a DuckLake."""
    return conn.execute(
        "SELECT type = 'ducklake' FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()[0]


def table_ddl_for(conn: duckdb.DuckDBPyConnection, ddl: str) -> str:
    """``ddl`` as the warehouse of ``conn`` takes it: on a DuckLake (Parquet files, compressed
    by the writer) without the columns' ``USING COMPRESSION``."""
    return re.sub(r"\s+USING COMPRESSION \w+", "", ddl) if on_lake(conn) else ddl


def table_exists(conn: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Whether the warehouse of ``conn`` has the table ``schema.name``."""
    schema, name = qualified.split(".")
    return bool(
        conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = ? AND table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )


def read_sql(name: str) -> str:
    """The text of ``warehouse/sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def sql_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def connect(
    location: Path | str,
    *,
    data_path: str | None = None,
    read_only: bool = False,
    memory_limit: str | None = None,
    threads: int | None = None,
    lock_timeout_seconds: float = 0.0,
) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse; a writable one creates the schema if missing.

    ``location`` is a DuckDB file, or a DuckLake (``ducklake:<catalog>``, its tables' files in
    ``data_path``), attached as ``warehouse`` and used by default, so the same SQL runs on
    both. ``memory_limit`` (e.g. ``"1GB"``) bounds DuckDB's memory (larger work spills to
    disk); ``threads`` its threads (default: one per core). While another process holds a
    DuckDB file, retries with backoff (0.1 s doubling to 5 s) for up to
    ``lock_timeout_seconds``, then raises :class:`WarehouseLockedError` naming it.
    """
    config: dict[str, str | int] = {"memory_limit": memory_limit} if memory_limit else {}
    if threads:
        config["threads"] = threads
    if is_lake(str(location)):
        conn = _attach_lake(str(location), data_path, read_only=read_only, config=config)
    else:
        conn = _open_file(Path(location), read_only, config, lock_timeout_seconds)
    if not read_only:
        schema = table_ddl_for(conn, read_sql("create_schema"))
        for attempt in transactions(conn):  # workers starting at once on a new lake conflict
            with attempt:
                conn.execute(schema)
    conn.execute(read_sql("macros"))
    return conn


def _open_file(
    path: Path, read_only: bool, config: dict[str, str | int], lock_timeout_seconds: float
) -> duckdb.DuckDBPyConnection:
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    wait = _FIRST_WAIT_SECONDS
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
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


def _attach_lake(
    location: str, data_path: str | None, *, read_only: bool, config: dict[str, str | int]
) -> duckdb.DuckDBPyConnection:
    if not data_path:
        raise ValueError(
            f"the DuckLake warehouse {redact(location)} needs a data path "
            "(MLPLATFORM_WAREHOUSE_DATA_PATH): where its tables' files go"
        )
    from mlplatform.warehouse.extensions import load_extensions  # it imports this module

    catalog = location.removeprefix("ducklake:").split(":", 1)[0]
    options = f"DATA_PATH {sql_literal(data_path)}" + (", READ_ONLY" if read_only else "")
    wait = _CONFLICT_FIRST_WAIT_SECONDS
    for number in range(1, _CONFLICT_ATTEMPTS + 1):
        conn = duckdb.connect(config=config)
        load_extensions(conn, "ducklake", *(["postgres_scanner"] if catalog == "postgres" else []))
        try:
            conn.execute(f"ATTACH {sql_literal(location)} AS {LAKE} ({options})")
            break
        except duckdb.Error as error:
            conn.close()
            if _initialized_meanwhile(error) and number < _CONFLICT_ATTEMPTS:
                time.sleep(wait * random.uniform(0.5, 1.5))  # then it finds the catalog made
                wait = min(wait * 2, _MAX_WAIT_SECONDS)
                continue
            # DuckDB's message repeats the connection string: the cause is not chained (its
            # password would be printed with the traceback), its text is given redacted.
            raise WarehouseUnavailableError(
                f"could not open the DuckLake warehouse {redact(location)} (data path "
                f"{data_path}): {redact(str(error))}. Check that its catalog database is running "
                "and reachable with these credentials (MLPLATFORM_WAREHOUSE), then run again: "
                "nothing was written."
            ) from None
    conn.execute(f"USE {LAKE}")
    return conn


def _initialized_meanwhile(error: duckdb.Error) -> bool:
    """Whether ATTACH failed because another worker was creating the new lake's catalog
    tables at the same moment (Postgres refuses the second ``CREATE TABLE``)."""
    text = str(error)
    return "Failed to initialize DuckLake" in text and (
        "already exists" in text or "duplicate key" in text
    )


class WarehouseUnavailableError(RuntimeError):
    """A DuckLake warehouse's catalog could not be reached or opened."""


class WarehouseConflictError(RuntimeError):
    """A write kept conflicting with other writers' commits for every attempt allowed."""


def redact(location: str) -> str:
    """``location`` without its password (``password=...`` of a libpq string)."""
    return re.sub(r"(password=)[^\s\"']+", r"\1***", location)


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


class _Attempt(AbstractContextManager[None]):
    """One try of a transaction (see :func:`transactions`)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn
        self.committed = False
        self.conflict: duckdb.TransactionException | None = None

    def __enter__(self) -> None:
        self.conn.execute("BEGIN TRANSACTION")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if error is None:
            try:
                self.conn.execute("COMMIT")
            except duckdb.TransactionException as conflict:
                if _CONFLICT not in str(conflict):
                    raise
                self.conflict = conflict  # DuckLake has ended the transaction
            else:
                self.committed = True
            return False
        if isinstance(error, duckdb.TransactionException) and _CONFLICT in str(error):
            self.conflict = error
        with suppress(duckdb.TransactionException):  # a conflict ended the transaction already
            self.conn.execute("ROLLBACK")
        return self.conflict is not None


def transactions(
    conn: duckdb.DuckDBPyConnection, *, attempts: int = _CONFLICT_ATTEMPTS
) -> Iterator[_Attempt]:
    """A transaction for a block that can run again, retried while it conflicts::

        for attempt in transactions(conn):
            with attempt:
                ...  # delete the partition, insert it again

    The block commits when it ends and is rolled back if it raises. On a DuckLake, a commit
    that conflicts with another worker's (both deleted from one table) leaves nothing written:
    the block runs again after a backoff (0.05 s doubling, with jitter), up to ``attempts``
    times, then :class:`WarehouseConflictError`. A DuckDB file has one writer: no conflicts.
    Keep the block short: compute and stage outside it, delete and insert inside.
    """
    wait = _CONFLICT_FIRST_WAIT_SECONDS
    for number in range(1, attempts + 1):
        attempt = _Attempt(conn)
        yield attempt
        if attempt.committed:
            return
        if attempt.conflict is None:
            raise RuntimeError("a transaction attempt ended without running its block")
        if number == attempts:
            raise WarehouseConflictError(
                f"the warehouse write conflicted with other workers' commits {attempts} times "
                f"in a row ({attempt.conflict}); nothing of it was written: run it again"
            ) from attempt.conflict
        logger.info(
            "warehouse commit conflicted (%s): try %d of %d", attempt.conflict, number + 1, attempts
        )
        time.sleep(wait * random.uniform(0.5, 1.5))
        wait = min(wait * 2, _MAX_WAIT_SECONDS)


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

"""The online feature store: the recent warehouse history the online features read, in a
DuckDB file of its own (``$MLPLATFORM_HOME/online/store.duckdb``).

It holds the warehouse's own table names (``curated.transactions``, ``raw.card_reference``),
so any code that reads a warehouse reads the store, plus ``online.store_info`` (one row: what
it holds and when it was written). Only pseudonyms: the curated layer has no card number,
name, street or key. It is written aside and renamed onto its name (fsync'ed before and
after), so a reader opens either the old store or the new one, never half of one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from mlplatform.features.declarations import FeatureRegistry
from mlplatform.warehouse.connection import read_sql, sql_literal

#: The store's tables (schema-qualified, as in the warehouse).
TABLES = ("curated.transactions", "raw.card_reference", "online.store_info")


@dataclass(frozen=True)
class OnlineStoreResult:
    """A written online store: where, what it holds (events, cards, time span) and its size."""

    path: Path
    written_at: datetime
    first_event_time: datetime | None
    last_event_time: datetime | None
    events: int
    cards: int
    lookback_days: int
    size_bytes: int
    seconds: float


def store_lookback_days(registry: FeatureRegistry) -> int:
    """Days of history the store keeps: the registry's lookback in whole days, plus one."""
    return math.ceil(registry.lookback / timedelta(days=1)) + 1


def write_online_store(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    lookback_days: int,
    source_warehouse: str = "",
    before_replace: Callable[[Path], None] | None = None,
) -> OnlineStoreResult:
    """Replace the store at ``path`` with the warehouse's curated events of the last
    ``lookback_days`` days before its last event, and the card reference data.

    ``conn`` is a writable connection to the warehouse (DuckDB attaches the new file through
    it; nothing in the warehouse changes). ``source_warehouse`` is recorded in
    ``online.store_info``. ``before_replace`` is called with the new file, complete, before
    it replaces the old one (a rename keeps its identity: inode, size, modification time).
    """
    began = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for leftover in (aside, aside.with_name(aside.name + ".wal")):
        leftover.unlink(missing_ok=True)
    (last,) = conn.execute("SELECT max(event_time) FROM curated.transactions").fetchone()
    written_at = datetime.now(UTC).replace(tzinfo=None)
    conn.execute(f"ATTACH {sql_literal(str(aside))} AS store")
    written = False
    try:
        for schema in ("curated", "raw", "online"):
            conn.execute(f"CREATE SCHEMA store.{schema}")
        since = last - timedelta(days=lookback_days) if last else None
        conn.execute(read_sql("online_store_transactions"), {"since": since})
        conn.execute("CREATE TABLE store.raw.card_reference AS SELECT * FROM raw.card_reference")
        conn.execute(
            read_sql("online_store_info"),
            {"written_at": written_at, "lookback_days": lookback_days,
             "source_warehouse": source_warehouse},
        )  # fmt: skip
        first, last_kept, events, cards = conn.execute(
            "SELECT first_event_time, last_event_time, events, cards FROM store.online.store_info"
        ).fetchone()
        written = True
    finally:
        conn.execute("DETACH store")
        if not written:  # the old store stays; nothing half-written is left beside it
            aside.unlink(missing_ok=True)
    _fsync(aside)
    if before_replace is not None:
        try:
            before_replace(aside)
        except BaseException:
            aside.unlink(missing_ok=True)
            raise
    os.replace(aside, path)
    _fsync(path.parent)
    return OnlineStoreResult(
        path=path,
        written_at=written_at,
        first_event_time=first,
        last_event_time=last_kept,
        events=events,
        cards=cards,
        lookback_days=lookback_days,
        size_bytes=path.stat().st_size,
        seconds=time.perf_counter() - began,
    )


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

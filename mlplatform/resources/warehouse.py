"""The warehouse as a Dagster resource."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from mlplatform.settings import Settings, is_lake
from mlplatform.warehouse.connection import connect, redact


def warehouse_pool(settings: Settings) -> str | None:
    """The concurrency pool of the warehouse-writing assets: ``warehouse`` on a DuckDB file
    (one writer: runs that write it queue), none on a DuckLake (partitions run side by side)."""
    return None if settings.warehouse_is_lake else "warehouse"


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse every stage reads and writes: a DuckDB file (one writer at a time: the
    warehouse-writing assets share the pool `warehouse`) or a DuckLake (no pool: each
    partition a transaction of its own, a conflicting commit retried)."""

    location: str
    data_path: str | None = None
    memory_limit: str = "1GB"
    threads: int | None = None
    lock_timeout_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WarehouseResource:
        return cls(
            location=settings.warehouse_location,
            data_path=settings.warehouse_data_path,
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
            lock_timeout_seconds=settings.warehouse_lock_timeout_seconds,
        )

    @property
    def exists(self) -> bool:
        """Whether there is a warehouse to read yet (a DuckLake's catalog always answers)."""
        return is_lake(self.location) or Path(self.location).exists()

    @property
    def name(self) -> str:
        """The location as it may be shown: a DuckLake's without its password."""
        return redact(self.location)

    @contextmanager
    def connection(
        self, *, read_only: bool = False, wait: bool = True
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is closed when the block ends.

        While another process holds a DuckDB file, waits up to ``lock_timeout_seconds`` (with
        ``wait``; without, tries once) before raising ``WarehouseLockedError``.
        """
        conn = connect(
            self.location,
            data_path=self.data_path,
            read_only=read_only,
            memory_limit=self.memory_limit,
            threads=self.threads,
            lock_timeout_seconds=self.lock_timeout_seconds if wait else 0.0,
        )
        try:
            yield conn
        finally:
            conn.close()

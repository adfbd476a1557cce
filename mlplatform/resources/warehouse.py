"""The DuckDB warehouse as a Dagster resource."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from mlplatform.warehouse.connection import connect


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file every stage reads and writes (one writer at a time: pool `warehouse`)."""

    path: str
    memory_limit: str = "1GB"
    lock_timeout_seconds: float = 0.0

    @contextmanager
    def connection(
        self, *, read_only: bool = False, wait: bool = True
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is closed when the block ends.

        While another process holds the file, waits up to ``lock_timeout_seconds`` (with
        ``wait``; without, tries once) before raising ``WarehouseLockedError``.
        """
        conn = connect(
            Path(self.path),
            read_only=read_only,
            memory_limit=self.memory_limit,
            lock_timeout_seconds=self.lock_timeout_seconds if wait else 0.0,
        )
        try:
            yield conn
        finally:
            conn.close()

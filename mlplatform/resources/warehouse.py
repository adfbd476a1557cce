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

    @contextmanager
    def connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection that is closed when the block ends."""
        conn = connect(Path(self.path), read_only=read_only, memory_limit=self.memory_limit)
        try:
            yield conn
        finally:
            conn.close()

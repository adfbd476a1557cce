"""A warehouse someone has open: runs wait for it with backoff, and if they give up, the error
names the file, the process holding it and what to do, and nothing is half-written."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from mlplatform.warehouse.connection import WarehouseLockedError, connect
from tests.conftest import PlatformHome, simulate_landing, warehouse_held_open


def _close_soon(holder, seconds: float = 1.0) -> threading.Timer:
    """Close the holding session a little later, as the person at the DuckDB CLI would."""
    timer = threading.Timer(seconds, holder.stdin.close)
    timer.start()
    return timer


def test_connect_waits_for_the_holder_to_close_then_opens(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    connect(warehouse).close()
    with warehouse_held_open(warehouse) as holder:
        _close_soon(holder)
        with connect(warehouse, lock_timeout_seconds=60) as conn:
            assert conn.execute("SELECT count(*) FROM raw.transactions").fetchone() == (0,)


@pytest.mark.parametrize("read_only", [False, True])
def test_giving_up_names_the_file_the_process_and_what_to_do(
    tmp_path: Path, read_only: bool
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    connect(warehouse).close()
    with warehouse_held_open(warehouse) as holder, pytest.raises(WarehouseLockedError) as error:
        connect(warehouse, read_only=read_only, lock_timeout_seconds=0.3)
    message = str(error.value)
    assert str(warehouse) in message
    assert f"PID {holder.pid} (" in message
    assert "MLPLATFORM_WAREHOUSE_LOCK_TIMEOUT_SECONDS" in message
    if read_only:
        assert "open it read-only (`duckdb -readonly FILE`" in message
    else:
        assert "Close that session" in message and "even read-only" in message


def test_a_read_only_session_lets_readers_in_and_keeps_writers_out(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    connect(warehouse).close()
    with warehouse_held_open(warehouse, read_only=True):
        connect(warehouse, read_only=True).close()
        with pytest.raises(WarehouseLockedError):
            connect(warehouse, lock_timeout_seconds=0)


def _ingest(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [card_reference, raw_transactions],
        partition_key="2025-01-01",
        selection=[raw_transactions],
        instance=instance,
        resources=build_resources(get_settings()),
        raise_on_error=False,
    )


def test_a_run_waits_while_the_warehouse_is_held_then_loads(
    platform_home: PlatformHome, instance
) -> None:
    simulate_landing(platform_home.landing, days=1)
    connect(platform_home.warehouse).close()
    with warehouse_held_open(platform_home.warehouse) as holder:
        _close_soon(holder)
        result = _ingest(instance)

    assert result.success
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(f"is locked by PID {holder.pid}" in m and "waiting up to" in m for m in logged)
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw.transactions").fetchone()[0] > 0


def test_a_run_that_gives_up_fails_with_the_message_and_writes_nothing(
    platform_home: PlatformHome, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_WAREHOUSE_LOCK_TIMEOUT_SECONDS", "0.5")
    simulate_landing(platform_home.landing, days=1)
    connect(platform_home.warehouse).close()
    with warehouse_held_open(platform_home.warehouse) as holder:
        result = _ingest(instance)

    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.error.cause.message
    assert f"warehouse {platform_home.warehouse} is locked by PID {holder.pid}" in message
    assert "Close that session" in message and "Nothing was written" in message
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw.ingestion_log").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM raw.transactions").fetchone() == (0,)

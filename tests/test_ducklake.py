"""The warehouse on DuckLake (`MLPLATFORM_WAREHOUSE=ducklake:postgres:...`): the catalog in a
real Postgres, the tables as Parquet in a data folder. The same days give the same tables as
on the DuckDB file; partitions written at once by separate processes all land exactly once; a
worker killed mid-commit leaves the previous state; `mlplatform sql` reads both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from mlplatform.warehouse.connection import WarehouseUnavailableError, connect
from tests.conftest import REPO, load_warehouse, simulate_landing, wait_until
from tests.postgres import Postgres

pytestmark = pytest.mark.e2e  # separate processes on a Postgres catalog: about 90 s

#: Every table the ingestion, curation and feature stages write, with the columns that hold
#: the time of the write (they differ between any two runs) left out, and its key.
TABLES = {
    "raw.transactions": ("transaction_id", ["ingested_at"]),
    "raw.quarantine": ("file, line", ["quarantined_at"]),
    "raw.ingestion_log": ("file", ["started_at", "finished_at", "run_id"]),
    "raw.card_reference": ("card_id", ["loaded_at"]),
    "curated.transactions": ("transaction_id", []),
    "features.card_features": ("transaction_id", []),
}

WORKER = """
import sys
from datetime import date
from pathlib import Path

from mlplatform.contract import load_contract
from mlplatform.features.declarations import feature_registry
from mlplatform.features.offline import build_card_features
from mlplatform.ingestion import curate_partition, ingest_partition
from mlplatform.settings import DEFAULT_CONTRACT, get_settings
from mlplatform.warehouse.connection import connect

stage, location, data_path, landing, day = sys.argv[1:]
day = date.fromisoformat(day)
contract = load_contract(DEFAULT_CONTRACT)
with connect(location, data_path=data_path, threads=1) as conn:
    print("connected", flush=True)
    if stage == "open":  # the catalog and the schema made, nothing else
        pass
    elif stage == "load":
        ingest_partition(
            conn, files=sorted(Path(landing).glob(f"transactions_{day}*.csv")),
            partition_date=day, contract=contract, pii_key=b"test-pii-key", max_amount=1e5,
            max_line_bytes=1_000_000,
        )
        curate_partition(conn, day)
    else:
        build_card_features(conn, feature_registry(get_settings(), contract), day, day)
"""


def _lake(postgres: Postgres, tmp_path: Path) -> tuple[str, str]:
    """A new, empty DuckLake: its ATTACH string and data path."""
    database = postgres.create_database(f"lake_{uuid.uuid4().hex[:8]}")
    return f"ducklake:postgres:{postgres.conninfo(database)}", str(tmp_path / "lake-data")


def _build_features(location: str | Path, data_path: str | None, days: list[str]) -> None:
    from mlplatform.contract import load_contract
    from mlplatform.features.declarations import feature_registry
    from mlplatform.features.offline import build_card_features
    from mlplatform.settings import DEFAULT_CONTRACT, get_settings

    registry = feature_registry(get_settings(), load_contract(DEFAULT_CONTRACT))
    with connect(location, data_path=data_path) as conn:
        build_card_features(
            conn, registry, pd.Timestamp(days[0]).date(), pd.Timestamp(days[-1]).date()
        )


def _tables(location: str | Path, data_path: str | None) -> dict[str, pd.DataFrame]:
    frames = {}
    with connect(location, data_path=data_path, read_only=True) as conn:
        for table, (key, volatile) in TABLES.items():
            exclude = f" EXCLUDE ({', '.join(volatile)})" if volatile else ""
            frames[table] = conn.execute(f"SELECT *{exclude} FROM {table} ORDER BY {key}").fetchdf()
    return frames


def _assert_same_tables(lake: dict[str, pd.DataFrame], file: dict[str, pd.DataFrame]) -> None:
    for table, expected in file.items():
        assert len(expected) > 0 or table == "raw.quarantine", f"{table} is empty"
        pd.testing.assert_frame_equal(lake[table], expected, check_exact=True, obj=table)


def _days(landing: Path) -> list[str]:
    return sorted(path.stem.removeprefix("transactions_") for path in landing.glob("*.csv")
                  if path.stem.startswith("transactions_"))  # fmt: skip


def test_the_same_days_on_ducklake_and_on_the_file_give_identical_tables(
    postgres: Postgres, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    simulate_landing(landing, days=4, cards=80, malformed_rate=0.01)
    location, data_path = _lake(postgres, tmp_path)
    file = tmp_path / "warehouse.duckdb"
    days = _days(landing)
    for warehouse, path in ((file, None), (location, data_path)):
        load_warehouse(landing, warehouse, data_path=path)
        _build_features(warehouse, path, days)

    _assert_same_tables(_tables(location, data_path), _tables(file, None))
    assert list(Path(data_path).rglob("*.parquet")), "the lake's tables are Parquet files"


def _worker(stage: str, location: str, data_path: str, landing: Path, day: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, stage, location, data_path, str(landing), day],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _all_succeed(workers: list[subprocess.Popen]) -> None:
    for process in workers:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]


def test_partitions_written_at_once_by_separate_processes_each_land_exactly_once(
    postgres: Postgres, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    simulate_landing(landing, days=4, cards=80, malformed_rate=0.01)
    days = _days(landing)
    file = tmp_path / "warehouse.duckdb"
    load_warehouse(landing, file)
    _build_features(file, None, days)
    location, data_path = _lake(postgres, tmp_path)

    # Four processes open a new lake at once: its catalog tables and the warehouse's schema
    # are created once, the others' attempts conflict and are retried.
    _all_succeed([_worker("open", location, data_path, landing, day) for day in days])
    load_warehouse(landing, location, data_path=data_path, reference_only=True)
    # Four processes each write a day at once: every delete-and-insert conflicts with the
    # others' at commit and is retried.
    _all_succeed([_worker("load", location, data_path, landing, day) for day in days])
    _all_succeed([_worker("features", location, data_path, landing, day) for day in days])

    _assert_same_tables(_tables(location, data_path), _tables(file, None))
    with connect(location, data_path=data_path, read_only=True) as conn:
        loaded = conn.execute(
            "SELECT partition_date::VARCHAR, count(*) FROM raw.ingestion_log GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert loaded == [(day, 1) for day in days]


def test_a_worker_killed_mid_commit_leaves_the_previous_state(
    postgres: Postgres, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    simulate_landing(landing, days=2, cards=80)
    days = _days(landing)
    location, data_path = _lake(postgres, tmp_path)
    load_warehouse(landing, location, data_path=data_path)
    _build_features(location, data_path, days)
    before = _tables(location, data_path)
    # The day's file is replaced by one with a row less: a completed reload would change it.
    day_file = landing / f"transactions_{days[-1]}.csv"
    lines = day_file.read_text().splitlines(keepends=True)
    day_file.write_text("".join(lines[:-1]))
    catalog = postgres.conninfo(location.split("dbname=")[1])

    # Commits append to the catalog's snapshot table: holding it makes the worker's commit
    # wait, so the kill lands while the reload is written but not committed.
    with psycopg.connect(catalog) as holder:
        holder.execute("LOCK TABLE ducklake_snapshot IN EXCLUSIVE MODE")
        worker = _worker("load", location, data_path, landing, days[-1])
        waiting = wait_until(
            lambda: postgres.query(
                catalog.split("dbname=")[1],
                "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid()",
            ),
            "the worker's commit to wait for the catalog",
            timeout=120,
        )
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert worker.returncode == -signal.SIGKILL and waiting

    _assert_same_tables(_tables(location, data_path), before)


def test_sql_reads_the_lake_and_the_file_alike(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = tmp_path / "landing"
    simulate_landing(landing, days=1, cards=40)
    location, data_path = _lake(postgres, tmp_path)
    home = tmp_path / "home"
    load_warehouse(landing, home / "warehouse.duckdb")
    load_warehouse(landing, location, data_path=data_path)
    query = "SELECT count(*) AS n, count(DISTINCT card_id) AS cards FROM curated.transactions"

    def sql(env: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "mlplatform.cli", "sql", query, "--csv"],
            env={**os.environ, "MLPLATFORM_HOME": str(home), **env}, cwd=REPO,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    on_file = sql({})
    on_lake = sql({"MLPLATFORM_WAREHOUSE": location, "MLPLATFORM_WAREHOUSE_DATA_PATH": data_path})
    assert on_lake == on_file and on_file.splitlines()[0] == "n,cards"
    assert int(on_file.splitlines()[1].split(",")[0]) > 0

    refused = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "sql", "DELETE FROM raw.transactions"],
        env={**os.environ, "MLPLATFORM_WAREHOUSE": location,
             "MLPLATFORM_WAREHOUSE_DATA_PATH": data_path},
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0 and "read-only" in (refused.stdout + refused.stderr).lower()


def test_an_unreachable_catalog_names_the_lake_without_its_password(tmp_path: Path) -> None:
    location = "ducklake:postgres:dbname=lake host=127.0.0.1 port=1 user=u password=secret-word"
    with pytest.raises(WarehouseUnavailableError) as error:
        connect(location, data_path=str(tmp_path))
    message = str(error.value)
    assert "password=***" in message and "secret-word" not in message
    assert "catalog database is running" in message and "nothing was written" in message


def test_the_lake_lifts_the_warehouse_pool(tmp_path: Path) -> None:
    probe = (
        "from mlplatform.assets.ingestion import raw_transactions\n"
        "from mlplatform.assets.features import card_features\n"
        "print(raw_transactions.op.pool, card_features.op.pool)"
    )

    def pools(env: dict[str, str]) -> str:
        return subprocess.run(
            [sys.executable, "-c", probe], env={**os.environ, **env}, cwd=REPO,
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout.strip()  # fmt: skip

    assert pools({"MLPLATFORM_HOME": str(tmp_path)}) == "warehouse warehouse"
    lake = {"MLPLATFORM_WAREHOUSE": "ducklake:postgres:dbname=lake",
            "MLPLATFORM_WAREHOUSE_DATA_PATH": str(tmp_path)}  # fmt: skip
    assert pools(lake) == "None None"


def test_a_path_in_mlplatform_warehouse_is_the_duckdb_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlplatform.resources import WarehouseResource
    from mlplatform.settings import Settings

    elsewhere = tmp_path / "disk" / "wh.duckdb"
    monkeypatch.setenv("MLPLATFORM_WAREHOUSE", str(elsewhere))
    warehouse = WarehouseResource.from_settings(Settings(home=tmp_path / "home"))
    assert not warehouse.exists
    with warehouse.connection() as conn:
        assert conn.execute("SELECT count(*) FROM raw.transactions").fetchone() == (0,)
    assert warehouse.exists and elsewhere.exists()
    assert not (tmp_path / "home" / "warehouse.duckdb").exists()


MAINTAIN = """
import dagster as dg
from mlplatform.definitions import defs

job = defs.resolve_job_def("warehouse_maintenance")
with dg.DagsterInstance.ephemeral() as instance:
    result = job.execute_in_process(instance=instance)
    assert result.success
    logged = [e.message for e in instance.all_logs(result.run_id)]
    (message,) = [m for m in logged if "snapshots_before" in m]
    print(message)
"""


def test_the_lakes_maintenance_job_checkpoints_it_and_keeps_its_tables(
    postgres: Postgres, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    simulate_landing(landing, days=2, cards=40)
    location, data_path = _lake(postgres, tmp_path)
    load_warehouse(landing, location, data_path=data_path)
    _build_features(location, data_path, _days(landing))
    before = _tables(location, data_path)
    env = {
        **os.environ,
        "MLPLATFORM_HOME": str(tmp_path / "home"),
        "MLPLATFORM_WAREHOUSE": location,
        "MLPLATFORM_WAREHOUSE_DATA_PATH": data_path,
    }

    done = subprocess.run(
        [sys.executable, "-c", MAINTAIN], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    counts = dict(item.rsplit(" ", 1) for item in done.stdout.strip().split(", "))
    assert int(counts["snapshots_before"]) > 0 and int(counts["data_files_after"]) > 0
    _assert_same_tables(_tables(location, data_path), before)

"""`mlplatform sql QUERY [--csv]`: a read-only query of the warehouse for users and scripts,
run as a user runs it (the command in a subprocess, on a real warehouse file)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.warehouse.connection import connect
from tests.conftest import warehouse_held_open

ROWS = 2500


def _sql(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "sql", *args],
        env={**os.environ, "MLPLATFORM_HOME": str(home), "COLUMNS": "200", **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A data home whose warehouse holds ``ml.scores``: ROWS rows, one NULL and one name
    with a comma, a quote and non-ASCII letters."""
    home = tmp_path / "home"
    with connect(home / "warehouse.duckdb") as conn:
        conn.execute(
            f"""CREATE TABLE ml.scores AS
                SELECT range AS id,
                       CASE range WHEN 1 THEN 'Zoë "Ž", Łódź' ELSE 'card-' || range END AS name,
                       CASE WHEN range = 2 THEN NULL ELSE range / 8 END AS score
                FROM range({ROWS})"""
        )
    return home


def test_csv_writes_every_row_exactly_and_the_table_shows_the_first_thousand(home: Path) -> None:
    query = "SELECT id, name, score FROM ml.scores ORDER BY id"
    as_csv = _sql(home, query, "--csv")
    as_table = _sql(home, query)

    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["id", "name", "score"] and len(rows) == ROWS + 1
    assert rows[2] == ["1", 'Zoë "Ž", Łódź', "0.125"]
    assert rows[3] == ["2", "card-2", ""]  # NULL is an empty field
    assert rows[-1] == [str(ROWS - 1), f"card-{ROWS - 1}", str((ROWS - 1) / 8)]
    assert as_table.returncode == 0, as_table.stderr
    assert "the first 1000 rows shown; --csv writes them all" in as_table.stdout
    assert "Zoë" in as_table.stdout and "NULL" in as_table.stdout
    assert "card-999 " in as_table.stdout and "card-1000 " not in as_table.stdout


def test_nothing_can_be_written_and_a_bad_query_names_what_is_wrong(home: Path) -> None:
    for statement in ("DELETE FROM ml.scores", "CREATE TABLE ml.other AS SELECT 1 AS x"):
        refused = _sql(home, statement)
        assert refused.returncode == 2, refused.stdout
        assert "read-only" in refused.stdout, refused.stdout
    missing = _sql(home, "SELECT * FROM ml.no_such_table")
    typo = _sql(home, "SELEC 1")

    assert missing.returncode == 2 and "CatalogException" in missing.stdout
    assert "no_such_table" in missing.stdout
    assert typo.returncode == 2 and "ParserException" in typo.stdout
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM ml.scores").fetchone() == (ROWS,)
        assert conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'other'"
        ).fetchone() == (0,)


def test_a_missing_or_held_warehouse_says_what_to_do(home: Path, tmp_path: Path) -> None:
    nowhere = _sql(tmp_path / "empty", "SELECT 1")
    with warehouse_held_open(home / "warehouse.duckdb") as holder:
        held = _sql(home, "SELECT 1", MLPLATFORM_WAREHOUSE_LOCK_TIMEOUT_SECONDS="0")
    with warehouse_held_open(home / "warehouse.duckdb", read_only=True):
        shared = _sql(home, "SELECT count(*) AS n FROM ml.scores", "--csv")

    assert nowhere.returncode == 2 and "no warehouse at" in nowhere.stdout
    assert "ingest a day first" in nowhere.stdout
    assert held.returncode == 2 and f"is locked by PID {holder.pid}" in held.stdout
    assert shared.returncode == 0 and shared.stdout == f"n\n{ROWS}\n"  # readers share the file

"""DuckDB extensions installed from their wheels (never downloaded) and loaded: DuckLake holds
a table, the Postgres scanner loads."""

from pathlib import Path

import duckdb
import pytest

from mlplatform.warehouse.extensions import (
    ExtensionNotAvailableError,
    extension_file,
    load_extensions,
)


def _connect(extensions: Path) -> duckdb.DuckDBPyConnection:
    # Nothing may be fetched: no automatic install or load of a known extension.
    return duckdb.connect(
        config={
            "extension_directory": str(extensions),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )


def _installed(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    rows = conn.execute(
        "SELECT extension_name, loaded, install_mode, installed_from FROM duckdb_extensions() "
        "WHERE installed"
    ).fetchall()
    return {name: rest for name, *rest in rows}


def test_ducklake_holds_a_table_after_loading_from_the_wheel(tmp_path: Path):
    conn = _connect(tmp_path / "extensions")
    load_extensions(conn, "ducklake")
    assert _installed(conn)["ducklake"] == [True, "CUSTOM_PATH", str(extension_file("ducklake"))]
    assert list((tmp_path / "extensions").rglob("ducklake.duckdb_extension"))

    conn.execute(
        f"ATTACH 'ducklake:{tmp_path}/meta.ducklake' AS lake "
        f"(DATA_PATH '{tmp_path}/data', DATA_INLINING_ROW_LIMIT 0)"
    )
    conn.execute("CREATE TABLE lake.amounts (card_id VARCHAR, amount DECIMAL(12, 2))")
    conn.execute("INSERT INTO lake.amounts VALUES ('a', 12.50), ('b', 3.25)")
    assert conn.execute("SELECT sum(amount) FROM lake.amounts").fetchone()[0] == 15.75
    assert list((tmp_path / "data").rglob("*.parquet"))
    # TIMESTAMPTZ values (the snapshots' times) need pytz under DuckDB 1.5.5
    snapshots = conn.execute("SELECT snapshot_time FROM ducklake_snapshots('lake')").fetchall()
    assert snapshots and all(s[0].tzinfo is not None for s in snapshots)


@pytest.mark.parametrize("name", ["postgres_scanner", "postgres"])
def test_postgres_scanner_loads_from_the_wheel(tmp_path: Path, name: str):
    conn = _connect(tmp_path / "extensions")
    load_extensions(conn, name)
    assert _installed(conn)["postgres_scanner"][:2] == [True, "CUSTOM_PATH"]
    assert conn.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'postgres_query'"
    ).fetchone()[0]


def test_an_installed_extension_is_loaded_without_being_written_again(tmp_path: Path):
    load_extensions(_connect(tmp_path / "extensions"), "ducklake", "postgres_scanner")
    (installed,) = (tmp_path / "extensions").rglob("ducklake.duckdb_extension")
    written = installed.stat().st_mtime_ns
    conn = _connect(tmp_path / "extensions")
    load_extensions(conn, "ducklake", "postgres_scanner")
    assert installed.stat().st_mtime_ns == written
    assert {n for n, (loaded, *_) in _installed(conn).items() if loaded} >= {
        "ducklake",
        "postgres_scanner",
    }


def test_a_missing_wheel_names_the_package_to_install(tmp_path: Path):
    conn = _connect(tmp_path / "extensions")
    with pytest.raises(ExtensionNotAvailableError, match=r"duckdb-extension-spatial==1\.5\.5"):
        load_extensions(conn, "spatial")
    assert not (tmp_path / "extensions").exists() or not any(
        (tmp_path / "extensions").rglob("*.duckdb_extension")
    )

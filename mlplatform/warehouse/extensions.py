"""DuckDB extensions from their Python wheels, never downloaded.

These machines reach package registries only, so DuckDB's own ``INSTALL ducklake`` (a download
from DuckDB's extension repository) cannot run. The extensions come as wheels instead
(``duckdb-extension-ducklake``, ``duckdb-extension-postgres-scanner``), each holding one file,
``<package>/extensions/v<DuckDB version>/<name>.duckdb_extension``, built for that DuckDB
version alone. :func:`load_extensions` installs that file into the connection's extension
directory (once) and loads it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import duckdb

from mlplatform.warehouse.connection import sql_literal


class ExtensionNotAvailableError(RuntimeError):
    """No wheel holds the extension for this DuckDB version."""


def extension_file(name: str) -> Path:
    """The ``.duckdb_extension`` file of extension ``name`` (e.g. ``ducklake``,
    ``postgres_scanner``) for the running DuckDB, from its wheel
    ``duckdb-extension-<name>``; raises :class:`ExtensionNotAvailableError` naming the
    package to install when it is missing or built for another DuckDB."""
    package = f"duckdb_extension_{name}"
    requirement = f"duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}"
    try:
        root = resources.files(package)
    except ModuleNotFoundError as error:
        raise ExtensionNotAvailableError(
            f"DuckDB extension {name!r} is not installed: install the Python package "
            f"{requirement} (it is not downloaded at run time)"
        ) from error
    path = Path(str(root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"))
    if not path.is_file():
        built_for = sorted(p.name for p in Path(str(root / "extensions")).glob("v*"))
        raise ExtensionNotAvailableError(
            f"DuckDB extension {name!r}: package {package} holds no build for DuckDB "
            f"v{duckdb.__version__} (it has {', '.join(built_for) or 'none'}): install "
            f"{requirement}"
        )
    return path


def load_extensions(conn: duckdb.DuckDBPyConnection, *names: str) -> None:
    """Load each extension ``names`` (its name or an alias: ``postgres`` is
    ``postgres_scanner``) into ``conn``, installing it first from its wheel into the
    connection's ``extension_directory`` when it is not installed there yet."""
    for alias in names:
        known = conn.execute(
            "SELECT extension_name, installed FROM duckdb_extensions() "
            "WHERE extension_name = $name OR list_contains(aliases, $name)",
            {"name": alias},
        ).fetchone()
        name, installed = known or (alias, False)  # an extension DuckDB does not list yet
        if not installed:
            conn.execute(f"INSTALL {sql_literal(str(extension_file(name)))}")
        conn.execute(f"LOAD {name}")

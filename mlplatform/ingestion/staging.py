"""Staging: landing files parsed by DuckDB's CSV reader into tables of text, then selected
in canonical columns.

A staged file is a table ``<staging>.stage_<id>`` of its columns as text, in file order (names
and street only as whether they hold a value); a batch's files stage side by side. Staging
tables hold clear card numbers: :func:`drop_staging` drops them whatever happens.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mlplatform.contract import CANONICAL_COLUMNS, Contract
from mlplatform.contract.expressions import quote_identifier
from mlplatform.ingestion.files import (
    CHUNK_BYTES,
    FileInspection,
    FileRejected,
    inspect_file,
    read_header,
)
from mlplatform.ingestion.line_numbers import (
    line_at,
    line_number_sql,
    physical_lines,
    prepare_line_numbers,
)
from mlplatform.ingestion.row_rules import HIDDEN_COLUMNS, NUMERIC_COLUMNS
from mlplatform.warehouse.connection import sql_literal

# Staged files live in an attached in-memory database, which every cursor of the connection's
# database sees (temporary tables are private to one cursor): files parse side by side.
STAGING = "mlplatform_staging"


@dataclass(frozen=True)
class StagedFile:
    """A landing file staged as ``<staging>.stage_<file_id>``, with what staging found."""

    file_id: int
    partition_date: date
    path: Path
    header: list[str]
    inspection: FileInspection
    rows: int
    rejects: pd.DataFrame
    good_lines: np.ndarray | None  # physical line of each staged row; None: by position
    reject_lines: list[int]  # physical line of each reject


def hidden_sources(contract: Contract) -> set[str]:
    """Source columns whose values are never kept or shown: names, street, dropped columns."""
    return {s for name in HIDDEN_COLUMNS for s in contract.sources(name)} | set(contract.drop)


def _stage_file(
    conn: duckdb.DuckDBPyConnection,
    file_id: int,
    path: Path,
    header: list[str],
    contract: Contract,
    max_line_bytes: int,
) -> tuple[int, pd.DataFrame]:
    """Parse a file into ``<staging>.stage_<id>`` (text, file order); its rows and rejects.

    Names and street are not staged as text, only as whether they hold a value (all that a
    quarantined row's masked line shows of them). A row DuckDB's reader cannot split keeps
    its raw text in the reader's rejects table until it is masked.
    """
    hidden = hidden_sources(contract)
    staged = ", ".join(
        f"c{i} IS NOT NULL AS c{i}" if name in hidden else f"c{i}" for i, name in enumerate(header)
    )
    conn.execute(f"DROP TABLE IF EXISTS rejects_{file_id}; DROP TABLE IF EXISTS scans_{file_id}")
    try:
        conn.execute(
            f"""
            CREATE OR REPLACE TABLE {STAGING}.stage_{file_id} AS
            SELECT {staged}
            FROM {csv_scan_sql(path, len(header), max_line_bytes, str(file_id))}
            """
        )
    except duckdb.InvalidInputException as error:  # e.g. mixed line endings
        raise FileRejected(path, _unparsable_reason(path, error)) from error
    rows = conn.execute(f"SELECT count(*) FROM {STAGING}.stage_{file_id}").fetchone()[0]
    rejects = conn.execute(
        f"""SELECT DISTINCT ON (line) line, line_byte_position,
                   error_type::VARCHAR AS error_type, csv_line, error_message
            FROM rejects_{file_id} ORDER BY line"""
    ).df()
    invalid = rejects[rejects["error_type"] == "INVALID ENCODING"]
    if not invalid.empty:
        line = line_at(path, int(invalid["line_byte_position"].iloc[0]) - 1)
        raise FileRejected(path, f"line {line}: not UTF-8 encoded (the contract is UTF-8)")
    return rows, rejects


def csv_scan_sql(path: Path, n_columns: int, max_line_bytes: int, suffix: str) -> str:
    """``read_csv`` of a landing file as the contract reads it: columns ``c0, c1 ...`` as text,
    rows it cannot split kept in the temp tables ``rejects_<suffix>`` / ``scans_<suffix>``."""
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n_columns)) + "}"
    return f"""read_csv({sql_literal(str(path))}, header = true, auto_detect = false,
                columns = {columns}, delim = ',', quote = '"', escape = '"', encoding = 'utf-8',
                max_line_size = {max_line_bytes}, store_rejects = true,
                rejects_table = 'rejects_{suffix}', rejects_scan = 'scans_{suffix}')"""


def _unparsable_reason(path: Path, error: Exception) -> str:
    """Why DuckDB's CSV reader gave up on a whole file, in a user's words where we can."""
    crlf = lf = cr = 0
    previous = b""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            crlf += (previous + chunk).count(b"\r\n")  # previous: the last byte before
            lf += chunk.count(b"\n")
            cr += chunk.count(b"\r")
            previous = chunk[-1:]
    lf, cr = lf - crlf, cr - crlf
    kinds = [f"{n} {name}" for n, name in ((crlf, "CRLF"), (lf, "LF"), (cr, "CR")) if n]
    if len(kinds) > 1:
        return f"mixed line endings ({', '.join(kinds)}): a file must use one kind"
    return f"not a parsable CSV: {str(error).strip().splitlines()[0]}"


def canonical_select(
    contract: Contract,
    header: list[str],
    ascii: bool,
    names: tuple[str, ...] = tuple(CANONICAL_COLUMNS),
) -> tuple[list[str], list[str]]:
    """Select items of canonical columns as text over a file's columns ``s.c<i>``, and the
    items naming the source columns expressions read (to select beside ``s.*`` first).

    A column read one to one is trimmed, empty as NULL; an expression's value is its text
    (NULL when it fails; a time's or a number's own type), with ``<name>_inputs``: whether
    any column it reads has a value.
    """
    position = {name: i for i, name in enumerate(header)}
    hidden = hidden_sources(contract)

    def text(source: str) -> str:
        value = f"s.c{position[source]}"
        if ascii:  # trim only what has a space to strip: 3x cheaper
            value = (
                f"CASE WHEN {value} ^@ ' ' OR suffix({value}, ' ') "
                f"THEN trim({value}) ELSE {value} END"
            )
        else:  # trim() also strips Unicode spaces (e.g. U+00A0) at either end
            value = f"trim({value})"
        return f"nullif({value}, '')"

    columns, inputs = [], []
    for canonical in names:
        source = contract.columns.get(canonical)
        expression = contract.expressions.get(canonical)
        if source is not None and source in position and source not in hidden:
            columns.append(f"{text(source)} AS {canonical}")
        elif expression is not None and canonical not in HIDDEN_COLUMNS:
            # a time or a number is typed from the value itself, not from its text
            typed = canonical == "event_time" or canonical in NUMERIC_COLUMNS
            value = f"TRY({expression.sql})" if typed else f"TRY(({expression.sql})::VARCHAR)"
            columns.append(f"{value} AS {canonical}")
            given = " OR ".join(f"{quote_identifier(s)} IS NOT NULL" for s in expression.sources)
            columns.append(f"{given or 'false'} AS {canonical}_inputs")
            inputs += expression.sources
        else:
            columns.append(f"NULL::VARCHAR AS {canonical}")
    # expressions read the source's columns by name, trimmed, '' as NULL
    named = [f"{text(source)} AS {quote_identifier(source)}" for source in dict.fromkeys(inputs)]
    return columns, named


def prepare_rows(conn: duckdb.DuckDBPyConnection, staged: StagedFile) -> None:
    """``stage_rows_<id>``: a staged file's rows with their index (``row_idx``), and the
    helper table that gives each its physical line (:func:`prepare_line_numbers`)."""
    fid = staged.file_id
    conn.execute(
        f"CREATE OR REPLACE TEMP VIEW stage_rows_{fid} AS "
        f"SELECT rowid AS row_idx, * FROM {STAGING}.stage_{fid}"
    )
    prepare_line_numbers(conn, fid, staged.rows, staged.good_lines, staged.rejects)


def batch_select(staged: StagedFile, contract: Contract) -> str:
    """SELECT of a staged file's rows in canonical columns, with their physical line numbers."""
    columns, named = canonical_select(contract, staged.header, staged.inspection.ascii)
    rows = f"stage_rows_{staged.file_id}"
    if named:
        rows = f"(SELECT s.*, {', '.join(named)} FROM {rows} AS s)"
    fid = staged.file_id
    line, join = line_number_sql(fid, staged.good_lines, staged.rejects)
    return f"""
        SELECT {fid} AS file_id, DATE '{staged.partition_date.isoformat()}' AS partition_date,
               {sql_literal(staged.path.name)} AS file, s.row_idx, {line} AS line,
               {", ".join(columns)}
        FROM {rows} AS s
        {join}
    """


def _stage_partition(
    conn: duckdb.DuckDBPyConnection,
    pool: ThreadPoolExecutor,
    first_id: int,
    partition_date: date,
    files: list[Path],
    contract: Contract,
    max_line_bytes: int,
) -> list[StagedFile]:
    """Stage a partition's files as ``stage_<id>`` tables (ids from ``first_id``).

    Raises FileRejected when one is not a CSV of the contract, having dropped what it staged.
    """
    staged: list[StagedFile] = []
    try:
        for file_id, path in enumerate(files, start=first_id):
            header = read_header(path, contract, max_line_bytes)
            hashing = pool.submit(inspect_file, path)  # hashes while DuckDB parses
            rows, rejects = _stage_file(conn, file_id, path, header, contract, max_line_bytes)
            inspection = hashing.result()
            if inspection.nul_offset is not None:
                raise FileRejected(
                    path, f"binary content: NUL byte at offset {inspection.nul_offset}"
                )
            good_lines, reject_lines = physical_lines(path, inspection, rows, rejects)
            staged.append(
                StagedFile(
                    file_id,
                    partition_date,
                    path,
                    header,
                    inspection,
                    rows,
                    rejects,
                    good_lines,
                    reject_lines,
                )
            )
    except FileRejected:
        drop_staging(conn, range(first_id, first_id + len(files)))
        raise
    return staged


def stage_batch(
    conn: duckdb.DuckDBPyConnection,
    partitions: dict[date, list[Path]],
    contract: Contract,
    max_line_bytes: int,
) -> tuple[list[StagedFile], dict[date, FileRejected]]:
    """Stage a batch's files (ids in date, then file order) and the partitions rejected.

    Partitions stage side by side, each from its own cursor: DuckDB parses a small file (one
    read buffer, e.g. a 32k-row day) on one thread, so a month's files would take one core.
    """
    first_ids = np.cumsum([0, *(len(files) for files in partitions.values())])[:-1]

    def stage(
        partition_date: date, first_id: int, files: list[Path]
    ) -> list[StagedFile] | FileRejected:
        with conn.cursor() as cursor, ThreadPoolExecutor(max_workers=1) as hasher:
            try:
                return _stage_partition(
                    cursor, hasher, int(first_id), partition_date, files, contract, max_line_bytes
                )
            except FileRejected as rejection:
                return rejection

    workers = min(len(partitions), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        staging = pool.map(stage, partitions, first_ids, partitions.values())
        outcomes = dict(zip(partitions, staging, strict=True))
    staged = [s for outcome in outcomes.values() if isinstance(outcome, list) for s in outcome]
    rejected = {d: r for d, r in outcomes.items() if isinstance(r, FileRejected)}
    return staged, rejected


def drop_staging(conn: duckdb.DuckDBPyConnection, file_ids: range) -> None:
    """Drop the staging tables of ``file_ids`` and the batch's working tables."""
    for fid in file_ids:
        conn.execute(
            f"DROP VIEW IF EXISTS stage_rows_{fid}; DROP TABLE IF EXISTS {STAGING}.stage_{fid};"
            f"DROP TABLE IF EXISTS reject_positions_{fid}; DROP TABLE IF EXISTS line_map_{fid};"
            f"DROP TABLE IF EXISTS rejects_{fid}; DROP TABLE IF EXISTS scans_{fid}"
        )
    conn.execute(
        "DROP VIEW IF EXISTS batch; DROP TABLE IF EXISTS checked; DROP TABLE IF EXISTS pseudonyms;"
        "DROP TABLE IF EXISTS repeated_ids"
    )

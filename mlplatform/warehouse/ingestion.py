"""Validated, idempotent ingestion of daily landing files into ``raw.transactions``.

A file that is not a CSV of the contract is rejected whole (:class:`FileRejected`); rows that
break a rule go to ``raw.quarantine`` with file, line, rule and their PII masked; the rest load.
Loading a partition replaces exactly that partition, in one transaction; a range of partitions
is loaded in batches, each in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mlplatform.contract import CANONICAL_COLUMNS, Contract
from mlplatform.contract.expressions import quote_identifier
from mlplatform.warehouse.connection import insertion_order, read_sql, sql_literal, transaction
from mlplatform.warehouse.pii import MASK, card_pseudonym, hmac_pads
from mlplatform.warehouse.row_rules import (
    HIDDEN_COLUMNS,
    NUMERIC_COLUMNS,
    generated_ids_sql,
    pseudonyms_sql,
    typed_columns,
    violation,
)

DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_OTHER_DELIMITERS = (";", "\t", "|")
# Anything that may be a card number: 12-19 digits, single spaces or dashes between them.
_CARD_LIKE = re.compile(r"\d(?:[ -]?\d){11,18}")
_BIRTH_YEAR = re.compile(r"(\d{4})-")
_CHUNK_BYTES = 8 << 20
# Staged files live in an attached in-memory database, which every cursor of the connection's
# database sees (temporary tables are private to one cursor): files parse side by side.
_STAGING = "mlplatform_staging"
# A range is loaded in batches of consecutive partitions of about this many bytes of landing
# files, each batch in one transaction: the fixed cost of a load is paid once per batch, and
# the staged text of a batch (in memory, spilled beyond DuckDB's memory limit) stays bounded.
_BATCH_BYTES = 256 << 20

# DuckDB's reject types -> quarantine rules for rows the CSV reader cannot split into fields.
_STRUCTURAL_RULES = {
    "MISSING COLUMNS": "malformed_row",
    "TOO MANY COLUMNS": "malformed_row",
    "UNQUOTED VALUE": "malformed_row",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
}


class FileRejected(Exception):
    """A landing file that is not a CSV of the contract; nothing of its partition loads."""

    def __init__(self, file: Path, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True)
class FileOutcome:
    """What became of one landing file (one row of ``raw.ingestion_log``)."""

    file: str
    sha256: str | None
    size_bytes: int | None
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    status: str
    error: str | None = None


@dataclass(frozen=True)
class IngestionResult:
    """A loaded partition: per-file outcomes, quarantine counts by rule and a preview."""

    partition_date: date
    files: tuple[FileOutcome, ...]
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)


@dataclass(frozen=True)
class FileInspection:
    sha256: str
    size_bytes: int
    newlines: int
    ends_with_newline: bool
    nul_offset: int | None
    ascii: bool  # no byte above 127: the only space trim() can strip is ' '


@dataclass(frozen=True)
class _StagedFile:
    file_id: int
    partition_date: date
    path: Path
    header: list[str]
    inspection: FileInspection
    rows: int
    rejects: pd.DataFrame
    good_lines: np.ndarray | None  # physical line of each staged row; None: by position
    reject_lines: list[int]  # physical line of each reject


def partition_date_of(path: Path) -> date | None:
    """The first valid ``YYYY-MM-DD`` in a file name, or None when it has none."""
    for match in DATE_IN_NAME.finditer(path.name):
        try:
            return date(*(int(part) for part in match.groups()))
        except ValueError:
            continue
    return None


def landing_files(landing_dir: Path, partition_date: date) -> list[Path]:
    """The partition's landing files: ``*.csv`` whose name's first date is the partition's."""
    if not landing_dir.is_dir():
        return []
    return sorted(
        path
        for path in landing_dir.glob("*.csv")
        if path.is_file() and partition_date_of(path) == partition_date
    )


def inspect_file(path: Path) -> FileInspection:
    """SHA-256, size, newline count, first NUL byte and ASCII-ness of a file, in one pass."""
    digest = hashlib.sha256()
    size = newlines = 0
    nul_offset = None
    ascii = True
    last = b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            if nul_offset is None and (at := chunk.find(b"\x00")) >= 0:
                nul_offset = size + at
            newlines += chunk.count(b"\n")
            ascii = ascii and chunk.isascii()
            size += len(chunk)
            last = chunk[-1:]
    return FileInspection(digest.hexdigest(), size, newlines, last == b"\n", nul_offset, ascii)


def read_header(path: Path, contract: Contract, max_line_bytes: int) -> list[str]:
    """The header's column names; raises FileRejected when it is not the contract's."""
    with path.open("rb") as handle:
        head = handle.read(max_line_bytes)
    if not head:
        raise FileRejected(path, "empty file (0 bytes): expected a header row")
    if (nul := head.find(b"\x00")) >= 0:
        raise FileRejected(path, f"binary content: NUL byte at offset {nul}")
    first_line, newline, _ = head.partition(b"\n")
    if not newline and len(head) >= max_line_bytes and path.stat().st_size > max_line_bytes:
        raise FileRejected(path, f"line 1 (the header) is longer than {max_line_bytes} bytes")
    first_line = first_line.rstrip(b"\r")
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileRejected(
            path,
            f"line 1 is not UTF-8 (byte 0x{first_line[error.start]:02x} at column "
            f"{error.start + 1})",
        ) from error
    if not text.strip():
        raise FileRejected(path, "line 1: no header row")
    header = [name.strip() for name in next(csv.reader([text]))]
    if len(header) == 1:
        used = [d for d in _OTHER_DELIMITERS if d in text]
        if used:
            raise FileRejected(
                path, f"line 1: delimiter is {used[0]!r}, the contract's delimiter is ','"
            )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise FileRejected(path, f"line 1: column(s) named twice: {repeated}")
    missing = contract.header_errors(header)
    if missing:
        raise FileRejected(path, f"line 1: {'; '.join(missing)}")
    return header


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
    hidden = _hidden_sources(contract)
    staged = ", ".join(
        f"c{i} IS NOT NULL AS c{i}" if name in hidden else f"c{i}" for i, name in enumerate(header)
    )
    conn.execute(f"DROP TABLE IF EXISTS rejects_{file_id}; DROP TABLE IF EXISTS scans_{file_id}")
    try:
        conn.execute(
            f"""
            CREATE OR REPLACE TABLE {_STAGING}.stage_{file_id} AS
            SELECT {staged}
            FROM {csv_scan_sql(path, len(header), max_line_bytes, str(file_id))}
            """
        )
    except duckdb.InvalidInputException as error:  # e.g. mixed line endings
        raise FileRejected(path, _unparsable_reason(path, error)) from error
    rows = conn.execute(f"SELECT count(*) FROM {_STAGING}.stage_{file_id}").fetchone()[0]
    rejects = conn.execute(
        f"""SELECT DISTINCT ON (line) line, line_byte_position,
                   error_type::VARCHAR AS error_type, csv_line, error_message
            FROM rejects_{file_id} ORDER BY line"""
    ).df()
    invalid = rejects[rejects["error_type"] == "INVALID ENCODING"]
    if not invalid.empty:
        line = _line_at(path, int(invalid["line_byte_position"].iloc[0]) - 1)
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
        while chunk := handle.read(_CHUNK_BYTES):
            crlf += (previous + chunk).count(b"\r\n")  # previous: the last byte before
            lf += chunk.count(b"\n")
            cr += chunk.count(b"\r")
            previous = chunk[-1:]
    lf, cr = lf - crlf, cr - crlf
    kinds = [f"{n} {name}" for n, name in ((crlf, "CRLF"), (lf, "LF"), (cr, "CR")) if n]
    if len(kinds) > 1:
        return f"mixed line endings ({', '.join(kinds)}): a file must use one kind"
    return f"not a parsable CSV: {str(error).strip().splitlines()[0]}"


def _line_at(path: Path, offset: int) -> int:
    """Physical line (1-based) of the first non-newline byte at or after a byte offset."""
    newlines = 0
    position = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            if position + len(chunk) <= offset:
                newlines += chunk.count(b"\n")
                position += len(chunk)
                continue
            at = max(offset - position, 0)
            newlines += chunk.count(b"\n", 0, at)
            rest = chunk[at:]
            skipped = len(rest) - len(rest.lstrip(b"\r\n"))
            return 1 + newlines + rest.count(b"\n", 0, skipped)
    return 1 + newlines


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
    hidden = _hidden_sources(contract)

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


def _batch_select(staged: _StagedFile, contract: Contract) -> str:
    """SELECT of a staged file's rows in canonical columns, with their physical line numbers."""
    columns, named = canonical_select(contract, staged.header, staged.inspection.ascii)
    rows = f"stage_rows_{staged.file_id}"
    if named:
        rows = f"(SELECT s.*, {', '.join(named)} FROM {rows} AS s)"
    fid = staged.file_id
    if staged.good_lines is not None:
        line, join = "m.line", f"JOIN line_map_{fid} AS m ON m.row_idx = s.row_idx"
    elif not staged.rejects.empty:
        line = "s.row_idx + 2 + coalesce(r.n, 0)"
        join = f"ASOF LEFT JOIN reject_positions_{fid} AS r ON s.row_idx >= r.good_before"
    else:
        line, join = "s.row_idx + 2", ""
    return f"""
        SELECT {fid} AS file_id, DATE '{staged.partition_date.isoformat()}' AS partition_date,
               {sql_literal(staged.path.name)} AS file, s.row_idx, {line} AS line,
               {", ".join(columns)}
        FROM {rows} AS s
        {join}
    """


def _lines_shifted(inspection: FileInspection, rows: int, rejects: pd.DataFrame) -> bool:
    """Whether the file has more line breaks than records (blank lines, quoted newlines)."""
    records = 1 + rows + len(rejects)
    expected = records if inspection.ends_with_newline else records - 1
    return inspection.newlines > expected


def _inside_quotes_after(line: bytes, in_quotes: bool) -> bool:
    """Whether a record is still inside a quoted field at the end of this physical line.

    As DuckDB reads it: a quote opens a field only at the field's start, ``""`` inside
    quotes is an escaped quote. (Bytes: UTF-8 never has ``"`` or ``,`` inside a character.)
    """
    i = 0
    if not in_quotes and line[:1] == b'"':
        in_quotes, i = True, 1
    while True:
        if in_quotes:
            j = line.find(b'"', i)
            if j < 0:
                return True
            if line[j + 1 : j + 2] == b'"':
                i = j + 2
                continue
            in_quotes, i = False, j + 1
        k = line.find(b",", i)
        if k < 0:
            return False
        i = k + 1
        if line[i : i + 1] == b'"':
            in_quotes, i = True, i + 1


def record_starts(path: Path) -> tuple[array, array]:
    """Byte offset and physical line of every CSV record of a file, the header included.

    A record starts on a line that does not continue a quoted field; DuckDB skips empty
    lines (they are no record), so they are skipped here too.
    """
    offsets, lines = array("q"), array("q")
    in_quotes = False
    offset = 0
    with path.open("rb") as handle:
        for number, text in enumerate(handle, start=1):
            if not in_quotes and text.strip(b"\r\n"):
                offsets.append(offset)
                lines.append(number)
            if in_quotes or b'"' in text:
                in_quotes = _inside_quotes_after(text, in_quotes)
            offset += len(text)
    return offsets, lines


def physical_lines(
    path: Path, inspection: FileInspection, rows: int, rejects: pd.DataFrame
) -> tuple[np.ndarray | None, list[int]]:
    """Physical lines (header = 1) of a staged file's good rows and of its rejects.

    When every record is one line, DuckDB's reject lines are physical lines and a good row's
    line follows from its position (``None`` here). Blank lines and quoted newlines shift
    them: then one scan of the file finds where each record starts, and DuckDB's byte
    position of each reject (it may include the newlines before it) names its record.
    """
    duckdb_lines = [int(line) for line in rejects["line"]]
    if not _lines_shifted(inspection, rows, rejects):
        return None, duckdb_lines
    offsets, lines = record_starts(path)
    rejected = [bisect_left(offsets, int(p) - 1) for p in rejects["line_byte_position"]]
    taken = set(rejected)
    good = [lines[i] for i in range(1, len(lines)) if i not in taken]
    if (
        len(good) != rows
        or len(taken) != len(rejected)
        or not all(0 < i < len(lines) for i in taken)
    ):  # the scan disagrees with DuckDB's reader: keep the record-order numbering
        return None, duckdb_lines
    return np.asarray(good, dtype=np.int64), [lines[i] for i in rejected]


def _prepare_line_numbers(conn: duckdb.DuckDBPyConnection, staged: _StagedFile) -> None:
    """``stage_rows_<id>`` and the helper table that give each staged row its physical line.

    With a line map (see :func:`_physical_lines`) it is looked up; otherwise a good row's
    line is the next one no reject took (reject lines are physical lines then).
    """
    fid = staged.file_id
    conn.execute(
        f"CREATE OR REPLACE TEMP VIEW stage_rows_{fid} AS "
        f"SELECT rowid AS row_idx, * FROM {_STAGING}.stage_{fid}"
    )
    if staged.good_lines is not None:
        conn.register(
            f"lines_df_{fid}",
            pa.table(
                {"row_idx": np.arange(staged.rows, dtype=np.int64), "line": staged.good_lines}
            ),
        )
        conn.execute(f"CREATE OR REPLACE TEMP TABLE line_map_{fid} AS SELECT * FROM lines_df_{fid}")
        conn.unregister(f"lines_df_{fid}")
    elif not staged.rejects.empty:
        conn.register(f"rejects_df_{fid}", staged.rejects[["line"]])
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE reject_positions_{fid} AS
                SELECT good_before, max(n) AS n FROM (
                    SELECT line - 1 - row_number() OVER (ORDER BY line) AS good_before,
                           row_number() OVER (ORDER BY line) AS n
                    FROM rejects_df_{fid})
                GROUP BY good_before ORDER BY good_before"""
        )
        conn.unregister(f"rejects_df_{fid}")


def _hidden_sources(contract: Contract) -> set[str]:
    """Source columns whose values are never kept or shown: names, street, dropped columns."""
    return {s for name in HIDDEN_COLUMNS for s in contract.sources(name)} | set(contract.drop)


def _masked_line(
    values: list[str | None], header: list[str], contract: Contract, key: bytes
) -> str:
    """A landing row rebuilt as one CSV line, with PII masked and dropped columns blanked.

    A malformed row may have more or fewer fields than the header: its value at position i
    may then belong to any column from i - extra to i (extra fields) or from i to i + missing
    (missing fields), and is masked when any of them is personal data, so that a name or a
    street shifted by an unquoted comma never shows. Digit runs that look like a card
    number (12-19 digits, spaces or dashes allowed between them) are masked everywhere.
    """
    card = contract.columns.get("card_number")
    birth = contract.columns.get("birth_date")
    # the source columns a card number or a birth date is computed from: masked whole
    hidden = _hidden_sources(contract) | {
        source
        for name in ("card_number", "birth_date")
        if name in contract.expressions
        for source in contract.sources(name)
    }
    extra = len(values) - len(header)
    out: list[str] = []
    for i, value in enumerate(values):
        low, high = i - max(extra, 0), i - min(extra, 0)
        names = set(header[max(low, 0) : high + 1])
        if value is None or value == "":
            out.append("")
        elif extra == 0 and card in names:
            out.append(f"card:{card_pseudonym(value, key)}")
        elif names & (hidden | {card}):
            out.append(MASK)
        elif birth in names:
            year = _BIRTH_YEAR.match(value) if extra == 0 else None
            out.append(year.group(1) + "-**-**" if year else MASK)
        else:
            out.append(_CARD_LIKE.sub(MASK, value))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(out)
    return buffer.getvalue()


def _split_raw(line: str) -> list[str | None]:
    try:
        rows = list(csv.reader(io.StringIO(line.rstrip("\r\n"))))
    except csv.Error:  # e.g. a lone carriage return: split on the delimiter alone
        return line.rstrip("\r\n").split(",")
    return [v for row in rows for v in row]


def _quarantine_frame(
    conn: duckdb.DuckDBPyConnection,
    staged: list[_StagedFile],
    contract: Contract,
    key: bytes,
    now: datetime,
) -> pd.DataFrame:
    """Quarantined rows of the batch: rule breakers and rows the CSV reader could not split.

    Besides ``raw.quarantine``'s columns, ``file_id`` says which staged file each came from.
    """
    records = []
    by_id = {s.file_id: s for s in staged}
    bad = conn.execute(
        "SELECT file_id, row_idx, line, violation.rule, violation.column, violation.detail "
        "FROM checked WHERE violation IS NOT NULL ORDER BY file_id, row_idx"
    ).fetchall()
    hidden = _hidden_sources(contract)
    for file_id in {row[0] for row in bad}:
        s = by_id[file_id]
        wanted = [row for row in bad if row[0] == file_id]
        cols = ", ".join(  # a staged name or street is only whether it had a value
            f"CASE WHEN c{i} THEN '{MASK}' END" if name in hidden else f"c{i}"
            for i, name in enumerate(s.header)
        )
        conn.register("wanted_rows", pa.table({"row_idx": [row[1] for row in wanted]}))
        values = dict(
            (row[0], list(row[1:]))
            for row in conn.execute(
                f"SELECT s.rowid, {cols} FROM {_STAGING}.stage_{file_id} s "
                "SEMI JOIN wanted_rows w ON s.rowid = w.row_idx"
            ).fetchall()
        )
        conn.unregister("wanted_rows")
        for _, row_idx, line, rule, column, detail in wanted:
            records.append(
                (
                    file_id,
                    s.partition_date,
                    s.path.name,
                    line,
                    rule,
                    column,
                    _safe_detail(column, detail),
                    _masked_line(values[row_idx], s.header, contract, key),
                )
            )
    for s in staged:
        for reject, line in zip(s.rejects.itertuples(), s.reject_lines, strict=True):
            rule = _STRUCTURAL_RULES.get(reject.error_type, "malformed_row")
            records.append(
                (
                    s.file_id,
                    s.partition_date,
                    s.path.name,
                    line,
                    rule,
                    None,
                    _CARD_LIKE.sub(MASK, str(reject.error_message)),
                    _masked_line(_split_raw(str(reject.csv_line)), s.header, contract, key),
                )
            )
    frame = pd.DataFrame(
        records,
        columns=[
            "file_id",
            "partition_date",
            "file",
            "line",
            "reason",
            "column_name",
            "detail",
            "raw_line",
        ],
    )
    frame["quarantined_at"] = now
    return frame


def _safe_detail(column: str | None, detail: str | None) -> str | None:
    """Rule details quote values; never those of PII columns."""
    if column in ("card_number", "first_name", "last_name", "street", "birth_date"):
        return "value withheld (personal data)"
    return None if detail is None else _CARD_LIKE.sub(MASK, detail)


def ingest_partition(
    conn: duckdb.DuckDBPyConnection,
    *,
    files: list[Path],
    partition_date: date,
    contract: Contract,
    pii_key: bytes,
    max_amount: float,
    max_line_bytes: int,
    run_id: str | None = None,
) -> IngestionResult:
    """Load a partition's landing files into ``raw.transactions``, replacing the partition.

    Raises FileRejected (after logging it in ``raw.ingestion_log``) when a file is not a CSV of
    the contract; the partition's previous rows then stay as they were. Whatever happens, the
    connection keeps no staging table (they hold clear card numbers and names).
    """
    loaded, rejected = ingest_partitions(
        conn,
        {partition_date: files},
        contract=contract,
        pii_key=pii_key,
        max_amount=max_amount,
        max_line_bytes=max_line_bytes,
        run_id=run_id,
    )
    if rejected:
        raise rejected[partition_date]
    return loaded[partition_date]


def ingest_partitions(
    conn: duckdb.DuckDBPyConnection,
    partitions: Mapping[date, Sequence[Path]],
    *,
    contract: Contract,
    pii_key: bytes,
    max_amount: float,
    max_line_bytes: int,
    run_id: str | None = None,
) -> tuple[dict[date, IngestionResult], dict[date, FileRejected]]:
    """Load a range of partitions, each replaced whole, with the outcome of loading them in
    date order one after another (an id loaded for an earlier day is refused on a later one).

    Consecutive partitions are loaded in batches of about ``_BATCH_BYTES`` of files, each in
    one transaction. Returns the loaded partitions and, for each partition with a file that
    is not a CSV of the contract, the rejection (logged in ``raw.ingestion_log``; that
    partition stays as it was, the others load).
    """
    days = sorted(partitions)
    for day in days:
        if not partitions[day]:
            raise FileNotFoundError(f"no landing file for partition {day}")
    loaded: dict[date, IngestionResult] = {}
    rejected: dict[date, FileRejected] = {}
    sizes = {day: sum(path.stat().st_size for path in partitions[day]) for day in days}
    for batch in consecutive_batches(sizes, _BATCH_BYTES):
        results, rejections = _ingest_batch(
            conn,
            {day: list(partitions[day]) for day in batch},
            contract=contract,
            pii_key=pii_key,
            max_amount=max_amount,
            max_line_bytes=max_line_bytes,
            run_id=run_id,
        )
        loaded.update(results)
        rejected.update(rejections)
    return loaded, rejected


def consecutive_batches(sizes: Mapping[date, int], limit: int) -> Iterator[list[date]]:
    """The partitions (date order) in consecutive batches, each closed once its sizes sum to
    ``limit`` or more: a batch holds at least one partition."""
    batch: list[date] = []
    total = 0
    for day in sorted(sizes):
        batch.append(day)
        total += sizes[day]
        if total >= limit:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def _stage_partition(
    conn: duckdb.DuckDBPyConnection,
    pool: ThreadPoolExecutor,
    first_id: int,
    partition_date: date,
    files: list[Path],
    contract: Contract,
    max_line_bytes: int,
) -> list[_StagedFile]:
    """Stage a partition's files as ``stage_<id>`` tables (ids from ``first_id``).

    Raises FileRejected when one is not a CSV of the contract, having dropped what it staged.
    """
    staged: list[_StagedFile] = []
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
                _StagedFile(
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
        _drop_staging(conn, range(first_id, first_id + len(files)))
        raise
    return staged


def _stage_batch(
    conn: duckdb.DuckDBPyConnection,
    partitions: dict[date, list[Path]],
    contract: Contract,
    max_line_bytes: int,
) -> tuple[list[_StagedFile], dict[date, FileRejected]]:
    """Stage a batch's files (ids in date, then file order) and the partitions rejected.

    Partitions stage side by side, each from its own cursor: DuckDB parses a small file (one
    read buffer, e.g. a 32k-row day) on one thread, so a month's files would take one core.
    """
    first_ids = np.cumsum([0, *(len(files) for files in partitions.values())])[:-1]

    def stage(
        partition_date: date, first_id: int, files: list[Path]
    ) -> list[_StagedFile] | FileRejected:
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


def _ingest_batch(
    conn: duckdb.DuckDBPyConnection,
    partitions: dict[date, list[Path]],
    *,
    contract: Contract,
    pii_key: bytes,
    max_amount: float,
    max_line_bytes: int,
    run_id: str | None,
) -> tuple[dict[date, IngestionResult], dict[date, FileRejected]]:
    """Load consecutive partitions in one transaction (see :func:`ingest_partitions`)."""
    started = datetime.now()
    n_files = sum(len(files) for files in partitions.values())
    conn.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {_STAGING}")
    try:
        staged, rejected = _stage_batch(conn, partitions, contract, max_line_bytes)
        for partition_date, rejection in rejected.items():
            _log_rejection(conn, rejection, partition_date, started, run_id)
        if not staged:
            return {}, rejected
        days = sorted({s.partition_date for s in staged})
        for s in staged:
            _prepare_line_numbers(conn, s)
        conn.execute(
            "CREATE OR REPLACE TEMP VIEW batch AS "
            + " UNION ALL ".join(_batch_select(s, contract) for s in staged)
        )
        # `checked` is a union of one small table per file: in order, DuckDB would type it on
        # one thread. Nothing reads it by position (staging, whose rowids are line order, is
        # done).
        with insertion_order(conn, preserve=False):
            conn.execute(
                read_sql("check_rows").format(
                    typed_columns=typed_columns(contract),
                    violation=violation(contract, max_amount),
                )
            )
        conn.execute(pseudonyms_sql(), hmac_pads(pii_key))
        if contract.generated_id:
            conn.execute(generated_ids_sql())
        conn.execute(read_sql("flag_duplicate_ids"), {"days": days})
        now = datetime.now()
        quarantine = _quarantine_frame(conn, staged, contract, pii_key, now)
        loaded_counts = dict(
            conn.execute(
                "SELECT file_id, count(*) FILTER (WHERE violation IS NULL) FROM checked GROUP BY 1"
            ).fetchall()
        )
        quarantined_counts = Counter(quarantine["file_id"])
        outcomes: dict[date, list[FileOutcome]] = {day: [] for day in days}
        for s in staged:
            outcomes[s.partition_date].append(
                FileOutcome(
                    file=s.path.name,
                    sha256=s.inspection.sha256,
                    size_bytes=s.inspection.size_bytes,
                    rows_read=s.rows + len(s.rejects),
                    rows_loaded=int(loaded_counts.get(s.file_id, 0)),
                    rows_quarantined=quarantined_counts[s.file_id],
                    status="loaded",
                )
            )
        finished = datetime.now()
        log = pd.concat([_log_frame(outcomes[day], day, started, finished, run_id) for day in days])
        conn.register("quarantine_frame", quarantine.drop(columns="file_id"))
        conn.register("log_frame", log)
        params = {"days": days}
        try:
            with transaction(conn):
                conn.execute(
                    "DELETE FROM raw.transactions WHERE list_contains($days, partition_date)",
                    params,
                )
                conn.execute(
                    "DELETE FROM raw.quarantine WHERE list_contains($days, partition_date)", params
                )
                conn.execute(read_sql("insert_raw_transactions"), {"ingested_at": now})
                conn.execute("INSERT INTO raw.quarantine SELECT * FROM quarantine_frame")
                conn.execute("INSERT INTO raw.ingestion_log SELECT * FROM log_frame")
        finally:
            conn.unregister("quarantine_frame")
            conn.unregister("log_frame")
        return {
            day: IngestionResult(
                partition_date=day,
                files=tuple(outcomes[day]),
                quarantine_reasons=dict(
                    Counter(quarantine.loc[quarantine["partition_date"] == day, "reason"])
                ),
            )
            for day in days
        }, rejected
    finally:
        _drop_staging(conn, range(n_files))
        conn.execute(f"DETACH DATABASE IF EXISTS {_STAGING}")


def _drop_staging(conn: duckdb.DuckDBPyConnection, file_ids: range) -> None:
    for fid in file_ids:
        conn.execute(
            f"DROP VIEW IF EXISTS stage_rows_{fid}; DROP TABLE IF EXISTS {_STAGING}.stage_{fid};"
            f"DROP TABLE IF EXISTS reject_positions_{fid}; DROP TABLE IF EXISTS line_map_{fid};"
            f"DROP TABLE IF EXISTS rejects_{fid}; DROP TABLE IF EXISTS scans_{fid}"
        )
    conn.execute(
        "DROP VIEW IF EXISTS batch; DROP TABLE IF EXISTS checked; DROP TABLE IF EXISTS pseudonyms;"
        "DROP TABLE IF EXISTS repeated_ids"
    )


def _log_frame(
    outcomes: list[FileOutcome],
    partition_date: date,
    started: datetime,
    finished: datetime,
    run_id: str | None,
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (
                partition_date,
                o.file,
                o.sha256,
                o.size_bytes,
                o.rows_read,
                o.rows_loaded,
                o.rows_quarantined,
                o.status,
                o.error,
                run_id,
                started,
                finished,
            )
            for o in outcomes
        ],
        columns=[
            "partition_date",
            "file",
            "sha256",
            "size_bytes",
            "rows_read",
            "rows_loaded",
            "rows_quarantined",
            "status",
            "error",
            "run_id",
            "started_at",
            "finished_at",
        ],
    ).astype({"sha256": "object", "size_bytes": "Int64", "error": "object", "run_id": "object"})


def _log_rejection(
    conn: duckdb.DuckDBPyConnection,
    rejected: FileRejected,
    partition_date: date,
    started: datetime,
    run_id: str | None,
) -> None:
    inspection = inspect_file(rejected.file) if rejected.file.exists() else None
    outcome = FileOutcome(
        file=rejected.file.name,
        sha256=inspection.sha256 if inspection else None,
        size_bytes=inspection.size_bytes if inspection else None,
        rows_read=0,
        rows_loaded=0,
        rows_quarantined=0,
        status="rejected",
        error=rejected.reason,
    )
    frame = _log_frame([outcome], partition_date, started, datetime.now(), run_id)
    conn.register("log_frame", frame)
    conn.execute("INSERT INTO raw.ingestion_log SELECT * FROM log_frame")
    conn.unregister("log_frame")

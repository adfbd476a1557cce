"""Validated, idempotent ingestion of daily landing files into ``raw.transactions``.

A file that is not a CSV of the contract is rejected whole (:class:`FileRejected`); rows that
break a rule go to ``raw.quarantine`` with file, line, rule and their PII masked; the rest load.
Loading a partition replaces exactly that partition, in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from mlplatform.contract import CANONICAL_COLUMNS, REQUIRED_COLUMNS, Contract
from mlplatform.warehouse.connection import read_sql
from mlplatform.warehouse.pii import MASK, card_pseudonym, mask_card_like_digits

DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_OTHER_DELIMITERS = (";", "\t", "|")
_CHUNK_BYTES = 8 << 20

# DuckDB's reject types -> quarantine rules for rows the CSV reader cannot split into fields.
_STRUCTURAL_RULES = {
    "MISSING COLUMNS": "malformed_row",
    "TOO MANY COLUMNS": "malformed_row",
    "UNQUOTED VALUE": "malformed_row",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
}
_NUMERIC_COLUMNS = {
    "amount": "DOUBLE",
    "city_pop": "BIGINT",
    "home_lat": "DOUBLE",
    "home_long": "DOUBLE",
    "merchant_lat": "DOUBLE",
    "merchant_long": "DOUBLE",
    "label": "DOUBLE",
}
_RANGES = {
    "home_lat": (-90, 90),
    "merchant_lat": (-90, 90),
    "home_long": (-180, 180),
    "merchant_long": (-180, 180),
    "city_pop": (0, None),
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
class _Inspection:
    sha256: str
    size_bytes: int
    newlines: int
    ends_with_newline: bool
    nul_offset: int | None


@dataclass(frozen=True)
class _StagedFile:
    file_id: int
    path: Path
    header: list[str]
    inspection: _Inspection
    rows: int
    rejects: pd.DataFrame


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


def inspect_file(path: Path) -> _Inspection:
    """SHA-256, size, newline count and first NUL byte of a file, in one streaming pass."""
    digest = hashlib.sha256()
    size = newlines = 0
    nul_offset = None
    last = b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            if nul_offset is None and (at := chunk.find(b"\x00")) >= 0:
                nul_offset = size + at
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    return _Inspection(digest.hexdigest(), size, newlines, last == b"\n", nul_offset)


def _read_header(path: Path, contract: Contract, max_line_bytes: int) -> list[str]:
    """The header's column names; raises FileRejected when it is not the contract's."""
    with path.open("rb") as handle:
        head = handle.read(max_line_bytes)
    if not head:
        raise FileRejected(path, "empty file (0 bytes): expected a header row")
    if (nul := head.find(b"\x00")) >= 0:
        raise FileRejected(path, f"binary content: NUL byte at offset {nul}")
    first_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileRejected(
            path, f"line 1 is not UTF-8 (byte 0x{first_line[error.start]:02x} at column "
            f"{error.start + 1})"
        ) from error
    if not text.strip():
        raise FileRejected(path, "line 1: no header row")
    header = [name.strip() for name in next(csv.reader([text]))]
    expected = contract.source
    required = [expected(name) for name in REQUIRED_COLUMNS]
    if len(header) == 1:
        used = [d for d in _OTHER_DELIMITERS if d in text]
        if used:
            raise FileRejected(
                path, f"line 1: delimiter is {used[0]!r}, the contract's delimiter is ','"
            )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise FileRejected(path, f"line 1: column(s) named twice: {repeated}")
    missing = [name for name in required if name not in header]
    if missing:
        raise FileRejected(path, f"line 1: required column(s) missing from the header: {missing}")
    return header


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _stage_file(
    conn: duckdb.DuckDBPyConnection,
    file_id: int,
    path: Path,
    header: list[str],
    contract: Contract,
    max_line_bytes: int,
) -> tuple[int, pd.DataFrame]:
    """Parse a file into ``stage_<id>`` (all text, file order) and return rows and rejects."""
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header))) + "}"
    conn.execute(f"DROP TABLE IF EXISTS rejects_{file_id}; DROP TABLE IF EXISTS scans_{file_id}")
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE stage_{file_id} AS
        SELECT * FROM read_csv({_sql_string(str(path))}, header = true, auto_detect = false,
            columns = {columns}, delim = ',', quote = '"', escape = '"', encoding = 'utf-8',
            max_line_size = {max_line_bytes}, store_rejects = true,
            rejects_table = 'rejects_{file_id}', rejects_scan = 'scans_{file_id}')
        """
    )
    rows = conn.execute(f"SELECT count(*) FROM stage_{file_id}").fetchone()[0]
    rejects = conn.execute(
        f"""SELECT DISTINCT ON (line) line, error_type::VARCHAR AS error_type, csv_line,
                   error_message
            FROM rejects_{file_id} ORDER BY line"""
    ).df()
    invalid = rejects[rejects["error_type"] == "INVALID ENCODING"]
    if not invalid.empty:
        raise FileRejected(
            path, f"line {int(invalid['line'].iloc[0])}: not UTF-8 encoded (the contract is UTF-8)"
        )
    return rows, rejects


def _batch_select(staged: _StagedFile, contract: Contract) -> str:
    """SELECT of a staged file's rows in canonical columns, with their physical line numbers."""
    position = {name: i for i, name in enumerate(staged.header)}
    columns = []
    for canonical in CANONICAL_COLUMNS:
        source = contract.columns.get(canonical)
        if source is not None and source in position and source not in contract.drop:
            columns.append(f"nullif(trim(s.c{position[source]}), '') AS {canonical}")
        else:
            columns.append(f"NULL::VARCHAR AS {canonical}")
    line = "s.row_idx + 2"
    if not staged.rejects.empty:
        line += " + coalesce(r.n, 0)"
    if _has_embedded_newlines(staged):
        line += " + s.newlines_before"
    return f"""
        SELECT {staged.file_id} AS file_id, {_sql_string(staged.path.name)} AS file,
               s.row_idx, {line} AS line, {", ".join(columns)}
        FROM stage_rows_{staged.file_id} AS s
        {"ASOF LEFT JOIN reject_positions_" + str(staged.file_id) + " AS r "
         "ON s.row_idx >= r.good_before" if not staged.rejects.empty else ""}
    """


def _has_embedded_newlines(staged: _StagedFile) -> bool:
    records = 1 + staged.rows + len(staged.rejects)
    expected = records if staged.inspection.ends_with_newline else records - 1
    return staged.inspection.newlines > expected


def _prepare_line_numbers(conn: duckdb.DuckDBPyConnection, staged: _StagedFile) -> None:
    """Helper tables mapping each staged row to its physical line in the file.

    DuckDB numbers rejected rows by record (header = 1); a good row's record number is the
    next one no reject took, and quoted newlines in earlier rows push its physical line down.
    """
    fid = staged.file_id
    if _has_embedded_newlines(staged):
        newlines = " + ".join(
            f"coalesce(length(c{i}) - length(replace(c{i}, chr(10), '')), 0)"
            for i in range(len(staged.header))
        )
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE stage_rows_{fid} AS
                SELECT *, coalesce(sum(nl) OVER (ORDER BY row_idx ROWS BETWEEN UNBOUNDED
                       PRECEDING AND 1 PRECEDING), 0) AS newlines_before
                FROM (SELECT rowid AS row_idx, *, {newlines} AS nl FROM stage_{fid})"""
        )
    else:
        conn.execute(
            f"CREATE OR REPLACE TEMP VIEW stage_rows_{fid} AS "
            f"SELECT rowid AS row_idx, * FROM stage_{fid}"
        )
    if not staged.rejects.empty:
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


def _typed_columns(contract: Contract) -> str:
    birth = "try_strptime(b.birth_date, '%Y-%m-%d')"
    parts = [
        f"try_strptime(b.event_time, {_sql_string(contract.event_time_format)}) AS event_time_ts",
        f"year({birth})::INTEGER AS birth_year_num",
    ]
    for name, sql_type in _NUMERIC_COLUMNS.items():
        parts.append(f"TRY_CAST(b.{name} AS {sql_type}) AS {name}_num")
    return ",\n        ".join(parts)


def _violation(contract: Contract, max_amount: float) -> str:
    """CASE naming the first rule a row breaks (rules in priority order), else NULL."""
    fmt = contract.event_time_format

    def rule(condition: str, name: str, column: str, detail: str) -> str:
        return (
            f"WHEN {condition} THEN {{'rule': '{name}', 'column': '{column}', "
            f"'detail': {detail}}}"
        )

    def quoted(column: str) -> str:
        return f"'value ''' || {column} || ''''"

    whens = [
        rule(f"{name} IS NULL", "missing_required_field", name, "'empty or absent'")
        for name in REQUIRED_COLUMNS
    ]
    whens += [
        rule(
            "event_time_ts IS NULL",
            "unparsable_timestamp",
            "event_time",
            f"{quoted('event_time')} || ' does not match ' || {_sql_string(fmt)}",
        ),
        rule(
            "amount_num IS NULL OR NOT isfinite(amount_num)",
            "unparsable_amount",
            "amount",
            f"{quoted('amount')} || ' is not a number'",
        ),
        rule("amount_num <= 0", "non_positive_amount", "amount", f"{quoted('amount')} || ' <= 0'"),
        rule(
            f"amount_num > {max_amount}",
            "amount_above_maximum",
            "amount",
            f"{quoted('amount')} || ' > {max_amount}'",
        ),
        rule(
            "CAST(event_time_ts AS DATE) <> $partition_date",
            "outside_partition_day",
            "event_time",
            f"{quoted('event_time')} || ' is not on ' || $partition_date",
        ),
    ]
    for name in _NUMERIC_COLUMNS:
        if name == "amount" or not contract.has(name):
            continue
        low, high = _RANGES.get(name, (None, None))
        bad = f"({name} IS NOT NULL AND {name}_num IS NULL)"
        if low is not None:
            bad += f" OR {name}_num < {low}"
        if high is not None:
            bad += f" OR {name}_num > {high}"
        if name == "label":
            bad += " OR label_num NOT IN (0, 1)"
        whens.append(rule(bad, "invalid_value", name, f"{quoted(name)} || ' is out of range'"))
    if contract.has("birth_date"):
        whens.append(
            rule(
                "birth_date IS NOT NULL AND birth_year_num IS NULL",
                "invalid_value",
                "birth_date",
                "'not a YYYY-MM-DD date'",
            )
        )
    return "CASE\n        " + "\n        ".join(whens) + "\n    END"


def _masked_line(values: list[str | None], header: list[str], contract: Contract, key: bytes) -> str:
    """A landing row rebuilt as one CSV line, with PII masked and dropped columns blanked."""
    pii = {contract.columns[name]: name for name in ("first_name", "last_name", "street")}
    card = contract.columns["card_number"]
    birth = contract.columns.get("birth_date")
    out: list[str] = []
    for name, value in zip(header, values, strict=False):
        if value is None or value == "":
            out.append("")
        elif name == card:
            out.append(f"card:{card_pseudonym(value, key)}")
        elif name in pii or name in contract.drop:
            out.append(MASK)
        elif name == birth:
            out.append(value[:4] + "-**-**")
        else:
            out.append(mask_card_like_digits(value))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(out)
    return buffer.getvalue()


def _split_raw(line: str) -> list[str | None]:
    rows = list(csv.reader(io.StringIO(line.rstrip("\r\n"))))
    return [v for row in rows for v in row]


def _quarantine_frame(
    conn: duckdb.DuckDBPyConnection,
    staged: list[_StagedFile],
    partition_date: date,
    contract: Contract,
    key: bytes,
    now: datetime,
) -> pd.DataFrame:
    """Quarantined rows of the batch: rule breakers and rows the CSV reader could not split."""
    records = []
    by_id = {s.file_id: s for s in staged}
    bad = conn.execute(
        "SELECT file_id, row_idx, line, violation.rule, violation.column, violation.detail "
        "FROM checked WHERE violation IS NOT NULL ORDER BY file_id, row_idx"
    ).fetchall()
    for file_id in {row[0] for row in bad}:
        s = by_id[file_id]
        wanted = [row for row in bad if row[0] == file_id]
        cols = ", ".join(f"c{i}" for i in range(len(s.header)))
        conn.register("wanted_rows", pa.table({"row_idx": [row[1] for row in wanted]}))
        values = dict(
            (row[0], list(row[1:]))
            for row in conn.execute(
                f"SELECT s.rowid, {cols} FROM stage_{file_id} s "
                "SEMI JOIN wanted_rows w ON s.rowid = w.row_idx"
            ).fetchall()
        )
        conn.unregister("wanted_rows")
        for _, row_idx, line, rule, column, detail in wanted:
            records.append(
                (s.path.name, line, rule, column, _safe_detail(column, detail),
                 _masked_line(values[row_idx], s.header, contract, key))
            )
    for s in staged:
        for number, reject in enumerate(s.rejects.itertuples(), start=1):
            rule = _STRUCTURAL_RULES.get(reject.error_type, "malformed_row")
            line = int(reject.line)
            if _has_embedded_newlines(s):  # quoted newlines in earlier good rows push it down
                good_before = line - 1 - number
                line += conn.execute(
                    f"SELECT coalesce(sum(nl), 0) FROM stage_rows_{s.file_id} WHERE row_idx < ?",
                    [good_before],
                ).fetchone()[0]
            records.append(
                (s.path.name, line, rule, None, str(reject.error_message),
                 _masked_line(_split_raw(str(reject.csv_line)), s.header, contract, key))
            )
    frame = pd.DataFrame(
        records, columns=["file", "line", "reason", "column_name", "detail", "raw_line"]
    )
    frame.insert(0, "partition_date", partition_date)
    frame["quarantined_at"] = now
    return frame


def _safe_detail(column: str | None, detail: str | None) -> str | None:
    """Rule details quote values; never those of PII columns."""
    if column in ("card_number", "first_name", "last_name", "street", "birth_date"):
        return "value withheld (personal data)"
    return detail


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
    the contract; the partition's previous rows then stay as they were.
    """
    if not files:
        raise FileNotFoundError(f"no landing file for partition {partition_date}")
    started = datetime.now()
    staged: list[_StagedFile] = []
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            for file_id, path in enumerate(files):
                header = _read_header(path, contract, max_line_bytes)
                hashing = pool.submit(inspect_file, path)  # hashes while DuckDB parses
                rows, rejects = _stage_file(conn, file_id, path, header, contract, max_line_bytes)
                inspection = hashing.result()
                if inspection.nul_offset is not None:
                    raise FileRejected(
                        path, f"binary content: NUL byte at offset {inspection.nul_offset}"
                    )
                staged.append(_StagedFile(file_id, path, header, inspection, rows, rejects))
    except FileRejected as rejected:
        _log_rejection(conn, rejected, partition_date, started, run_id)
        raise
    for s in staged:
        _prepare_line_numbers(conn, s)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE batch AS "
        + " UNION ALL ".join(_batch_select(s, contract) for s in staged)
    )
    params = {"partition_date": partition_date}
    conn.execute(
        read_sql("check_rows").format(
            typed_columns=_typed_columns(contract), violation=_violation(contract, max_amount)
        ),
        params,
    )
    cards = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT card_number FROM checked WHERE card_number IS NOT NULL"
        ).fetchall()
    ]
    conn.register(
        "pseudonym_frame",
        pa.table({"card_number": cards, "card_id": [card_pseudonym(c, pii_key) for c in cards]}),
    )
    conn.execute("CREATE OR REPLACE TEMP TABLE pseudonyms AS SELECT * FROM pseudonym_frame")
    conn.unregister("pseudonym_frame")
    now = datetime.now()
    quarantine = _quarantine_frame(conn, staged, partition_date, contract, pii_key, now)
    counts = dict(
        conn.execute(
            "SELECT file_id, count(*) FILTER (WHERE violation IS NULL) FROM checked GROUP BY 1"
        ).fetchall()
    )
    outcomes = []
    for s in staged:
        quarantined = int((quarantine["file"] == s.path.name).sum())
        loaded = int(counts.get(s.file_id, 0))
        outcomes.append(
            FileOutcome(
                file=s.path.name,
                sha256=s.inspection.sha256,
                size_bytes=s.inspection.size_bytes,
                rows_read=s.rows + len(s.rejects),
                rows_loaded=loaded,
                rows_quarantined=quarantined,
                status="loaded",
            )
        )
    log = _log_frame(outcomes, partition_date, started, datetime.now(), run_id)
    conn.register("quarantine_frame", quarantine)
    conn.register("log_frame", log)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("DELETE FROM raw.transactions WHERE partition_date = $partition_date", params)
        conn.execute("DELETE FROM raw.quarantine WHERE partition_date = $partition_date", params)
        conn.execute(
            read_sql("insert_raw_transactions"), {**params, "ingested_at": now}
        )
        conn.execute("INSERT INTO raw.quarantine SELECT * FROM quarantine_frame")
        conn.execute("INSERT INTO raw.ingestion_log SELECT * FROM log_frame")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.unregister("quarantine_frame")
        conn.unregister("log_frame")
        _drop_staging(conn, staged)
    return IngestionResult(
        partition_date=partition_date,
        files=tuple(outcomes),
        quarantine_reasons=dict(Counter(quarantine["reason"])),
    )


def _drop_staging(conn: duckdb.DuckDBPyConnection, staged: list[_StagedFile]) -> None:
    for s in staged:
        kind = "TABLE" if _has_embedded_newlines(s) else "VIEW"
        conn.execute(
            f"DROP {kind} IF EXISTS stage_rows_{s.file_id}; DROP TABLE IF EXISTS stage_{s.file_id};"
            f"DROP TABLE IF EXISTS reject_positions_{s.file_id}"
        )
    conn.execute("DROP TABLE IF EXISTS batch; DROP TABLE IF EXISTS checked")


def _log_frame(
    outcomes: list[FileOutcome],
    partition_date: date,
    started: datetime,
    finished: datetime,
    run_id: str | None,
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (partition_date, o.file, o.sha256, o.size_bytes, o.rows_read, o.rows_loaded,
             o.rows_quarantined, o.status, o.error, run_id, started, finished)
            for o in outcomes
        ],
        columns=["partition_date", "file", "sha256", "size_bytes", "rows_read", "rows_loaded",
                 "rows_quarantined", "status", "error", "run_id", "started_at", "finished_at"],
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
    conn.register("log_frame", _log_frame([outcome], partition_date, started, datetime.now(), run_id))
    conn.execute("INSERT INTO raw.ingestion_log SELECT * FROM log_frame")
    conn.unregister("log_frame")

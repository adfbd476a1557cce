"""Quarantine: the rows of a batch that break a rule or that the CSV reader cannot split, as
``raw.quarantine`` keeps them: file, physical line, rule, column, a safe detail and the
landing line with its personal data masked.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime

import duckdb
import pandas as pd
import pyarrow as pa

from mlplatform.contract import Contract
from mlplatform.ingestion.staging import STAGING, StagedFile, hidden_sources
from mlplatform.warehouse.pii import MASK, card_pseudonym

# Anything that may be a card number: 12-19 digits, single spaces or dashes between them.
_CARD_LIKE = re.compile(r"\d(?:[ -]?\d){11,18}")
_BIRTH_YEAR = re.compile(r"(\d{4})-")

# DuckDB's reject types -> quarantine rules for rows the CSV reader cannot split into fields.
_STRUCTURAL_RULES = {
    "MISSING COLUMNS": "malformed_row",
    "TOO MANY COLUMNS": "malformed_row",
    "UNQUOTED VALUE": "malformed_row",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
}


def quarantine_frame(
    conn: duckdb.DuckDBPyConnection,
    staged: list[StagedFile],
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
    hidden = hidden_sources(contract)
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
                f"SELECT s.rowid, {cols} FROM {STAGING}.stage_{file_id} s "
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
    hidden = hidden_sources(contract) | {
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


def _safe_detail(column: str | None, detail: str | None) -> str | None:
    """Rule details quote values; never those of PII columns."""
    if column in ("card_number", "first_name", "last_name", "street", "birth_date"):
        return "value withheld (personal data)"
    return None if detail is None else _CARD_LIKE.sub(MASK, detail)

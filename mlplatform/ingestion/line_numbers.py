"""Physical line numbers (header = 1) of a landing file's records, as a user counts them.

DuckDB's CSV reader numbers records, not lines: blank lines and quoted newlines shift the two
apart. A staged row keeps its physical line (quarantine and ``raw.transactions.source_line``
name it), whatever the file's line breaks.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mlplatform.ingestion.files import CHUNK_BYTES, FileInspection


def line_at(path: Path, offset: int) -> int:
    """Physical line (1-based) of the first non-newline byte at or after a byte offset."""
    newlines = 0
    position = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
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


def prepare_line_numbers(
    conn: duckdb.DuckDBPyConnection,
    file_id: int,
    rows: int,
    good_lines: np.ndarray | None,
    rejects: pd.DataFrame,
) -> None:
    """The helper table that gives each row of staged file ``file_id`` its physical line.

    With a line map (see :func:`physical_lines`) it is looked up; otherwise a good row's
    line is the next one no reject took (reject lines are physical lines then).
    """
    fid = file_id
    if good_lines is not None:
        conn.register(
            f"lines_df_{fid}",
            pa.table({"row_idx": np.arange(rows, dtype=np.int64), "line": good_lines}),
        )
        conn.execute(f"CREATE OR REPLACE TEMP TABLE line_map_{fid} AS SELECT * FROM lines_df_{fid}")
        conn.unregister(f"lines_df_{fid}")
    elif not rejects.empty:
        conn.register(f"rejects_df_{fid}", rejects[["line"]])
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE reject_positions_{fid} AS
                SELECT good_before, max(n) AS n FROM (
                    SELECT line - 1 - row_number() OVER (ORDER BY line) AS good_before,
                           row_number() OVER (ORDER BY line) AS n
                    FROM rejects_df_{fid})
                GROUP BY good_before ORDER BY good_before"""
        )
        conn.unregister(f"rejects_df_{fid}")


def line_number_sql(
    file_id: int, good_lines: np.ndarray | None, rejects: pd.DataFrame
) -> tuple[str, str]:
    """SQL of the physical line of a staged row ``s`` (by its ``row_idx``), and the join of
    the helper table of :func:`prepare_line_numbers` it reads ('' when none)."""
    fid = file_id
    if good_lines is not None:
        return "m.line", f"JOIN line_map_{fid} AS m ON m.row_idx = s.row_idx"
    if not rejects.empty:
        return (
            "s.row_idx + 2 + coalesce(r.n, 0)",
            f"ASOF LEFT JOIN reject_positions_{fid} AS r ON s.row_idx >= r.good_before",
        )
    return "s.row_idx + 2", ""

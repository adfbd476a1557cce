"""A history extract (many days in one or more files) split into the landing folder's daily
files, in the source's own columns.

Each record's day is the local day of its mapped ``event_time`` (the contract's expression or
column, format and time zone: the very SQL ingestion types it with). DuckDB computes the days
in one streaming pass; the records are then copied byte for byte into
``transactions_YYYY-MM-DD.csv``, each under the extract's header, so a daily file holds
exactly what the source wrote. Records whose day cannot be computed (no or an unparsable
event time, a row the CSV reader cannot split) are reported with their line and reason:
rows read = rows written + rows rejected. A daily file whose bytes would not change is left
untouched, so importing the same extract again changes nothing.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

import duckdb
import pandas as pd

from mlplatform.contract import Contract
from mlplatform.warehouse.ingestion import (
    FileRejected,
    canonical_select,
    csv_scan_sql,
    inspect_file,
    physical_lines,
    read_header,
    record_starts,
)
from mlplatform.warehouse.row_rules import event_day_sql

_EPOCH = date(1970, 1, 1)
_FLUSH_LINES = 4096  # records buffered per day before they are written
_OPEN_FILES = 128  # daily files kept open at once (a history spans thousands of days)
_PROGRESS_BYTES = 8 << 20


@dataclass(frozen=True)
class RejectedRow:
    """A record of an extract whose day cannot be computed."""

    file: str
    line: int
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote: the daily files by day, and whether each changed."""

    rows_read: int
    rows_written: int
    rejected: tuple[RejectedRow, ...]
    days: dict[date, Path] = field(default_factory=dict)
    changed: tuple[date, ...] = ()

    lines: dict[date, tuple[array, array]] = field(default_factory=dict, repr=False)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejected)

    def daily_to_source(self, day: date | pd.Timestamp, line: int) -> int:
        """The line in its extract of the record at ``line`` of ``day``'s daily file."""
        starts, sources = self.lines[pd.Timestamp(day).date()]
        return sources[bisect_right(starts, int(line)) - 1]


def import_history(
    files: Sequence[Path],
    landing_dir: Path,
    contract: Contract,
    *,
    max_line_bytes: int,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Split ``files`` (one header, the contract's source) into daily landing files.

    ``progress`` is called with the bytes of the extract done since its last call. Raises
    :class:`~mlplatform.warehouse.ingestion.FileRejected` when a file is not a CSV of the
    contract, or its header is not the first file's.
    """
    landing_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=landing_dir))
    try:
        writer = _DailyWriter(staging)
        read = 0
        rejected: list[RejectedRow] = []
        first_header: bytes | None = None
        for path in files:
            header_line = _first_line(path)
            if first_header is None:
                first_header = header_line
                writer.header = header_line
            elif header_line.rstrip(b"\r\n") != first_header.rstrip(b"\r\n"):
                raise FileRejected(path, "line 1: not the same header as the first file's")
            n, bad = _split_file(path, contract, max_line_bytes, writer, progress)
            read += n
            rejected += bad
        writer.close()
        changed = []
        days = {}
        for day, staged in sorted(writer.files.items()):
            target = landing_dir / f"transactions_{day.isoformat()}.csv"
            days[day] = target
            if target.exists() and _same_bytes(target, staged):
                continue
            os.replace(staged, target)
            changed.append(day)
        return ImportResult(
            rows_read=read,
            rows_written=writer.rows,
            rejected=tuple(rejected),
            days=days,
            changed=tuple(changed),
            lines=writer.lines,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _split_file(
    path: Path,
    contract: Contract,
    max_line_bytes: int,
    writer: _DailyWriter,
    progress: Callable[[int], None] | None,
) -> tuple[int, list[RejectedRow]]:
    """Copy one file's records to their days; (records read, records rejected)."""
    header = read_header(path, contract, max_line_bytes)
    inspection = inspect_file(path)
    if inspection.nul_offset is not None:
        raise FileRejected(path, f"binary content: NUL byte at offset {inspection.nul_offset}")
    days, reasons, rejects = _event_days(path, header, contract, inspection.ascii, max_line_bytes)
    good_lines, reject_lines = physical_lines(path, inspection, len(days), rejects)
    rejected = [
        RejectedRow(path.name, line, f"malformed_row: {message}")
        for line, message in zip(reject_lines, rejects["error_message"], strict=True)
    ]
    reject_set = set(reject_lines)
    newline = b"\r\n" if _first_line(path).endswith(b"\r\n") else b"\n"
    good = done = 0
    for line, record in _records(path, multi_line=good_lines is not None):
        if line not in reject_set:
            day = days[good]
            if day is None:
                rejected.append(RejectedRow(path.name, line, reasons[good]))
            else:
                writer.write(day, record if record.endswith(b"\n") else record + newline, line)
            good += 1
        done += len(record)
        if progress is not None and done >= _PROGRESS_BYTES:
            progress(done)
            done = 0
    if progress is not None:
        progress(done)
    rejected.sort(key=lambda r: r.line)
    return len(days) + len(rejects), rejected


def _records(path: Path, *, multi_line: bool) -> Iterator[tuple[int, bytes]]:
    """(physical line, bytes) of each record after the header, in file order. Unless a
    record spans lines (quoted newlines) or lines are blank, a record is a line."""
    with path.open("rb") as handle:
        if not multi_line:
            handle.readline()
            yield from enumerate(handle, start=2)
            return
        offsets, lines = record_starts(path)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            ends = [*offsets[1:], len(data)]
            for i in range(1, len(offsets)):
                yield lines[i], data[offsets[i] : ends[i]]


def _event_days(
    path: Path, header: list[str], contract: Contract, ascii: bool, max_line_bytes: int
) -> tuple[list[date | None], list[str | None], pd.DataFrame]:
    """The day (or None, with the reason) of every record the CSV reader splits, in file
    order, and the reader's rejects."""
    conn = duckdb.connect()
    try:
        items, named = canonical_select(contract, header, ascii, names=("event_time",))
        scan = csv_scan_sql(path, len(header), max_line_bytes, "import")
        rows = f"(SELECT s.*, {', '.join(named)} FROM {scan} AS s)" if named else f"{scan}"
        day, reason = event_day_sql(contract)
        result = conn.execute(
            f"""SELECT {day} AS day, {reason} AS reason
                FROM (SELECT {", ".join(items)} FROM {rows} AS s) AS b"""
        ).fetchall()
        rejects = conn.execute(
            """SELECT DISTINCT ON (line) line, line_byte_position,
                      error_type::VARCHAR AS error_type, csv_line, error_message
               FROM rejects_import ORDER BY line"""
        ).df()
    except duckdb.InvalidInputException as error:
        raise FileRejected(path, f"not a parsable CSV: {str(error).splitlines()[0]}") from error
    finally:
        conn.close()
    days = [None if d is None else _EPOCH + timedelta(days=d) for d, _ in result]
    return days, [r for _, r in result], rejects


class _DailyWriter:
    """Appends records to one staged file per day, each starting with the header."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.header = b""
        self.files: dict[date, Path] = {}
        self.rows = 0
        self._buffers: dict[date, list[bytes]] = {}
        self._open: dict[date, BinaryIO] = {}
        # per day: the daily file's line where each record starts, and its line in the extract
        self.lines: dict[date, tuple[array, array]] = {}
        self._next_line: dict[date, int] = {}

    def write(self, day: date, record: bytes, source_line: int) -> None:
        buffer = self._buffers.setdefault(day, [])
        buffer.append(record)
        self.rows += 1
        starts, sources = self.lines.setdefault(day, (array("q"), array("q")))
        line = self._next_line.get(day, 2)
        starts.append(line)
        sources.append(source_line)
        self._next_line[day] = line + record.count(b"\n")
        if len(buffer) >= _FLUSH_LINES:
            self._flush(day)

    def _flush(self, day: date) -> None:
        buffer = self._buffers.pop(day, [])
        if not buffer:
            return
        handle = self._open.get(day)
        if handle is None:
            if len(self._open) >= _OPEN_FILES:
                for other in self._open.values():
                    other.close()
                self._open.clear()
            path = self.files.get(day)
            if path is None:
                path = self.files[day] = self.folder / f"transactions_{day.isoformat()}.csv"
                handle = path.open("wb")
                handle.write(self.header)
            else:
                handle = path.open("ab")
            self._open[day] = handle
        handle.writelines(buffer)

    def close(self) -> None:
        for day in list(self._buffers):
            self._flush(day)
        for handle in self._open.values():
            handle.close()
        self._open.clear()


def _first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline()


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as left, b.open("rb") as right:
        while chunk := left.read(1 << 20):
            if chunk != right.read(len(chunk)):
                return False
    return True

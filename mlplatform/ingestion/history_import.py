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

A day inside the extract's span without a record had no transactions: it gets a daily file
of the header alone (unless the landing folder has a file for it already), so that an empty
day is a valid day of the history and the span loads as one range, not one run per stretch
of days between gaps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import pandas as pd

from mlplatform.contract import Contract
from mlplatform.ingestion.files import (
    FileInspection,
    FileRejected,
    partition_date_of,
    read_header,
)
from mlplatform.ingestion.line_numbers import physical_lines, record_starts
from mlplatform.ingestion.row_rules import event_day_sql
from mlplatform.ingestion.staging import canonical_select, csv_scan_sql

_EPOCH = date(1970, 1, 1)
_OPEN_FILES = 128  # daily files kept open at once (a history spans thousands of days)
_CHUNK_BYTES = 8 << 20
_NO_DAY = -(1 << 40)  # a record without a day (no real day is this far from 1970)
_MALFORMED = _NO_DAY - 1  # a record the CSV reader could not split


@dataclass(frozen=True)
class RejectedRow:
    """A record of an extract whose day cannot be computed."""

    file: str
    line: int
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote: rows read, written and rejected (read = written + rejected),
    the daily file of each day, the days whose file is new or changed, and per day the runs
    of lines copied (the daily file's first line of each, and its line in the extract)."""

    rows_read: int
    rows_written: int
    rejected: tuple[RejectedRow, ...]
    days: dict[date, Path] = field(default_factory=dict)
    changed: tuple[date, ...] = ()
    #: Days of the span without a record: their files hold the header alone.
    empty: tuple[date, ...] = ()
    lines: dict[date, tuple[array, array]] = field(default_factory=dict, repr=False)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejected)

    @property
    def span(self) -> list[date]:
        """Every day from the first to the last of the extract (each has a landing file)."""
        if not self.days:
            return []
        first, last = min(self.days), max(self.days)
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def daily_to_source(self, day: date | pd.Timestamp, line: int) -> int:
        """The line in its extract of ``line`` of ``day``'s daily file."""
        starts, sources = self.lines[pd.Timestamp(day).date()]
        run = bisect_right(starts, int(line)) - 1
        return sources[run] + int(line) - starts[run]


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
    :class:`~mlplatform.ingestion.files.FileRejected` when a file is not a CSV of the
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
        empty = writer.fill_gaps(landing_dir)
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
            empty=empty,
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
    """Copy one file's records to their days; (records read, records rejected).

    Consecutive records of one day are copied as one slice of the file (an extract in time
    order costs a few writes a day, not one per row)."""
    header = read_header(path, contract, max_line_bytes)
    with ThreadPoolExecutor(max_workers=1) as pool:
        scanning = pool.submit(_scan, path)  # while DuckDB parses
        days, reasons, rejects = _event_days(path, header, contract, max_line_bytes)
        inspection, newlines = scanning.result()
    if inspection.nul_offset is not None:
        raise FileRejected(path, f"binary content: NUL byte at offset {inspection.nul_offset}")
    good_lines, reject_lines = physical_lines(path, inspection, len(days), rejects)
    rejected = [
        RejectedRow(path.name, line, f"malformed_row: {message}")
        for line, message in zip(reject_lines, rejects["error_message"], strict=True)
    ]
    size = inspection.size_bytes
    if good_lines is None:  # every record is one line: records start after each newline
        starts = np.concatenate(([0], newlines + 1))
        starts = starts[starts < size]
        lines = np.arange(1, len(starts) + 1)
    else:  # quoted newlines or blank lines: find where each record starts
        offsets, found = record_starts(path)
        starts, lines = np.asarray(offsets, dtype=np.int64), np.asarray(found, dtype=np.int64)
    ends = np.append(starts[1:], size)[1:]
    starts, lines = starts[1:], lines[1:]  # the header is no record
    good = ~np.isin(lines, np.asarray(reject_lines, dtype=np.int64))
    if int(good.sum()) != len(days):
        raise FileRejected(path, "the CSV reader's records do not match the file's lines")
    code = np.full(len(lines), _MALFORMED, dtype=np.int64)
    code[good] = days
    good_records = np.flatnonzero(good)
    for index, reason in reasons.items():
        rejected.append(RejectedRow(path.name, int(lines[good_records[index]]), reason))
    newline = b"\r\n" if _first_line(path).endswith(b"\r\n") else b"\n"
    unterminated = size > 0 and _last_byte(path) != b"\n"
    change = np.flatnonzero(np.diff(code)) + 1
    with path.open("rb") as handle:
        for first, last in zip(np.append(0, change), np.append(change, len(code)), strict=True):
            if code[first] < 0:
                continue
            low, high = int(starts[first]), int(ends[last - 1])
            n_lines = int(np.searchsorted(newlines, high) - np.searchsorted(newlines, low))
            writer.write_run(
                _EPOCH + timedelta(days=int(code[first])),
                _read_range(handle, low, high),
                int(lines[first]),
                n_lines,
                int(last - first),
                newline if unterminated and high == size else b"",
            )
            if progress is not None:
                progress(high - low)
    rejected.sort(key=lambda r: r.line)
    return len(lines), rejected


def _scan(path: Path) -> tuple[FileInspection, np.ndarray]:
    """What ingestion's inspection finds (but the hash, which the daily files get when they
    load) and the byte offset of every newline, in one pass of bounded memory."""
    found = []
    size = 0
    nul_offset = None
    ascii = True
    last = b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            found.append(np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + size)
            if nul_offset is None and (at := chunk.find(b"\x00")) >= 0:
                nul_offset = size + at
            ascii = ascii and chunk.isascii()
            size += len(chunk)
            last = chunk[-1:]
    newlines = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    inspection = FileInspection("", size, len(newlines), last == b"\n", nul_offset, ascii)
    return inspection, newlines


def _read_range(handle: BinaryIO, low: int, high: int) -> Iterator[bytes]:
    """Bytes ``low:high`` of a file, in pieces of bounded size."""
    handle.seek(low)
    while low < high and (piece := handle.read(min(high - low, _CHUNK_BYTES))):
        yield piece
        low += len(piece)


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def _event_days(
    path: Path, header: list[str], contract: Contract, max_line_bytes: int
) -> tuple[np.ndarray, dict[int, str], pd.DataFrame]:
    """The day (days since 1970-01-01; -1: none) of every record the CSV reader splits, in
    file order, why each without one has none (by its position), and the reader's rejects."""
    conn = duckdb.connect()
    try:
        # trim() whatever the text (whether it is ASCII is known only after a pass)
        items, named = canonical_select(contract, header, False, names=("event_time",))
        scan = csv_scan_sql(path, len(header), max_line_bytes, "import")
        rows = f"(SELECT s.*, {', '.join(named)} FROM {scan} AS s)" if named else f"{scan}"
        day, reason = event_day_sql(contract)
        result = conn.sql(
            f"""SELECT coalesce({day}, {_NO_DAY}) AS day, {reason} AS reason
                FROM (SELECT {", ".join(items)} FROM {rows} AS s) AS b"""
        ).to_arrow_table()
        rejects = conn.execute(
            """SELECT DISTINCT ON (line) line, line_byte_position,
                      error_type::VARCHAR AS error_type, csv_line, error_message
               FROM rejects_import ORDER BY line"""
        ).df()
    except duckdb.InvalidInputException as error:
        raise FileRejected(path, f"not a parsable CSV: {str(error).splitlines()[0]}") from error
    finally:
        conn.close()
    days = result.column("day").to_numpy().astype(np.int64)
    missing = np.flatnonzero(days == _NO_DAY)
    reasons = result.column("reason").take(missing).to_pylist()
    return days, dict(zip(missing.tolist(), reasons, strict=True)), rejects


class _DailyWriter:
    """Appends runs of records to one staged file per day, each starting with the header."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.header = b""
        self.files: dict[date, Path] = {}
        self.rows = 0
        self._open: dict[date, BinaryIO] = {}
        # per day and run: the daily file's line where the run starts, its line in the extract
        self.lines: dict[date, tuple[array, array]] = {}
        self._next_line: dict[date, int] = {}

    def write_run(
        self,
        day: date,
        run: Iterable[bytes],
        source_line: int,
        n_lines: int,
        n_records: int,
        end: bytes,
    ) -> None:
        """Append ``run`` (``n_records`` records on ``n_lines`` lines of the extract from
        ``source_line`` on) and ``end`` (a newline the extract's last record lacks)."""
        handle = self._handle(day)
        handle.writelines(run)
        handle.write(end)
        self.rows += n_records
        starts, sources = self.lines.setdefault(day, (array("q"), array("q")))
        line = self._next_line.get(day, 2)
        starts.append(line)
        sources.append(source_line)
        self._next_line[day] = line + n_lines + (1 if end else 0)

    def _handle(self, day: date) -> BinaryIO:
        handle = self._open.get(day)
        if handle is not None:
            return handle
        if len(self._open) >= _OPEN_FILES:
            for other in self._open.values():
                other.close()
            self._open.clear()
        path = self.files.get(day)
        if path is None:
            path = self.files[day] = self.folder / f"transactions_{day.isoformat()}.csv"
            handle = path.open("wb", buffering=_CHUNK_BYTES)
            handle.write(self.header)
        else:
            handle = path.open("ab", buffering=_CHUNK_BYTES)
        self._open[day] = handle
        return handle

    def fill_gaps(self, landing_dir: Path) -> tuple[date, ...]:
        """A header-only file for each day between the first and the last one written that
        has no record and no file in ``landing_dir``; those days."""
        if not self.files:
            return ()
        first, last = min(self.files), max(self.files)
        landed = {  # days with a file of their own (a header-only file is an earlier import's)
            partition_date_of(path)
            for path in landing_dir.glob("*.csv")
            if path.stat().st_size != len(self.header) or path.read_bytes() != self.header
        }
        empty = []
        for offset in range((last - first).days + 1):
            day = first + timedelta(days=offset)
            if day not in self.files and day not in landed:
                self.files[day] = self.folder / f"transactions_{day.isoformat()}.csv"
                self.files[day].write_bytes(self.header)
                empty.append(day)
        return tuple(empty)

    def close(self) -> None:
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

"""Landing files: which files a partition has, their partition date, their bytes, their header.

A file that is not a CSV of the contract is rejected whole (:class:`FileRejected`).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from mlplatform.contract import Contract

DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_OTHER_DELIMITERS = (";", "\t", "|")
#: Bytes read at a time by every pass over a landing file.
CHUNK_BYTES = 8 << 20


class FileRejected(Exception):
    """A landing file that is not a CSV of the contract; nothing of its partition loads."""

    def __init__(self, file: Path, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True)
class FileInspection:
    """What one pass over a file's bytes finds (see :func:`inspect_file`)."""

    sha256: str
    size_bytes: int
    newlines: int
    ends_with_newline: bool
    nul_offset: int | None
    ascii: bool  # no byte above 127: the only space trim() can strip is ' '


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
    return landing_files_by_day(landing_dir, [partition_date])[partition_date]


def landing_files_by_day(landing_dir: Path, days: Iterable[date]) -> dict[date, list[Path]]:
    """Each day's landing files (:func:`landing_files`), the folder listed once."""
    found: dict[date, list[Path]] = {day: [] for day in days}
    if landing_dir.is_dir():
        for path in sorted(landing_dir.glob("*.csv")):
            if (day := partition_date_of(path)) in found and path.is_file():
                found[day].append(path)
    return found


def inspect_file(path: Path) -> FileInspection:
    """SHA-256, size, newline count, first NUL byte and ASCII-ness of a file, in one pass."""
    digest = hashlib.sha256()
    size = newlines = 0
    nul_offset = None
    ascii = True
    last = b""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
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

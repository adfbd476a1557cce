"""The REST service's prediction log: one JSON line per scored transaction and model.

Files ``predictions-YYYY-MM-DD.<host>-<pid>.jsonl`` in the serving folder, named by the
transaction's event day (a day's files hold that day's transactions, whenever they were
scored) and by the process that wrote them: every service process (replicas sharing the
folder, workers) appends to files of its own, so no two writers share a file and no line is
torn or interleaved. A line a killed process left cut short is ended before the next line is
appended (a restarted process may get the same pid). The ``serving_log`` asset loads every
file of a day into ``monitoring.serving_log``; the service reads them back at startup to
rebuild its fresh online state. No card number: the card is its pseudonym.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

#: The fields of a line, in order (``serving_log`` reads exactly these).
FIELDS = (
    "request_id", "logged_at", "event_time", "partition_date", "card_id", "transaction_id",
    "model_name", "model_version", "role", "returned", "score", "decision", "validation_ms",
    "features_ms", "model_ms", "event",
)  # fmt: skip
#: Roles whose answers were returned, so later transactions must see them.
ANSWERING_ROLES = frozenset({"champion", "canary"})

logger = logging.getLogger(__name__)


def log_path(folder: Path, day: date) -> Path:
    """This process's file of transactions whose event day is ``day``."""
    return folder / f"predictions-{day.isoformat()}.{socket.gethostname()}-{os.getpid()}.jsonl"


def day_files(folder: Path, day: date) -> list[Path]:
    """Every process's file of ``day`` (and the single file of logs written before files
    were per process), in name order."""
    return sorted(folder.glob(f"predictions-{day.isoformat()}*.jsonl"))


def _iso_date(value: object) -> str:
    """Dates and times in an event (``partition_date``) as ISO text."""
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class PredictionLog:
    """Appends lines to the day files of ``folder``; safe to call from several threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._ended: set[Path] = set()  # files whose last line this process has checked

    def append(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Append ``lines`` (each with every field of :data:`FIELDS`) to their day files."""
        by_day: dict[str, list[str]] = {}
        for line in lines:
            line = {name: line[name] for name in FIELDS}
            text = json.dumps(line, separators=(",", ":"), default=_iso_date)
            by_day.setdefault(str(line["partition_date"]), []).append(text + "\n")
        with self._lock:
            for day, texts in sorted(by_day.items()):
                path = log_path(self.folder, date.fromisoformat(day))
                with path.open("a") as handle:
                    if path not in self._ended:
                        if not _ends_a_line(path):
                            handle.write("\n")
                        self._ended.add(path)
                    handle.writelines(texts)

    def answered_events(self, after: datetime | None) -> Iterator[dict[str, Any]]:
        """The ``event`` of each returned line (champion or canary) whose event time is
        after ``after`` (all when None), file by file: what fresh state must hold."""
        for path in sorted(self.folder.glob("predictions-*.jsonl")):
            day = date.fromisoformat(path.name.removeprefix("predictions-")[:10])
            if after is not None and day < after.date():
                continue
            with path.open() as handle:
                for number, text in enumerate(handle, start=1):
                    try:
                        line = json.loads(text)
                    except json.JSONDecodeError:  # a line cut short by a crash mid-write
                        logger.warning("%s:%d is not a JSON line; skipped", path, number)
                        continue
                    if not (line["returned"] and line["role"] in ANSWERING_ROLES):
                        continue
                    if after is None or datetime.fromisoformat(line["event_time"]) > after:
                        yield line["event"]


def _ends_a_line(path: Path) -> bool:
    """Whether ``path`` is empty or ends with a newline (not a line a crash cut short)."""
    with path.open("rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return True
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"

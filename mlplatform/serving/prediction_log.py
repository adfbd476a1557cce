"""The REST service's prediction log: one JSON line per scored transaction and model.

Files ``predictions-YYYY-MM-DD.jsonl`` in the serving folder, named by the transaction's
event day (a day's file holds that day's transactions, whenever they were scored). The
``serving_log`` asset loads them into ``monitoring.serving_log``; the service reads them back
at startup to rebuild its fresh online state. No card number: the card is its pseudonym.
"""

from __future__ import annotations

import json
import logging
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
    """The file of transactions whose event day is ``day``."""
    return folder / f"predictions-{day.isoformat()}.jsonl"


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

    def append(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Append ``lines`` (each with every field of :data:`FIELDS`) to their day files."""
        by_day: dict[str, list[str]] = {}
        for line in lines:
            line = {name: line[name] for name in FIELDS}
            text = json.dumps(line, separators=(",", ":"), default=_iso_date)
            by_day.setdefault(str(line["partition_date"]), []).append(text + "\n")
        with self._lock:
            for day, texts in sorted(by_day.items()):
                with log_path(self.folder, date.fromisoformat(day)).open("a") as handle:
                    handle.writelines(texts)

    def answered_events(self, after: datetime | None) -> Iterator[dict[str, Any]]:
        """The ``event`` of each returned line (champion or canary) whose event time is
        after ``after`` (all when None), in file order: what fresh state must hold."""
        for path in sorted(self.folder.glob("predictions-*.jsonl")):
            day = date.fromisoformat(path.stem.removeprefix("predictions-"))
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

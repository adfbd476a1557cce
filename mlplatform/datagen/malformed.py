"""Malformed rows injected into landing files, each breaking exactly one ingestion rule."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import numpy as np

#: The kinds of malformed rows, in a fixed order.
MALFORMED_KINDS: tuple[str, ...] = (
    "missing_card_number",  # empty cc_num
    "bad_timestamp",  # unparseable trans_date_trans_time
    "bad_amount",  # amt is not a number
    "non_positive_amount",  # amt is 0 or negative
    "wrong_day",  # valid timestamp on another day than the file's
    "duplicate_id",  # trans_num of an earlier row of the same file, different amount
    "too_few_fields",  # the line stops after a few fields
)

# Field positions in the transaction file.
_TIME, _CARD, _AMOUNT, _ID, _LABEL = 0, 1, 4, 17, 20
_BAD_AMOUNTS = ("12,50x", "abc", "1.2.3", "twelve")


def malformed_line(
    kind: str,
    fields: list[str],
    day: date,
    neighbour_time: str,
    fresh_id: str,
    rng: np.random.Generator,
) -> bytes:
    """One CSV line (with newline) of ``kind``, derived from a valid row's ``fields``.

    Except for ``duplicate_id`` (a copy of that row with another amount), the row gets a fresh
    transaction id, ``is_fraud=0`` and ``neighbour_time`` (a timestamp of the row it is placed
    after, so the file stays sorted by time) before its one rule is broken.
    """
    fields = list(fields)
    if kind != "duplicate_id":
        fields[_TIME], fields[_ID], fields[_LABEL] = neighbour_time, fresh_id, "0"
    if kind == "missing_card_number":
        fields[_CARD] = ""
    elif kind == "bad_timestamp":
        fields[_TIME] = str(
            rng.choice([f"{day.year}-13-45 99:00:00", "yesterday", f"{day.isoformat()} 25:61:00"])
        )
    elif kind == "bad_amount":
        fields[_AMOUNT] = str(rng.choice(_BAD_AMOUNTS))
    elif kind == "non_positive_amount":
        fields[_AMOUNT] = "0.00" if rng.random() < 0.3 else "-" + fields[_AMOUNT]
    elif kind == "wrong_day":
        other = day + timedelta(days=int(rng.choice([-3, -2, -1, 1, 2, 3])))
        seconds = int(rng.integers(0, 86_400))
        fields[_TIME] = (
            f"{other.isoformat()} {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        )
    elif kind == "duplicate_id":
        cents = round(float(fields[_AMOUNT]) * 100)
        other_cents = max(1, round(cents * rng.uniform(0.5, 1.5)))
        if other_cents == cents:
            other_cents = cents + 1
        fields[_AMOUNT] = f"{other_cents // 100}.{other_cents % 100:02d}"
    elif kind == "too_few_fields":
        fields = fields[: int(rng.integers(3, 11))]
    else:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue().encode("utf-8")


def parse_line(line: str) -> list[str]:
    """The fields of one CSV line (standard quoting)."""
    return next(csv.reader([line]))

"""The feature SQL's per-event columns and casts, as Python twins for the online path.

:func:`~mlplatform.features.offline.event_columns` computes the columns the windows
aggregate in DuckDB; :func:`event_values` computes the same values of one curated row in
Python, and :func:`as_double` is DuckDB's cast of the exact sums to DOUBLE. Each twin follows
DuckDB's own arithmetic (tested against DuckDB on edge values, ``tests/test_derived.py``),
so that a transaction scored online has exactly its offline features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from mlplatform.features.declarations import LAST_EVENT, FeatureRegistry

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DAY = date(1970, 1, 1)
#: Decimal places and digits of ``amount_exact`` (``amount::DECIMAL(18, 2)``).
AMOUNT_SCALE, AMOUNT_WIDTH = 2, 18


def epoch_micros(value: datetime) -> int:
    """Microseconds since 1970-01-01 of a naive timestamp (DuckDB's ``epoch_us``)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def as_double(value: Decimal | float | int | None) -> float | None:
    """DuckDB's ``CAST(value AS DOUBLE)`` of a number. A decimal of up to 2**53 units (of
    its last place) is divided by its power of ten; a larger one is split into its integer
    and fractional parts, each converted and then added, as DuckDB 1.5 does (it agrees with
    DuckDB on every non-negative decimal: sums of amounts and of their squares)."""
    if value is None or isinstance(value, float):
        return value
    if not isinstance(value, Decimal):
        return _huge_to_double(int(value))
    sign, digits, exponent = value.as_tuple()  # exact at any size (no context rounding)
    if len(digits) <= 15:  # under 2**53 units: the division is correctly rounded, as float()
        return float(value)
    units = int("".join(map(str, digits))) * (-1 if sign else 1) * 10 ** max(exponent, 0)
    scale = max(-exponent, 0)
    if abs(units) <= 2**53:
        return units / 10.0**scale
    whole = abs(units) // 10**scale * (1 if units >= 0 else -1)
    fraction = units - whole * 10**scale
    return _huge_to_double(whole) + _huge_to_double(fraction) / 10.0**scale


def _huge_to_double(value: int) -> float:
    """DuckDB's conversion of a 128-bit integer to a double: its two 64-bit halves."""
    upper, lower = value >> 64, value & (2**64 - 1)
    if upper == -1:
        return -float(2**64 - lower)
    return float(lower) + float(upper) * 18446744073709551616.0


def decimal_of_double(value: float | None, scale: int, width: int) -> Decimal | None:
    """DuckDB's ``CAST(value AS DECIMAL(width, scale))`` of a double: the double times
    ``10**scale`` (rounded to a double, as DuckDB multiplies), then rounded half away from
    zero. Out of range or not finite: an error, as in DuckDB."""
    if value is None:
        return None
    scaled = value * 10.0**scale
    if not math.isfinite(scaled):
        raise ValueError(f"{value} is not a DECIMAL({width}, {scale})")
    magnitude = abs(scaled)
    whole = math.floor(magnitude)
    if magnitude - whole >= 0.5:
        whole += 1
    if whole >= 10**width:
        raise ValueError(f"{value} is out of the range of DECIMAL({width}, {scale})")
    return Decimal(-whole if scaled < 0 else whole).scaleb(-scale)


def event_values(registry: FeatureRegistry, row: Mapping[str, Any]) -> dict[str, Any]:
    """The event columns of one curated row (its input columns), as
    :func:`~mlplatform.features.offline.event_columns` computes them, without
    ``transaction_hash`` (DuckDB's ``hash()``:
    :func:`~mlplatform.ingestion.duckdb_functions.text_hash`) and ``row_key``."""
    amount = decimal_of_double(row["amount"], AMOUNT_SCALE, AMOUNT_WIDTH)
    discretionary = row["category"] in registry.discretionary_categories
    event_time: datetime = row["event_time"]
    return {
        "event_count": 1,
        "amount_exact": amount,
        "amount_squared": None if amount is None else amount * amount,
        "disc_amount": amount if discretionary else Decimal(0).scaleb(-AMOUNT_SCALE),
        "last_event": {field: row[field] for field in LAST_EVENT},
        "event_day": (event_time.date() - _EPOCH_DAY).days,
        "event_us": epoch_micros(event_time),
    }

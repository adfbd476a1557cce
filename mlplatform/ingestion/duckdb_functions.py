"""The DuckDB functions that type, check and curate a landing row, in Python.

Ingestion types, checks and curates rows in DuckDB (the reference); the online path does the
same to a request's few rows in Python, where planning a query per request would cost more
than the rest of the request. Each function here gives DuckDB's value for the inputs it
takes and raises :class:`NotPlain` for inputs whose DuckDB semantics it does not reproduce
(the caller then runs the SQL in DuckDB, a route it logs and counts). Parity with DuckDB on
edge values is tested in ``tests/test_row_rules.py``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo


class NotPlain(ValueError):
    """A value whose conversion here might differ from DuckDB's (a number written with
    underscores, a time in an unusual layout, a letter whose case Python maps to several): the
    caller evaluates that input with DuckDB instead. The message says which kind of value,
    never the value (it may be personal data); the caller logs and counts it."""


#: What DuckDB's trim() strips: the Unicode space separators (category Zs), not tabs or
#: line breaks.
_TRIMMED = " \u00a0\u1680\u202f\u205f\u3000" + "".join(chr(c) for c in range(0x2000, 0x200B))
#: What a cast of text to a number skips at either end.
_NUMBER_SPACE = " \t\n\v\f\r"
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DECIMAL_NO_EXPONENT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)")
_SPECIAL_DOUBLE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)
#: Characters of number text DuckDB reads that is not plain decimal text (1_000, 0x10,
#: nan(1) ...): text with none but these is left to DuckDB; text with any other is no number.
_NUMBER_LIKE = re.compile(r"[0-9+\-._()eExXbBoOnNaAiIfFtTyY]*")
_INTEGER_RANGES = {"BIGINT": (-(2**63), 2**63 - 1), "INTEGER": (-(2**31), 2**31 - 1)}
#: Layouts of try_strptime() evaluated here, each as the text it matches one to one.
_PLAIN_FORMATS = {
    "%Y-%m-%d %H:%M:%S": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}"),
    "%Y-%m-%d": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
}
#: Text that no layout of digits and separators can read (a letter, a symbol, non-ASCII).
_NOT_A_TIME = re.compile(r"[^0-9\-:+. \t\n\v\f\r]")
#: RE2's \s (the curation SQL's regexes): ASCII only, no vertical tab.
_SPACE = "[\t\n\f\r ]"
_NEEDS_SPACES_COLLAPSED = re.compile(f"{_SPACE}{_SPACE}|[\t\n\r]")
_SPACES = re.compile(f"{_SPACE}+")
_NOT_A_CATEGORY = re.compile("[^a-z_]")
_CATEGORY_SEPARATORS = re.compile(f"({_SPACE}|-)+")


def trim(text: str) -> str:
    """DuckDB's trim(text)."""
    return text.strip(_TRIMMED)


def try_cast_number(value: str | None, type_name: str) -> float | int | None:
    """DuckDB's TRY_CAST(value AS type_name) of text, type DOUBLE, BIGINT or INTEGER (text
    to an integer type rounds half away from zero: '2.5' is 3)."""
    if type_name not in ("DOUBLE", *_INTEGER_RANGES):
        raise ValueError(f"TRY_CAST AS {type_name}: not a number type evaluated here")
    if value is None:
        return None
    text = value.strip(_NUMBER_SPACE)
    if type_name == "DOUBLE":
        if _DECIMAL.fullmatch(text) or _SPECIAL_DOUBLE.fullmatch(text):
            return float(text)  # correctly rounded, as DuckDB's parser; 1e309 is inf in both
    elif _DECIMAL_NO_EXPONENT.fullmatch(text):
        number = int(Decimal(text).to_integral_value(rounding=ROUND_HALF_UP))
        low, high = _INTEGER_RANGES[type_name]
        return number if low <= number <= high else None
    elif _SPECIAL_DOUBLE.fullmatch(text):
        return None
    if not text or not text.isascii() or not _NUMBER_LIKE.fullmatch(text):
        return None
    raise NotPlain(f"a number that is not plain decimal text (as {type_name})")


def try_strptime(value: str | None, fmt: str) -> datetime | None:
    """DuckDB's try_strptime(value, fmt), for text in the layout of ``fmt`` exactly (no
    other spacing or digit count) and text that no layout of digits can read."""
    if not value:
        return None
    pattern = _PLAIN_FORMATS.get(fmt)
    if pattern is not None and pattern.fullmatch(value):
        if value.startswith("0000"):
            raise NotPlain("a time in the year 0")  # DuckDB's 1 BC: no Python datetime
        try:  # both layouts are ISO 8601's: fromisoformat reads them as strptime does
            # (the same time or error on 103,200 edge texts), ~45x faster
            return datetime.fromisoformat(value)
        except ValueError:  # month 13, February 30, hour 24...: no time, in both
            return None
    if pattern is not None and _NOT_A_TIME.search(value):
        return None
    raise NotPlain("a time that is not plain text of its format")


def utc_from_local(local: datetime | None, zone: str) -> datetime | None:
    """DuckDB's timezone('UTC', timezone(zone, local)): the UTC time of a local wall time of
    ``zone``. A wall time the zone skips or repeats is read as ICU does: the later of its two
    readings (a skipped one with the offset before the change, a repeated one the second)."""
    if local is None:
        return None
    tz = ZoneInfo(zone)
    readings = (local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1))
    try:
        return max(r.astimezone(UTC) for r in readings).replace(tzinfo=None)
    except OverflowError as error:  # DuckDB's years go on beyond 1 and 9999
        raise NotPlain("a time whose UTC time is beyond the years 1 to 9999") from error


def round_double(value: float | None, digits: int) -> float | None:
    """DuckDB's round(DOUBLE, digits >= 0): std::round(value * 10^digits) / 10^digits, the
    value itself when that is not finite."""
    if digits < 0:
        raise NotPlain("round() to fewer than no decimals")  # DuckDB divides, then multiplies
    if value is None:
        return None
    modifier = math.pow(10, digits)
    scaled = value * modifier
    if not math.isfinite(scaled):
        return value
    whole = math.copysign(float(math.trunc(scaled)), scaled)  # -0.3 rounds to -0.0
    if abs(scaled - whole) >= 0.5:  # half away from zero (exact: scaled - whole is exact)
        whole += math.copysign(1.0, scaled)
    rounded = whole / modifier
    return rounded if math.isfinite(rounded) else value


def radians(degrees: float) -> float:
    """DuckDB's radians()."""
    return degrees * (math.pi / 180.0)


def haversine_km(
    lat1: float | None, long1: float | None, lat2: float | None, long2: float | None
) -> float | None:
    """The ``haversine_km`` macro of ``macros.sql``, operation for operation (km; outside
    sqrt's and asin's domains, an error in both)."""
    if lat1 is None or long1 is None or lat2 is None or long2 is None:
        return None
    across = math.pow(math.sin(radians(long2 - long1) / 2), 2)
    inner = (
        math.pow(math.sin(radians(lat2 - lat1) / 2), 2)
        + math.cos(radians(lat1)) * math.cos(radians(lat2)) * across
    )
    return 12742.0176 * math.asin(math.sqrt(inner))  # 2 * 6371.0088, a DECIMAL, as a DOUBLE


def collapsed_spaces(text: str | None) -> str | None:
    """``CASE WHEN regexp_matches(text, '\\s\\s|[\\t\\n\\r]') THEN regexp_replace(text,
    '\\s+', ' ', 'g') ELSE text END`` (curation of merchant and city names)."""
    if text is None or not _NEEDS_SPACES_COLLAPSED.search(text):
        return text
    return _SPACES.sub(" ", text)


def category_name(text: str | None) -> str | None:
    """``CASE WHEN regexp_matches(text, '[^a-z_]') THEN regexp_replace(lower(text),
    '[\\s-]+', '_', 'g') ELSE text END`` (curation of categories)."""
    if text is None or not _NOT_A_CATEGORY.search(text):
        return text
    return _CATEGORY_SEPARATORS.sub("_", lower(text))


def lower(text: str) -> str:
    """DuckDB's lower(): each character's own lowercase (a capital sigma is U+03C3 at the end
    of a word too, not Python's final U+03C2)."""
    return text.lower() if text.isascii() else "".join(_one(c.lower()) for c in text)


def upper(text: str) -> str:
    """DuckDB's upper(): each character's own uppercase."""
    return text.upper() if text.isascii() else "".join(_one(c.upper()) for c in text)


def _one(mapped: str) -> str:
    """A character's case mapping in Python, when it is one character (then DuckDB's, by
    utf8proc: tested for every character); Python maps a few to several ('ß' to 'SS',
    where DuckDB gives 'ẞ')."""
    if len(mapped) != 1:
        raise NotPlain("a character that lower() or upper() maps to several in Python")
    return mapped


def day_text(day: date) -> str:
    """DuckDB's text of a DATE (as ``'...' || partition_date`` writes it)."""
    return day.isoformat()


_WORD = (1 << 64) - 1
_MULTIPLIER = 0xD6E8FEB86659FD93


def text_hash(text: str) -> int:
    """DuckDB's ``hash()`` of a VARCHAR (a UBIGINT): its UTF-8 bytes folded eight at a time
    (little-endian, the last block zero-padded) into a seed of their length, then mixed.
    Online, a request's transaction hashes (the order of same-microsecond events) without a
    query: planning one cost ~0.4 ms of each request."""
    data = text.encode()
    size = len(data)
    h = 0xE17A1465 ^ (size * 0xC6A4A7935BD1E995 & _WORD)
    for start in range(0, size, 8):
        h = (h ^ int.from_bytes(data[start : start + 8], "little")) * _MULTIPLIER & _WORD
    for _ in range(2):
        h = (h ^ h >> 32) * _MULTIPLIER & _WORD
    return h ^ h >> 32

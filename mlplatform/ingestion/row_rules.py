"""The row rules of landing data: one definition, used by ingestion and the online path.

A row is typed (:func:`typed_values`: ``event_time_ts``, ``<name>_num`` ...) and checked
(:func:`rules`, in priority order: the first a row breaks names the rule, the column and a
detail). Each typed value and each rule kind gives both its SQL and its Python twin.
Ingestion runs the SQL over a batch of staged files (``check_rows.sql`` with
:func:`typed_columns` and :func:`violation`, a CASE of every rule); the REST service runs the
Python twins over the transactions of a request (:func:`first_violation`), or, for values
they leave to DuckDB (:class:`~mlplatform.ingestion.duckdb_functions.NotPlain`), the same
SQL; so a transaction that ingestion would quarantine is refused online with the same rule.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

from mlplatform.contract import CANONICAL_COLUMNS, REQUIRED_COLUMNS, Contract
from mlplatform.ingestion.duckdb_functions import (
    NotPlain,
    day_text,
    try_cast_number,
    try_strptime,
    utc_from_local,
)
from mlplatform.warehouse.connection import read_sql, sql_literal
from mlplatform.warehouse.pii import card_pseudonym_sql

#: Canonical columns typed as numbers, with their SQL types.
NUMERIC_COLUMNS = {
    "amount": "DOUBLE",
    "city_pop": "BIGINT",
    "home_lat": "DOUBLE",
    "home_long": "DOUBLE",
    "merchant_lat": "DOUBLE",
    "merchant_long": "DOUBLE",
    "label": "DOUBLE",
}
#: Canonical columns never staged as text (only whether they hold a value): dropped at ingestion.
HIDDEN_COLUMNS = ("first_name", "last_name", "street")
#: Plausible ranges of numeric columns (inclusive; None: unbounded).
RANGES = {
    "home_lat": (-90, 90),
    "merchant_lat": (-90, 90),
    "home_long": (-180, 180),
    "merchant_long": (-180, 180),
    "city_pop": (0, None),
}
#: A staged row (column -> text, or a typed value), as the SQL of the rules sees it.
Row = Mapping[str, Any]


@dataclass(frozen=True)
class TypedValue(ABC):
    """A typed value of a staged row: its SQL over the row ``b`` and :meth:`value`, its
    Python twin over the row as a dict of the staged text (and the values typed before it)."""

    name: str

    @abstractmethod
    def sql(self) -> str: ...

    @abstractmethod
    def value(self, row: Row) -> Any: ...


@dataclass(frozen=True)
class NumberValue(TypedValue):
    """A number column's text as a number: ``TRY_CAST(b.column AS type)``."""

    column: str
    sql_type: str

    def sql(self) -> str:
        return f"TRY_CAST(b.{self.column} AS {self.sql_type})"

    def value(self, row: Row) -> float | int | None:
        return try_cast_number(row[self.column], self.sql_type)


@dataclass(frozen=True)
class FormattedTime(TypedValue):
    """A column's text read with a strptime format: ``try_strptime(b.column, format)``."""

    column: str
    format: str

    def sql(self) -> str:
        return f"try_strptime(b.{self.column}, {sql_literal(self.format)})"

    def value(self, row: Row) -> datetime | None:
        return try_strptime(row[self.column], self.format)


@dataclass(frozen=True)
class ExpressionTime(TypedValue):
    """A mapping expression's value as a timestamp: ``TRY_CAST(b.column AS TIMESTAMP)``
    (evaluated in DuckDB only: the online contract maps no expressions)."""

    column: str

    def sql(self) -> str:
        return f"TRY_CAST(b.{self.column} AS TIMESTAMP)"

    def value(self, row: Row) -> datetime | None:
        raise NotPlain("a time given by a mapping expression")


@dataclass(frozen=True)
class UtcTime(TypedValue):
    """A local time of a zone as a UTC time: ``timezone('UTC', timezone(zone, local))``."""

    local: TypedValue
    zone: str

    def sql(self) -> str:
        return f"timezone('UTC', timezone({sql_literal(self.zone)}, {self.local.sql()}))"

    def value(self, row: Row) -> datetime | None:
        return utc_from_local(self.local.value(row), self.zone)


@dataclass(frozen=True)
class BirthYear(TypedValue):
    """The year of a ``YYYY-MM-DD`` birth date: ``year(try_strptime(...))::INTEGER``."""

    column: str

    def sql(self) -> str:
        return f"year(try_strptime(b.{self.column}, '%Y-%m-%d'))::INTEGER"

    def value(self, row: Row) -> int | None:
        moment = try_strptime(row[self.column], "%Y-%m-%d")
        return None if moment is None else moment.year


def typed_values(contract: Contract) -> list[TypedValue]:
    """The typed values of a staged row, in order: ``event_time_ts`` (UTC),
    ``birth_year_num`` and ``<name>_num`` of the numeric columns; with a ``timezone``, first
    ``event_time_local`` (the source's local time, whose day is the partition's).

    An expression's event time is its value as a timestamp (``event_time_format`` is for
    text read one to one)."""

    def event_time(name: str) -> TypedValue:
        if "event_time" in contract.expressions:
            return ExpressionTime(name, "event_time")
        return FormattedTime(name, "event_time", contract.event_time_format)

    values: list[TypedValue] = []
    if contract.timezone:
        local = event_time("event_time_local")
        values += [local, UtcTime("event_time_ts", local, contract.timezone)]
    else:
        values.append(event_time("event_time_ts"))
    values.append(BirthYear("birth_year_num", "birth_date"))
    values += [NumberValue(f"{name}_num", name, t) for name, t in NUMERIC_COLUMNS.items()]
    return values


def typed_column_list(contract: Contract) -> list[tuple[str, str]]:
    """(name, SQL) of :func:`typed_values` over a staged row ``b``."""
    return [(value.name, value.sql()) for value in typed_values(contract)]


def event_day_sql(contract: Contract) -> tuple[str, str]:
    """SQL of a staged row ``b``'s partition day (days since 1970-01-01: the local day of
    its event time, as :func:`violation` judges it) and of why it has none (else NULL)."""
    typed = dict(typed_column_list(contract))
    local = typed.get("event_time_local", typed["event_time_ts"])
    failed = (
        "b.event_time IS NULL AND b.event_time_inputs"
        if "event_time" in contract.expressions
        else "false"
    )
    reason = f"""CASE
        WHEN {failed} THEN 'expression_failed: `columns.event_time` gave no value'
        WHEN b.event_time IS NULL THEN 'missing_required_field: event_time is empty'
        WHEN {local} IS NULL THEN 'unparsable_timestamp: ' || b.event_time
    END"""
    return f"(CAST({local} AS DATE) - DATE '1970-01-01')", reason


def typed_columns(contract: Contract) -> str:
    """SQL of the typed values of a staged row ``b`` (``<name>_num``, ``event_time_ts``)."""
    return ",\n        ".join(f"{sql} AS {name}" for name, sql in typed_column_list(contract))


@dataclass(frozen=True)
class Text:
    """A column of the row in a rule's detail (its text; a date as DuckDB writes it)."""

    column: str


#: A part of a rule's detail: literal text, or a column's value.
DetailPart = str | Text


@dataclass(frozen=True)
class Rule(ABC):
    """A landing rule: its name, the column it judges, and :meth:`sql` (a WHEN of the CASE
    ingestion runs) and :meth:`check` (its Python twin for one row) of its condition and
    detail. Kinds implement :meth:`condition_sql`, :meth:`broken` (True where the SQL
    condition is TRUE: NULL is not) and :meth:`detail_parts`."""

    column: str
    name: ClassVar[str]

    @abstractmethod
    def condition_sql(self) -> str: ...

    @abstractmethod
    def broken(self, row: Row) -> bool: ...

    @abstractmethod
    def detail_parts(self) -> tuple[DetailPart, ...]: ...

    def sql(self) -> str:
        """``WHEN condition THEN {'rule': ..., 'column': ..., 'detail': ...}``."""
        detail = " || ".join(
            part.column if isinstance(part, Text) else sql_literal(part)
            for part in self.detail_parts()
        )
        return (
            f"WHEN {self.condition_sql()} THEN {{'rule': '{self.name}', "
            f"'column': '{self.column}', 'detail': {detail}}}"
        )

    def check(self, row: Row) -> dict[str, str | None] | None:
        """``{'rule', 'column', 'detail'}`` when ``row`` breaks the rule, else None."""
        if not self.broken(row):
            return None
        texts = []
        for part in self.detail_parts():
            value = row[part.column] if isinstance(part, Text) else part
            if value is None:  # || of NULL
                return {"rule": self.name, "column": self.column, "detail": None}
            texts.append(day_text(value) if isinstance(value, date) else value)
        return {"rule": self.name, "column": self.column, "detail": "".join(texts)}

    def _quoted(self, *rest: DetailPart) -> tuple[DetailPart, ...]:
        return ("value '", Text(self.column), "'", *rest)


@dataclass(frozen=True)
class ExpressionFailed(Rule):
    """A mapping expression without a value from a row with values: it failed on them."""

    name = "expression_failed"

    def condition_sql(self) -> str:
        return f"{self.column} IS NULL AND {self.column}_inputs"

    def broken(self, row: Row) -> bool:
        return row[self.column] is None and row[f"{self.column}_inputs"] is True

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return (f"`columns.{self.column}` gave no value (an error or NULL) on this row",)


@dataclass(frozen=True)
class Required(Rule):
    """A required column with a value."""

    name = "missing_required_field"

    def condition_sql(self) -> str:
        return f"{self.column} IS NULL"

    def broken(self, row: Row) -> bool:
        return row[self.column] is None

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return ("empty or absent",)


@dataclass(frozen=True)
class ParsesAsTime(Rule):
    """A time column whose text gives a time (``typed``); ``format``: the strptime format
    it must match (None: an expression's value, which must be a timestamp)."""

    typed: str
    format: str | None
    name = "unparsable_timestamp"

    def condition_sql(self) -> str:
        return f"{self.typed} IS NULL"

    def broken(self, row: Row) -> bool:
        return row[self.typed] is None

    def detail_parts(self) -> tuple[DetailPart, ...]:
        if self.format is None:
            return self._quoted(" is not a timestamp")
        return self._quoted(" does not match ", self.format)


@dataclass(frozen=True)
class ParsesAsNumber(Rule):
    """A number column whose text is a finite number (``<column>_num``)."""

    name = "unparsable_amount"

    def condition_sql(self) -> str:
        return f"{self.column}_num IS NULL OR NOT isfinite({self.column}_num)"

    def broken(self, row: Row) -> bool:
        number = row[f"{self.column}_num"]
        return number is None or not math.isfinite(number)

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return self._quoted(" is not a number")


@dataclass(frozen=True)
class Positive(Rule):
    """A number above zero."""

    name = "non_positive_amount"

    def condition_sql(self) -> str:
        return f"{self.column}_num <= 0"

    def broken(self, row: Row) -> bool:
        number = row[f"{self.column}_num"]
        return number is not None and not _above(number, 0)

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return self._quoted(" <= 0")


@dataclass(frozen=True)
class Maximum(Rule):
    """A number at most ``maximum``."""

    maximum: float
    name = "amount_above_maximum"

    def condition_sql(self) -> str:
        return f"{self.column}_num > {self.maximum}"

    def broken(self, row: Row) -> bool:
        number = row[f"{self.column}_num"]
        return number is not None and _above(number, self.maximum)

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return self._quoted(f" > {self.maximum}")


@dataclass(frozen=True)
class OnPartitionDay(Rule):
    """An event time (``local``: its time in the source's zone) on the partition's day."""

    local: str
    name = "outside_partition_day"

    def condition_sql(self) -> str:
        return f"CAST({self.local} AS DATE) <> partition_date"

    def broken(self, row: Row) -> bool:
        moment, day = row[self.local], row["partition_date"]
        return moment is not None and day is not None and moment.date() != day

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return self._quoted(" is not on ", Text("partition_date"))


@dataclass(frozen=True)
class InDomain(Rule):
    """An optional number column: empty, or a number within ``low`` and ``high``
    (inclusive; None: unbounded) and, with ``allowed``, one of those values."""

    low: float | None
    high: float | None
    allowed: tuple[int, ...] | None
    name = "invalid_value"

    def condition_sql(self) -> str:
        number = f"{self.column}_num"
        bad = f"({self.column} IS NOT NULL AND {number} IS NULL)"
        if self.low is not None:
            bad += f" OR {number} < {self.low}"
        if self.high is not None:
            bad += f" OR {number} > {self.high}"
        if self.allowed is not None:
            bad += f" OR {number} NOT IN ({', '.join(map(str, self.allowed))})"
        return bad

    def broken(self, row: Row) -> bool:
        number = row[f"{self.column}_num"]
        if number is None:
            return row[self.column] is not None
        return (
            (self.low is not None and _above(self.low, number))
            or (self.high is not None and _above(number, self.high))
            or (self.allowed is not None and number not in self.allowed)
        )

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return self._quoted(" is out of range")


@dataclass(frozen=True)
class DateFormat(Rule):
    """An optional ``YYYY-MM-DD`` date column: empty, or a date (``typed``)."""

    typed: str
    name = "invalid_value"

    def condition_sql(self) -> str:
        return f"{self.column} IS NOT NULL AND {self.typed} IS NULL"

    def broken(self, row: Row) -> bool:
        return row[self.column] is not None and row[self.typed] is None

    def detail_parts(self) -> tuple[DetailPart, ...]:
        return ("not a YYYY-MM-DD date",)


def _above(a: float, b: float) -> bool:
    """DuckDB's ``a > b`` of doubles: NaN is above every other number, and equals NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and not math.isnan(b)
    return a > b


def rules(contract: Contract, max_amount: float) -> list[Rule]:
    """The landing rules of ``contract``'s rows, in priority order (a row breaks the first
    it fails)."""
    found: list[Rule] = [
        ExpressionFailed(name) for name in contract.expressions if name not in HIDDEN_COLUMNS
    ]
    found += [
        Required(name)
        for name in REQUIRED_COLUMNS
        if not (name == "transaction_id" and contract.generated_id)  # generated after checks
    ]
    expression_time = "event_time" in contract.expressions
    found += [
        ParsesAsTime(
            "event_time", "event_time_ts", None if expression_time else contract.event_time_format
        ),
        ParsesAsNumber("amount"),
        Positive("amount"),
        Maximum("amount", max_amount),
        OnPartitionDay("event_time", "event_time_local" if contract.timezone else "event_time_ts"),
    ]
    for name in NUMERIC_COLUMNS:
        if name == "amount" or not contract.has(name):
            continue
        low, high = RANGES.get(name, (None, None))
        found.append(InDomain(name, low, high, (0, 1) if name == "label" else None))
    if contract.has("birth_date"):
        found.append(DateFormat("birth_date", "birth_year_num"))
    return found


def violation(contract: Contract, max_amount: float) -> str:
    """CASE naming the first rule a row breaks (:func:`rules`, in order), else NULL."""
    whens = [rule.sql() for rule in rules(contract, max_amount)]
    return "CASE\n        " + "\n        ".join(whens) + "\n    END"


def first_violation(found: list[Rule], row: Row) -> dict[str, str | None] | None:
    """What :func:`violation`'s CASE gives for ``row``, in Python: the first rule of
    ``found`` it breaks as ``{'rule', 'column', 'detail'}``, else None."""
    return next((v for rule in found if (v := rule.check(row)) is not None), None)


def generated_ids_sql() -> str:
    """UPDATE giving every row of ``checked`` its generated transaction id (run after
    :func:`pseudonyms_sql`)."""
    typed = {name: f"{name}_num" for name in NUMERIC_COLUMNS}
    typed |= {
        "event_time": "event_time_ts",
        "birth_date": "birth_year_num",
        "card_number": "card_id",
    }
    values = [
        f"{'p' if name == 'card_number' else 'c'}.{typed.get(name, name)}::VARCHAR"
        for name in CANONICAL_COLUMNS
        if name not in ("transaction_id", *HIDDEN_COLUMNS)
    ]
    return read_sql("generate_transaction_ids").format(values="[" + ", ".join(values) + "]")


def pseudonyms_sql() -> str:
    """CREATE of the temp table ``pseudonyms`` (card_number -> card_id) of the checked rows'
    card numbers; bind :func:`~mlplatform.warehouse.pii.hmac_pads`."""
    return read_sql("create_pseudonyms").format(card_id=card_pseudonym_sql("card_number"))

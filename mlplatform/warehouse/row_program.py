"""A request's rows through ingestion and curation, in Python, as the warehouse does them.

The online path must refuse what ingestion quarantines and curate what it accepts exactly
as the warehouse does, in well under a millisecond. Running ingestion's SQL files in DuckDB
costs a few milliseconds of planning per statement, so :class:`RowProgram` runs the Python
twins of the same definitions: the typed values and rule kinds of
:mod:`~mlplatform.ingestion.row_rules` (each kind gives both the SQL ingestion runs and its
Python check), and the raw projection and curation of ``insert_raw_transactions.sql`` and
``curated_transactions.sql`` with the DuckDB functions of
:mod:`~mlplatform.ingestion.duckdb_functions` (the columns the features read). Values whose
conversion could differ from DuckDB's (see there; a request that repeats an id or an event)
raise :class:`~mlplatform.ingestion.duckdb_functions.NotPlain`, and the caller runs the SQL
files in DuckDB instead. Parity: ``tests/test_row_rules.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlplatform.contract import CANONICAL_COLUMNS, Contract
from mlplatform.features.declarations import COORDINATES, FeatureRegistry
from mlplatform.features.events import event_values
from mlplatform.ingestion.duckdb_functions import (
    NotPlain,
    category_name,
    collapsed_spaces,
    haversine_km,
    round_double,
    trim,
    upper,
)
from mlplatform.ingestion.row_rules import first_violation, rules, typed_values
from mlplatform.warehouse.pii import card_pseudonym

#: ``CASE upper(gender) WHEN ...`` of the curation.
_GENDERS = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}


class RowProgram:
    """Rules, pseudonymisation, raw projection, curation and event columns of online rows
    (the feature SQL's event columns by their Python twin,
    :func:`~mlplatform.features.events.event_values`)."""

    def __init__(
        self,
        contract: Contract,
        registry: FeatureRegistry,
        max_amount: float,
        pii_key: bytes,
    ) -> None:
        self._key = pii_key
        self._typed = typed_values(contract)
        self._rules = rules(contract, max_amount)
        self._registry = registry

    def run(
        self,
        transactions: Sequence[Mapping[str, Any]],
        reference: Mapping[str, tuple[Any, Any]],
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]], list[tuple[int, Any]]]:
        """``(violations, curated, times)``: (index, ``{'rule', 'column', 'detail'}``) of
        each row that breaks a rule; when none does, each row as a curated row plus its
        event columns (``event_us``, ``amount_exact`` ...; ``transaction_hash`` is the
        caller's: :func:`~mlplatform.ingestion.duckdb_functions.text_hash`); and (index,
        event time) of the rows that break none.
        ``reference`` maps a card pseudonym to its (credit limit, income band)."""
        checked = [self._check(i, t) for i, t in enumerate(transactions)]
        violations = [(i, row["violation"]) for i, row in enumerate(checked) if row["violation"]]
        times = [(i, row["event_time_ts"]) for i, row in enumerate(checked) if not row["violation"]]
        if violations:
            return violations, [], times
        ids = [row["transaction_id"] for row in checked]
        if len(set(ids)) < len(ids):
            raise NotPlain("a transaction id repeated in the request")  # flag_duplicate_ids.sql
        curated = []
        for row in checked:
            out = curated_row(row, card_pseudonym(row["card_number"], self._key), reference)
            out.update(event_values(self._registry, out))
            curated.append(out)
        events = {(r["card_id"], r["event_time"], r["amount"], r["merchant"]) for r in curated}
        if len(events) < len(curated):
            raise NotPlain("an event repeated in the request")  # curation keeps one of them
        return [], curated, times

    def _check(self, index: int, transaction: Mapping[str, Any]) -> dict[str, Any]:
        """The staged row (text as a landing file holds it) with its typed values and the
        rule it breaks (``violation``, or None)."""
        row: dict[str, Any] = {"file_id": 0, "file": "online", "row_idx": index, "line": index + 1}
        for name in CANONICAL_COLUMNS:  # staged as ingestion stages: nullif(trim(text), '')
            text = request_text(transaction.get(name))
            row[name] = None if text is None else trim(text) or None
        for typed in self._typed:
            row[typed.name] = typed.value(row)
        moment = row["event_time_ts"]
        row["partition_date"] = moment.date() if moment is not None else None
        row["violation"] = first_violation(self._rules, row)
        return row


def curated_row(
    checked: Mapping[str, Any], card_id: str, reference: Mapping[str, tuple[Any, Any]]
) -> dict[str, Any]:
    """The curated row (the columns the features read, and ``rowid`` 0) of a checked row
    that breaks no rule: ``insert_raw_transactions.sql`` then ``curated_transactions.sql``,
    in Python. ``reference`` maps a card pseudonym to its (credit limit, income band)."""
    moment = checked["event_time_ts"]
    coordinates = [checked[f"{name}_num"] for name in COORDINATES]
    birth_year, label, gender = checked["birth_year_num"], checked["label_num"], checked["gender"]
    credit_limit, income_band = reference.get(card_id, (None, None))
    return {
        "transaction_id": checked["transaction_id"],
        "event_time": moment,
        "partition_date": checked["partition_date"],
        "card_id": card_id,
        "merchant": collapsed_spaces(checked["merchant"]),
        "category": category_name(checked["category"]),
        "amount": round_double(checked["amount_num"], 2),
        "gender": None if gender is None else _GENDERS.get(upper(gender)),
        "city_pop": checked["city_pop_num"],
        "age": None if birth_year is None else moment.year - birth_year,
        **{name: round_double(c, 6) for name, c in zip(COORDINATES, coordinates, strict=True)},
        "home_merchant_km": haversine_km(*coordinates),
        "label": None if label is None else round(label),  # CAST(DOUBLE AS INTEGER): half even
        "credit_limit": credit_limit,
        "income_band": income_band,
        "hour": moment.hour,
        "weekday": moment.isoweekday(),
        "is_weekend": moment.isoweekday() >= 6,
        "rowid": 0,
    }


def request_text(value: Any) -> str | None:
    """A request's value as the text a landing file would hold (numbers as Python writes
    them; None stays None)."""
    if value is None or isinstance(value, str):
        return value
    return repr(value)

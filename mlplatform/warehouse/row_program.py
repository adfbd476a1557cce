"""A request's rows through ingestion and curation, compiled to Python from their SQL.

The online path must refuse what ingestion quarantines and curate what it accepts exactly
as the warehouse does, in well under a millisecond. Running ingestion's SQL files in DuckDB
costs a few milliseconds of planning per statement, so :class:`RowProgram` compiles the
very same SQL (the row rules of :mod:`~mlplatform.ingestion.row_rules`, the select lists of
``insert_raw_transactions.sql`` and ``curated_transactions.sql``) with
:mod:`~mlplatform.warehouse.sql_expressions`; the feature SQL's event columns come from
their Python twin (:func:`~mlplatform.features.events.event_values`). Values whose conversion
could differ from DuckDB's (anything but plain ASCII text and plain decimals; a request that
repeats an id or an event) raise :class:`~mlplatform.warehouse.sql_expressions.NotPlain`,
and the caller runs the SQL files in DuckDB instead.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb

from mlplatform.contract import CANONICAL_COLUMNS, Contract
from mlplatform.features.declarations import FeatureRegistry
from mlplatform.features.events import event_values
from mlplatform.ingestion.row_rules import typed_column_list, violation
from mlplatform.warehouse.connection import read_sql
from mlplatform.warehouse.pii import card_pseudonym
from mlplatform.warehouse.sql_expressions import ExpressionCompiler, NotPlain, cast_value

_INSERT = re.compile(r"^.*?INSERT INTO \S+\s*", re.S)


class RowProgram:
    """Rules, pseudonymisation, raw projection, curation and event columns of online rows.

    ``conn`` holds the warehouse schema (its tables' column types are the casts applied on
    insert) and parses the SQL.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        contract: Contract,
        registry: FeatureRegistry,
        max_amount: float,
        pii_key: bytes,
    ) -> None:
        compiler = ExpressionCompiler(conn, read_sql("macros"))
        self._key = pii_key
        self._typed = [(name, compiler.compile(sql)) for name, sql in typed_column_list(contract)]
        self._violation = compiler.compile(violation(contract, max_amount))
        self._raw = _bound(conn, "raw.transactions", compiler, read_sql("insert_raw_transactions"))
        self._curated = _bound(
            conn, "curated.transactions", compiler, read_sql("curated_transactions")
        )
        self._registry = registry
        self._format = contract.event_time_format

    def run(
        self,
        transactions: Sequence[Mapping[str, Any]],
        reference: Mapping[str, tuple[Any, Any]],
        ingested_at: datetime,
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]], list[tuple[int, Any]]]:
        """``(violations, curated, times)``: (index, ``{'rule', 'column', 'detail'}``) of
        each row that breaks a rule; when none does, each row as a curated row plus its
        event columns (``event_us``, ``amount_exact`` ...; no ``transaction_hash``: that is
        DuckDB's hash); and (index, event time) of the rows that break none.
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
            row["card_id"] = card_pseudonym(row["card_number"], self._key)
            row["$ingested_at"] = ingested_at
            raw = {name: cast_value(f(row), t) for name, t, f in self._raw}
            raw["credit_limit"], raw["income_band"] = reference.get(raw["card_id"], (None, None))
            out = {name: cast_value(f(raw), t) for name, t, f in self._curated}
            # hash() is DuckDB's own: the caller asks DuckDB for the transaction hashes
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
        for name in CANONICAL_COLUMNS:
            text = request_text(transaction.get(name))
            if text is not None and not _trimmed(text):
                raise NotPlain(f"{name}: text with spaces or symbols around it")
            row[name] = text or None
        for name, compute in self._typed:
            row[name] = compute(row)
        moment = row["event_time_ts"]
        row["partition_date"] = moment.date() if moment is not None else None
        row["violation"] = self._violation(row)
        return row


def _trimmed(text: str) -> bool:
    """Whether DuckDB's trim() leaves ``text`` as it is: no ASCII space at either end, and
    an end that is not ASCII is a letter, digit or mark (trim() also removes Unicode spaces;
    other symbols are left to DuckDB)."""
    if text != text.strip(" "):
        return False
    return all(c.isascii() or unicodedata.category(c)[0] in "LNM" for c in (text[:1], text[-1:]))


def request_text(value: Any) -> str | None:
    """A request's value as the text a landing file would hold (numbers as Python writes
    them; None stays None)."""
    if value is None or isinstance(value, str):
        return value
    return repr(value)


def _bound(
    conn: duckdb.DuckDBPyConnection, table: str, compiler: ExpressionCompiler, insert: str
) -> list[tuple[str, str, Any]]:
    """(column, type, function) of an ``INSERT INTO table SELECT ...`` file: the select
    list compiled, matched by position with the table's columns."""
    columns = conn.execute(f"DESCRIBE {table}").fetchall()
    compiled = compiler.compile_select(_INSERT.sub("", insert, count=1))
    if len(compiled) != len(columns):
        raise ValueError(f"{table}: the INSERT selects {len(compiled)} of {len(columns)} columns")
    return [(c[0], c[1], f) for c, (_, f) in zip(columns, compiled, strict=True)]

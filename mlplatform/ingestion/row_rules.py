"""The row rules of landing data: one definition, used by ingestion and the online path.

A row is typed (:func:`typed_columns`) and checked (:func:`violation`: a CASE naming the
first rule it breaks, with the column and a detail) by SQL generated from the contract.
Ingestion runs it over a batch of staged files (``check_rows.sql``); the REST service runs
the very same SQL over the transactions of a request, so a transaction that ingestion would
quarantine is refused online with the same rule.
"""

from __future__ import annotations

from mlplatform.contract import CANONICAL_COLUMNS, REQUIRED_COLUMNS, Contract
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


def typed_column_list(contract: Contract) -> list[tuple[str, str]]:
    """(name, SQL) of the typed values of a staged row ``b``: ``event_time_ts`` (UTC),
    ``birth_year_num`` and ``<name>_num`` of the numeric columns; with a ``timezone``, also
    ``event_time_local`` (the source's local time, whose day is the partition's).

    An expression's event time is its value as a timestamp (``event_time_format`` is for
    text read one to one)."""
    birth = "try_strptime(b.birth_date, '%Y-%m-%d')"
    if "event_time" in contract.expressions:
        event_time = "TRY_CAST(b.event_time AS TIMESTAMP)"
    else:
        event_time = f"try_strptime(b.event_time, {sql_literal(contract.event_time_format)})"
    parts = []
    if contract.timezone:
        parts.append(("event_time_local", event_time))
        event_time = f"timezone('UTC', timezone({sql_literal(contract.timezone)}, {event_time}))"
    parts += [
        ("event_time_ts", event_time),
        ("birth_year_num", f"year({birth})::INTEGER"),
    ]
    for name, sql_type in NUMERIC_COLUMNS.items():
        parts.append((f"{name}_num", f"TRY_CAST(b.{name} AS {sql_type})"))
    return parts


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


def violation(contract: Contract, max_amount: float) -> str:
    """CASE naming the first rule a row breaks (rules in priority order), else NULL."""
    fmt = contract.event_time_format

    def rule(condition: str, name: str, column: str, detail: str) -> str:
        return (
            f"WHEN {condition} THEN {{'rule': '{name}', 'column': '{column}', 'detail': {detail}}}"
        )

    def quoted(column: str) -> str:
        return f"'value ''' || {column} || ''''"

    whens = [  # an expression without a value from a row with values: it failed on them
        rule(
            f"{name} IS NULL AND {name}_inputs",
            "expression_failed",
            name,
            sql_literal(f"`columns.{name}` gave no value (an error or NULL) on this row"),
        )
        for name in contract.expressions
        if name not in HIDDEN_COLUMNS
    ]
    whens += [
        rule(f"{name} IS NULL", "missing_required_field", name, "'empty or absent'")
        for name in REQUIRED_COLUMNS
        if not (name == "transaction_id" and contract.generated_id)  # generated after checks
    ]
    if "event_time" in contract.expressions:
        expected = "' is not a timestamp'"
    else:
        expected = f"' does not match ' || {sql_literal(fmt)}"
    local = "event_time_local" if contract.timezone else "event_time_ts"
    whens += [
        rule(
            "event_time_ts IS NULL",
            "unparsable_timestamp",
            "event_time",
            f"{quoted('event_time')} || {expected}",
        ),
        rule(
            "amount_num IS NULL OR NOT isfinite(amount_num)",
            "unparsable_amount",
            "amount",
            f"{quoted('amount')} || ' is not a number'",
        ),
        rule("amount_num <= 0", "non_positive_amount", "amount", f"{quoted('amount')} || ' <= 0'"),
        rule(
            f"amount_num > {max_amount}",
            "amount_above_maximum",
            "amount",
            f"{quoted('amount')} || ' > {max_amount}'",
        ),
        rule(
            f"CAST({local} AS DATE) <> partition_date",
            "outside_partition_day",
            "event_time",
            f"{quoted('event_time')} || ' is not on ' || partition_date",
        ),
    ]
    for name in NUMERIC_COLUMNS:
        if name == "amount" or not contract.has(name):
            continue
        low, high = RANGES.get(name, (None, None))
        bad = f"({name} IS NOT NULL AND {name}_num IS NULL)"
        if low is not None:
            bad += f" OR {name}_num < {low}"
        if high is not None:
            bad += f" OR {name}_num > {high}"
        if name == "label":
            bad += " OR label_num NOT IN (0, 1)"
        whens.append(rule(bad, "invalid_value", name, f"{quoted(name)} || ' is out of range'"))
    if contract.has("birth_date"):
        whens.append(
            rule(
                "birth_date IS NOT NULL AND birth_year_num IS NULL",
                "invalid_value",
                "birth_date",
                "'not a YYYY-MM-DD date'",
            )
        )
    return "CASE\n        " + "\n        ".join(whens) + "\n    END"


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

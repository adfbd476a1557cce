"""The row rules of landing data: one definition, used by ingestion and the online path.

A row is typed (:func:`typed_columns`) and checked (:func:`violation`: a CASE naming the
first rule it breaks, with the column and a detail) by SQL generated from the contract.
Ingestion runs it over a batch of staged files (``check_rows.sql``); the REST service runs
the very same SQL over the transactions of a request, so a transaction that ingestion would
quarantine is refused online with the same rule.
"""

from __future__ import annotations

from mlplatform.contract import REQUIRED_COLUMNS, Contract
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
#: Plausible ranges of numeric columns (inclusive; None: unbounded).
RANGES = {
    "home_lat": (-90, 90),
    "merchant_lat": (-90, 90),
    "home_long": (-180, 180),
    "merchant_long": (-180, 180),
    "city_pop": (0, None),
}


def typed_column_list(contract: Contract) -> list[tuple[str, str]]:
    """(name, SQL) of the typed values of a staged row ``b``: ``event_time_ts``,
    ``birth_year_num`` and ``<name>_num`` of the numeric columns."""
    birth = "try_strptime(b.birth_date, '%Y-%m-%d')"
    parts = [
        ("event_time_ts", f"try_strptime(b.event_time, {sql_literal(contract.event_time_format)})"),
        ("birth_year_num", f"year({birth})::INTEGER"),
    ]
    for name, sql_type in NUMERIC_COLUMNS.items():
        parts.append((f"{name}_num", f"TRY_CAST(b.{name} AS {sql_type})"))
    return parts


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

    whens = [
        rule(f"{name} IS NULL", "missing_required_field", name, "'empty or absent'")
        for name in REQUIRED_COLUMNS
    ]
    whens += [
        rule(
            "event_time_ts IS NULL",
            "unparsable_timestamp",
            "event_time",
            f"{quoted('event_time')} || ' does not match ' || {sql_literal(fmt)}",
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
            "CAST(event_time_ts AS DATE) <> partition_date",
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


def pseudonyms_sql() -> str:
    """CREATE of the temp table ``pseudonyms`` (card_number -> card_id) of the checked rows'
    card numbers; bind :func:`~mlplatform.warehouse.pii.hmac_pads`."""
    return read_sql("create_pseudonyms").format(card_id=card_pseudonym_sql("card_number"))

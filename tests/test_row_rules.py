"""Each row rule kind, typed value and curation function: its Python twin gives what its SQL
gives in DuckDB (the reference: ingestion runs it), on edge values, or says it cannot
(:class:`NotPlain`) where that is stated here."""

from __future__ import annotations

import dataclasses
import math
import operator
import random
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mlplatform.contract import CANONICAL_COLUMNS, Contract
from mlplatform.contract.expressions import Expression
from mlplatform.features.declarations import INPUT_COLUMNS, feature_registry
from mlplatform.ingestion.duckdb_functions import (
    NotPlain,
    category_name,
    collapsed_spaces,
    haversine_km,
    lower,
    round_double,
    text_hash,
    trim,
    try_cast_number,
    try_strptime,
    upper,
    utc_from_local,
)
from mlplatform.ingestion.row_rules import (
    first_violation,
    pseudonyms_sql,
    rules,
    typed_columns,
    typed_values,
    violation,
)
from mlplatform.settings import Settings
from mlplatform.warehouse.connection import read_sql, sql_literal
from mlplatform.warehouse.pii import card_pseudonym, hmac_pads
from mlplatform.warehouse.row_program import RowProgram

KEY = b"row-rules-key"
MAX_AMOUNT = 100_000.0
ONLINE = Contract(name="online", columns={c: c for c in CANONICAL_COLUMNS})
DAY = date(2024, 2, 29)
NUMBERS = [
    None, "", "0", "-0", "-1", "+5", " 5", "5 ", "\t5", "5\n", "1_000", "0x10", "0b11",
    "NaN", "nan", "-nan", "inf", "-inf", "+inf", "Infinity", "-infinity", "INF", "infin",
    "1e308", "1e309", "-1e309", "1e-400", "1.7976931348623159e308", "12345678901234567890",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "2147483648",
    "0.125", "1.005", "2.675", "123.4567891234", "5.5", "2.5", "-2.5", ".5", "1.", ".",
    "1e3", "1.5e2", "00012", "Zürich", "Ñandú", "東京", "Ålesund", "A\u030alesund", "\u0663",
    "\uff15",
    "\u00a05", "1,5", "1 000", "--5", "+-5", "abc", "nan(1)", "-90", "90", "90.0000001",
    "-180", "180.5", "1", "0.0", "1.0", "2", "99999.99", "100000", "100000.01",
]  # fmt: skip
TIMES = [
    None, "", "2024-02-29 10:00:00", "2025-02-29 10:00:00", "2024-02-30 10:00:00",
    "2024-13-01 00:00:00", "2024-00-10 00:00:00", "2024-02-29 24:00:00",
    "2024-02-29 23:60:00", "2024-02-29 23:59:60", "0000-01-01 00:00:00",
    "0001-01-01 00:00:00", "9999-12-31 23:59:59", "2024-2-29 1:2:3", " 2024-02-29 10:00:00",
    "2024-02-29 10:00:00 ", "2024-02-29T10:00:00", "2024-02-29 10:00:00.5",
    "2024-02-29 10:00", "2024-02-29", "12024-02-29 10:00:00", "+2024-02-29 10:00:00",
    "2024-02-28 23:59:59", "2024-03-01 00:00:00", "yesterday", "Zürich", "東京",
]  # fmt: skip
TEXTS = [
    None, "", "a", "  a", "a  b", "a\tb", "a\nb", "a\rb", "a\x0bb", "a\x0cb", "a \x0c b",
    "a\u00a0\u00a0b", "Zürich", "Ñandú", "東京", "A\u030alesund", "Food-Dining", "food dining",
    "food_dining", "FOOD", "café", "a - b", "x\t\t",
]  # fmt: skip
DOUBLES = [
    0.0, -0.0, 0.125, 1.005, 2.675, -2.675, 0.5, -0.5, 1.5, 2.5, 0.49999999999999994,
    123.4567891234, 45.1234565, -73.9876545, 1e15 + 0.3, 1e308, -1e308, 5e-324,
    math.inf, -math.inf, math.nan, 99999.995, 100000.0,
]  # fmt: skip


@pytest.fixture(scope="module")
def conn() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute(read_sql("macros"))
    return conn


def _same(python: Any, duckdb_value: Any) -> bool:
    """Equal values of the same type, NaN equal to NaN and zeros told apart by sign."""
    if isinstance(python, float) and isinstance(duckdb_value, float):
        if math.isnan(python) or math.isnan(duckdb_value):
            return math.isnan(python) and math.isnan(duckdb_value)
        return python == duckdb_value and math.copysign(1, python) == math.copysign(1, duckdb_value)
    return type(python) is type(duckdb_value) and python == duckdb_value


def _python(function: Any, *args: Any) -> Any:
    """The Python twin's value, or NotPlain (the class) where it leaves the value to DuckDB."""
    try:
        return function(*args)
    except NotPlain:
        return NotPlain


def _column(conn: duckdb.DuckDBPyConnection, sql: str, values: list[Any], kind: str) -> list:
    """``sql`` (over the column ``v``) of each of ``values`` in DuckDB, in order."""
    rows = conn.execute(
        f"SELECT {sql} FROM (SELECT unnest($v::{kind}[]) AS v, generate_subscripts($v, 1) AS i)"
        " ORDER BY i",
        {"v": values},
    ).fetchall()
    return [r[0] for r in rows]


def _left_to_duckdb(texts: list[str], expected: list[Any], twin: Any, same: Any) -> set[str]:
    """The texts whose value ``twin`` (a one-argument function) leaves to DuckDB; for every
    other text, asserts ``same(python value, DuckDB's)``."""
    left = set()
    for text, want in zip(texts, expected, strict=True):
        got = _python(twin, text)
        if got is NotPlain:
            left.add(text)
        else:
            assert same(got, want), (text, got, want)
    return left


def test_trim_strips_exactly_the_characters_duckdb_strips(conn: duckdb.DuckDBPyConnection):
    codes = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    (stripped,) = conn.execute(
        "SELECT list(c ORDER BY c) FROM unnest($c) AS t(c) "
        "WHERE trim(chr(c) || 'a' || chr(c)) = 'a'",
        {"c": codes},
    ).fetchone()
    assert [c for c in codes if trim(chr(c) + "a" + chr(c)) == "a"] == stripped
    assert trim("\u3000 Zürich\u00a0") == "Zürich" and trim("\tx\n") == "\tx\n"


@pytest.mark.parametrize("function", [lower, upper])
def test_case_mapping_is_duckdbs_for_every_character_python_maps_to_one(
    conn: duckdb.DuckDBPyConnection, function: Any
):
    cased = [c for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF]
    assert all(function(chr(c)) == chr(c) for c in range(0x20000, 0x110000))  # no case there
    texts = [chr(c) for c in cased] + [
        "\u0391\u03a3", "\u03a3\u0391\u03a3 \u03a3", "Stra\u00dfe", "\u01c4x", "A\u030alesund",
        "Z\u00fcrich", "\u00d1and\u00fa", "\u6771\u4eac", "Caf\u00e9", "\u0130stanbul", "MALE",
    ]  # fmt: skip
    expected = _column(conn, f"{function.__name__}(v)", texts, "VARCHAR")
    several = _left_to_duckdb(texts, expected, function, operator.eq)
    assert len(several) < 120  # Python's full mappings to several characters ('\u00df': 'SS')
    assert ("\u0130" in several) is (function is lower)


@pytest.mark.parametrize("sql_type", ["DOUBLE", "BIGINT", "INTEGER"])
def test_text_to_number_is_duckdbs_try_cast(conn: duckdb.DuckDBPyConnection, sql_type: str):
    expected = _column(conn, f"TRY_CAST(v AS {sql_type})", NUMBERS, "VARCHAR")
    left_to_duckdb = _left_to_duckdb(
        NUMBERS, expected, lambda text: try_cast_number(text, sql_type), _same
    )
    # DuckDB's own readings of these are not reproduced (underscores, other bases, signs
    # after signs, exponents in integer text, NaN payloads).
    stated = {"1_000", "0x10", "0b11", "+-5", "--5", ".", "infin", "nan(1)"}
    if sql_type != "DOUBLE":
        stated |= {"1e308", "1e309", "-1e309", "1e-400", "1.7976931348623159e308", "1e3", "1.5e2"}
    assert left_to_duckdb == stated


@pytest.mark.parametrize("sql_type", ["DOUBLE", "BIGINT"])
def test_random_number_like_text_never_gets_another_value_than_duckdbs(
    conn: duckdb.DuckDBPyConnection, sql_type: str
):
    rng = random.Random(7)
    alphabet = "0123456789+-.eE_xnaifNIty \t()é"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(4000)]
    expected = _column(conn, f"TRY_CAST(v AS {sql_type})", texts, "VARCHAR")
    answered = 0
    for text, want in zip(texts, expected, strict=True):
        got = _python(try_cast_number, text, sql_type)
        if got is not NotPlain:
            answered += 1
            assert _same(got, want), (text, got, want)
    assert answered > len(texts) // 4  # not all left to DuckDB


DATES = [
    None, "", "2024-02-29", "2025-02-29", "2024-02-30", "2024-13-01", "0000-01-01",
    "0001-01-01", "9999-12-31", "2024-2-9", " 2024-02-29", "2024-02-29 ", "2024-02-29 10:00:00",
    "20240229", "yesterday", "Zürich", "1980-02-29", "1980-02-29T",
]  # fmt: skip
#: Text in another layout than the format's (spacing, digit counts, more or fewer fields)
#: and DuckDB's year 0 (1 BC): left to DuckDB.
LEFT_TO_DUCKDB = {
    "%Y-%m-%d %H:%M:%S": {
        "0000-01-01 00:00:00", "2024-2-29 1:2:3", " 2024-02-29 10:00:00", "2024-02-29 10:00",
        "2024-02-29 10:00:00 ", "2024-02-29 10:00:00.5", "2024-02-29", "12024-02-29 10:00:00",
        "+2024-02-29 10:00:00",
    },
    "%Y-%m-%d": {
        "0000-01-01", "2024-2-9", " 2024-02-29", "2024-02-29 ", "2024-02-29 10:00:00", "20240229",
    },
}  # fmt: skip


@pytest.mark.parametrize("fmt", list(LEFT_TO_DUCKDB))
def test_text_to_time_is_duckdbs_try_strptime(conn: duckdb.DuckDBPyConnection, fmt: str):
    texts = TIMES if " " in fmt else DATES
    expected = _column(conn, f"try_strptime(v, {sql_literal(fmt)})::VARCHAR", texts, "VARCHAR")
    left_to_duckdb = _left_to_duckdb(
        texts,
        expected,
        lambda text: try_strptime(text, fmt),
        lambda got, want: (None if got is None else str(got)) == want,
    )
    assert left_to_duckdb == LEFT_TO_DUCKDB[fmt]


@pytest.mark.parametrize("fmt", list(LEFT_TO_DUCKDB))
def test_random_changes_of_a_time_never_get_another_time_than_duckdbs(
    conn: duckdb.DuckDBPyConnection, fmt: str
):
    rng = random.Random(11)
    alphabet = "0123456789 -:.+T\tx\u00a0\u0663"
    base = "2024-02-29 23:59:58"[: 19 if " " in fmt else 10]
    texts = []
    for _ in range(3000):
        text = list(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            edit = rng.choice(("insert", "replace", "delete"))
            if edit == "delete" and at < len(text):
                del text[at]
            elif edit == "replace" and at < len(text):
                text[at] = rng.choice(alphabet)
            else:
                text.insert(at, rng.choice(alphabet))
        texts.append("".join(text))
    expected = _column(conn, f"try_strptime(v, {sql_literal(fmt)})::VARCHAR", texts, "VARCHAR")
    answered = 0
    for text, want in zip(texts, expected, strict=True):
        got = _python(try_strptime, text, fmt)
        if got is not NotPlain:
            answered += 1
            assert (None if got is None else str(got)) == want, (text, got, want)
    assert answered > len(texts) // 4  # not all left to DuckDB


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Paris", "Australia/Lord_Howe"])
def test_local_time_to_utc_is_duckdbs_timezone_also_where_clocks_change(
    conn: duckdb.DuckDBPyConnection, zone: str
):
    moments = [
        datetime(2025, month, day, hour, minute)
        for month, day in ((3, 9), (3, 30), (4, 6), (10, 5), (10, 26), (11, 2))
        for hour in range(0, 4)
        for minute in (0, 15, 30, 59)
    ] + [datetime(2024, 2, 29, 12), datetime(1950, 6, 1, 12), datetime(2100, 1, 1)]
    expected = _column(
        conn, f"timezone('UTC', timezone({sql_literal(zone)}, v))", moments, "TIMESTAMP"
    )
    assert [utc_from_local(m, zone) for m in moments] == expected
    assert utc_from_local(None, zone) is None


@pytest.mark.parametrize("digits", [0, 2, 6])
def test_round_is_duckdbs_round_of_a_double(conn: duckdb.DuckDBPyConnection, digits: int):
    # as text: a NaN parameter would arrive as NULL
    expected = _column(conn, f"round(v::DOUBLE, {digits})", list(map(repr, DOUBLES)), "VARCHAR")
    for value, want in zip(DOUBLES, expected, strict=True):
        assert _same(round_double(value, digits), want), (value, digits)
    assert round_double(None, 2) is None


def test_distance_is_the_haversine_km_macro(conn: duckdb.DuckDBPyConnection):
    rng = random.Random(3)
    points = [
        (0.0, 0.0, 0.0, 0.0),
        (90.0, 0.0, -90.0, 0.0),
        (10.5, 179.9, 10.5, -179.9),
        (40.7128, -74.006, 51.5074, -0.1278),
        (-33.8688, 151.2093, 35.6762, 139.6503),
    ]
    points += [
        (rng.uniform(-90, 90), rng.uniform(-180, 180), rng.uniform(-90, 90), rng.uniform(-180, 180))
        for _ in range(300)
    ]
    rows = conn.execute(
        "SELECT haversine_km(a, b, c, d) FROM (SELECT unnest($p) AS p, "
        "generate_subscripts($p, 1) AS i), LATERAL (SELECT p[1] AS a, p[2] AS b, p[3] AS c, "
        "p[4] AS d) ORDER BY i",
        {"p": [list(p) for p in points]},
    ).fetchall()
    for point, (want,) in zip(points, rows, strict=True):
        assert _same(haversine_km(*point), want), point
    assert haversine_km(None, 1.0, 2.0, 3.0) is None


def test_names_and_categories_are_curated_as_the_curation_sql_does(
    conn: duckdb.DuckDBPyConnection,
):
    merchant = _column(
        conn,
        r"CASE WHEN regexp_matches(v, '\s\s|[\t\n\r]') THEN regexp_replace(v, '\s+', ' ', 'g') "
        "ELSE v END",
        TEXTS,
        "VARCHAR",
    )
    assert [collapsed_spaces(t) for t in TEXTS] == merchant
    category = _column(
        conn,
        r"CASE WHEN regexp_matches(v, '[^a-z_]') THEN regexp_replace(lower(v), '[\s-]+', '_', "
        "'g') ELSE v END",
        TEXTS,
        "VARCHAR",
    )
    assert [category_name(t) for t in TEXTS] == category


def _staged(rows: list[dict[str, Any]], extra: dict[str, str]) -> tuple[str, list[Any]]:
    """A VALUES relation ``b`` of staged rows (canonical text columns, ``partition_date``,
    ``row_idx`` and ``extra`` columns with their SQL types)."""
    names = [*CANONICAL_COLUMNS, *extra]
    types = ["VARCHAR"] * len(CANONICAL_COLUMNS) + list(extra.values())
    columns = ", ".join(
        f"$r[i]['{n}']::{t} AS {n}" for n, t in zip(names, types, strict=True)
    )  # a list of structs: one parameter however many rows
    sql = (
        f"SELECT i - 1 AS row_idx, $day::DATE AS partition_date, {columns} "
        "FROM generate_series(1, len($r)) AS g(i)"
    )
    return sql, [{n: row.get(n) for n in names} for row in rows]


BASE = {
    "transaction_id": "t-1", "event_time": "2024-02-29 10:00:00", "card_number": "4111 1111",
    "merchant": "Shop", "category": "grocery_pos", "amount": "12.5", "gender": "F",
    "city_pop": "1000", "birth_date": "1980-02-29", "home_lat": "40.1", "home_long": "-73.2",
    "merchant_lat": "40.2", "merchant_long": "-73.1", "label": "0",
}  # fmt: skip
VARIANTS = (
    [{"amount": v} for v in NUMBERS]
    + [{"event_time": v} for v in TIMES]
    + [{c: v} for c in ("home_lat", "merchant_long", "city_pop", "label") for v in NUMBERS]
    + [{"birth_date": v} for v in [*TIMES, "2023-02-29", "1980-02-30", "1980-2-3"]]
    + [{c: None} for c in ("transaction_id", "card_number")]
)


def _contracts() -> dict[str, tuple[Contract, str]]:
    """Contracts whose rules differ, each with the text of its base row's event time."""
    expression = {"event_time": Expression("e", ("e",)), "amount": Expression("a", ("a",))}
    time = BASE["event_time"]
    return {
        "online": (ONLINE, time),
        "zoned": (dataclasses.replace(ONLINE, timezone="Europe/Paris"), time),
        "date only": (dataclasses.replace(ONLINE, event_time_format="%Y-%m-%d"), time[:10]),
        "few columns": (Contract(name="few", columns={c: c for c in BASE if c != "label"}), time),
        "expressions": (dataclasses.replace(ONLINE, expressions=expression), time),
    }


@pytest.mark.parametrize("name", list(_contracts()))
def test_each_rule_kind_and_typed_value_gives_duckdbs_verdict_and_detail(
    conn: duckdb.DuckDBPyConnection, name: str
):
    """Typed values compared where Python gives one; the rules (each alone, and the CASE
    of all in order) compared on the values DuckDB typed, whatever the contract."""
    contract, time = _contracts()[name]
    inputs = {f"{c}_inputs": "BOOLEAN" for c in contract.expressions}
    base = {**BASE, "event_time": time, **dict.fromkeys(inputs, True)}
    rows = [{**base, **variant} for variant in VARIANTS]
    rows += [{**base, "event_time": None, "amount": None, **dict.fromkeys(inputs, False)}]
    found = rules(contract, MAX_AMOUNT)
    typed = typed_values(contract)
    staged, parameter = _staged(rows, inputs)
    each = ", ".join(f"CASE {rule.sql()} END" for rule in found)
    result = conn.execute(
        f"""SELECT {", ".join(t.name for t in typed)}, {violation(contract, MAX_AMOUNT)}, {each}
            FROM (SELECT b.*, {typed_columns(contract)} FROM ({staged}) AS b) ORDER BY row_idx""",
        {"r": parameter, "day": DAY},
    ).fetchall()
    kinds = {type(rule).__name__ for rule in found}
    assert kinds >= {"Required", "ParsesAsTime", "ParsesAsNumber", "Positive", "Maximum"}
    typed_compared = rules_compared = 0
    for row, values in zip(parameter, result, strict=True):
        sql_typed, (sql_violation, *verdicts) = values[: len(typed)], values[len(typed) :]
        python = {**row, "partition_date": DAY}
        try:
            for value in typed:
                python[value.name] = value.value(python)
        except NotPlain:
            pass  # stated in the tests of the typed values above
        else:
            typed_compared += 1
            for value, want in zip(typed, sql_typed, strict=True):
                assert _same(python[value.name], want), (value.name, row)
        if any(isinstance(v, str) for v in sql_typed):
            continue  # DuckDB's time before the year 1, as text: no Python datetime
        rules_compared += 1
        checked = {**row, "partition_date": DAY}
        checked.update((t.name, v) for t, v in zip(typed, sql_typed, strict=True))
        assert first_violation(found, checked) == sql_violation, row
        assert [rule.check(checked) for rule in found] == verdicts, row
    assert rules_compared >= len(rows) - 2  # the event time and the birth date in year 0
    if not contract.expressions:  # an expression's time: DuckDB's (the online contract has none)
        assert typed_compared > len(rows) * 0.7
    broken = {v[len(typed)]["rule"] for v in result if v[len(typed)]}
    assert name != "online" or broken >= {
        "missing_required_field", "unparsable_timestamp", "unparsable_amount",
        "non_positive_amount", "amount_above_maximum", "outside_partition_day",
    }  # fmt: skip


def _duckdb_route(
    conn: duckdb.DuckDBPyConnection, transactions: list[dict[str, Any]], reference: dict
) -> list[dict[str, Any]]:
    """The transactions through ingestion's SQL files (rules, pseudonyms, raw, curation) in
    DuckDB, as the online path's DuckDB route runs them: the curated input columns."""
    conn.execute(read_sql("create_schema"))
    staged, parameter = _staged(transactions, {})
    trimmed = ", ".join(f"nullif(trim({c}), '') AS {c}" for c in CANONICAL_COLUMNS)
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE batch AS SELECT 0 AS file_id, 'online' AS file,
            row_idx, row_idx + 1 AS line, partition_date, {trimmed} FROM ({staged})""",
        {"r": parameter, "day": DAY},
    )
    conn.execute(
        read_sql("check_rows").format(
            typed_columns=typed_columns(ONLINE), violation=violation(ONLINE, MAX_AMOUNT)
        )
    )
    broken = conn.execute("SELECT count(*) FROM checked WHERE violation IS NOT NULL")
    assert broken.fetchone() == (0,)
    conn.execute(pseudonyms_sql(), hmac_pads(KEY))
    conn.execute("DELETE FROM raw.transactions; DELETE FROM curated.transactions")
    conn.execute("DELETE FROM raw.card_reference")
    for card, (limit, band) in reference.items():
        conn.execute(
            "INSERT INTO raw.card_reference VALUES (?, ?, ?, 'cards.csv', now())",
            [card, limit, band],
        )
    conn.execute(read_sql("insert_raw_transactions"), {"ingested_at": datetime(2024, 3, 1)})
    conn.execute(read_sql("curated_transactions"), {"days": [DAY], "first": DAY, "last": DAY})
    cursor = conn.execute(
        f"SELECT {', '.join(INPUT_COLUMNS)} FROM curated.transactions ORDER BY source_line"
    )
    return [dict(zip(INPUT_COLUMNS, row, strict=True)) for row in cursor.fetchall()]


def test_curated_rows_in_python_equal_the_curation_sqls_on_edge_values():
    values = {
        "merchant": [v for v in TEXTS if v],
        "category": [v for v in TEXTS if v],
        "amount": ["0.125", "1.005", "2.675", "123.4567891234", "99999.995", "+5", " 7 ", "1e3"],
        "gender": ["f", "Male", "FEMALE", "x", "", "m ", "\u0131", "F\u00e9male"],
        "city_pop": ["0", "+12", "00012", "9223372036854775807", "5.5", ""],
        "birth_date": ["1980-02-29", "2000-01-01", ""],
        "home_lat": ["45.1234565", "-89.9999995", "0.0000005", "-0", "90"],
        "merchant_long": ["179.9999995", "-180", "12.3456785", "1e-7"],
        "label": ["1", "0", "1.0", "-0", ""],
        "card_number": ["4111-1111 1111", "4111\u00a01111", "4111\x0b1111", "Zürich"],
    }
    transactions = []
    for column, texts in values.items():
        for text in texts:
            n = len(transactions)
            transactions.append(
                {**BASE, column: text, "transaction_id": f"t{n}",
                 "event_time": f"2024-02-29 {n // 60:02d}:{n % 60:02d}:00"}
            )  # fmt: skip
    reference = {card_pseudonym(BASE["card_number"], KEY): (5000.0, "middle")}
    conn = duckdb.connect()
    conn.execute(read_sql("macros"))
    registry = feature_registry(Settings(home=Path("/nonexistent")), ONLINE)
    program = RowProgram(ONLINE, registry, MAX_AMOUNT, KEY)
    violations, curated, _ = program.run(transactions, reference)
    assert violations == []
    expected = _duckdb_route(conn, transactions, reference)
    assert len(curated) == len(expected) == len(transactions)
    for python, sql in zip(curated, expected, strict=True):
        for column in INPUT_COLUMNS:
            assert _same(python[column], sql[column]), (column, python[column], sql[column])
        assert python["rowid"] == 0


def test_text_hash_is_duckdbs_hash_of_a_varchar(conn: duckdb.DuckDBPyConnection):
    """Every length around the 8-byte blocks and DuckDB's 12-byte inlined strings, ASCII and
    not (the hash orders same-microsecond events: a different one reorders them online)."""
    rng = random.Random(11)
    alphabet = "abcXYZ019-_ \u00e9\u00df\u6771\u4eac\U0001f600\u0301"
    texts = ["", "a", "de68d9b3dd6bbc882e420177ec4e706a", "\u00a0", *(
        "".join(rng.choice(alphabet) for _ in range(length))
        for length in [*range(1, 40), 64, 100, 1000] for _ in range(5)
    )]  # fmt: skip
    duckdbs = conn.execute("SELECT hash(t) FROM unnest($texts) AS u(t)", {"texts": texts})
    assert [h for (h,) in duckdbs.fetchall()] == [text_hash(t) for t in texts]

"""The SQL expression compiler reads DuckDB's own parse tree: each kind of constant and cast
gives the value DuckDB gives for the same expression."""

from decimal import Decimal

import duckdb
import pytest

from mlplatform.warehouse.connection import read_sql
from mlplatform.warehouse.sql_expressions import ExpressionCompiler, NotPlain

ROW = {"a": 3, "b": 2, "t": "x", "s": {"f": 7}}
EXPRESSIONS = [
    "1.5 + a",
    "-1.25",
    "12345678901234567890.123456",  # a 128-bit decimal
    "1234567890123456789012345678901234.5678",  # 38 digits: more than Python's default 28
    "123456789012345678901234",  # HUGEINT
    "-123456789012345678901234",
    "1e3",
    "true",
    "false",
    "NOT false AND true",
    "NULL",
    "CAST(a AS DECIMAL(12,2)) + 0.125",
    "CAST(a AS DOUBLE) / b",
    "TRY_CAST('12' AS BIGINT)",
    "CAST('yes' AS BOOLEAN)",
    "struct_pack(x := a, y := 1.25)",
    "(s).f",
    "-a",
    "CASE WHEN a > 2 THEN 'big' ELSE 'small' END",
    "t || 'y'",
    "a IN (1, 3)",
    "haversine_km(1.0, 2.0, 3.0, 4.0)",
]


@pytest.fixture(scope="module")
def conn() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute(read_sql("macros"))
    return conn


@pytest.mark.parametrize("sql", EXPRESSIONS)
def test_compiled_expression_gives_duckdbs_value(conn: duckdb.DuckDBPyConnection, sql: str):
    compiled = ExpressionCompiler(conn, read_sql("macros")).compile(sql)
    (expected,) = conn.execute(
        f"SELECT {sql} FROM (SELECT 3 AS a, 2 AS b, 'x' AS t, {{'f': 7}} AS s)"
    ).fetchone()
    value = compiled(ROW)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, Decimal):
        assert value.as_tuple().exponent == expected.as_tuple().exponent  # same scale


def test_text_that_is_no_boolean_word_goes_to_duckdb(conn: duckdb.DuckDBPyConnection):
    compiled = ExpressionCompiler(conn).compile("CAST(t AS BOOLEAN)")
    assert compiled({"t": "No"}) is False
    with pytest.raises(NotPlain):
        compiled({"t": "tr"})

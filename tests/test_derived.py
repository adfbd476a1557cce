"""The derived features' functions against the SQL they replaced, and the Python twins of the
feature SQL's event columns and casts against DuckDB, on edge values.

Each function gets its inputs as the offline engine gives them (DuckDB's ``CAST(... AS
DOUBLE)``, times as ``epoch_us``) and must give what the old SQL gave, to the bit, except
where a test named for it defines the semantic on purpose: a NULL (or NaN) input gives NULL;
a zero denominator gives NULL; time differences are taken on exact microseconds; distances
use numpy's trigonometry.
"""

from __future__ import annotations

import math
import random
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from mlplatform.contract import load_contract
from mlplatform.features import derived
from mlplatform.features.declarations import (
    Derived,
    Feature,
    UnsupportedAggregation,
    feature_registry,
)
from mlplatform.features.derived import derive, derive_row
from mlplatform.features.events import (
    as_double,
    decimal_of_double,
    epoch_micros,
    event_values,
)
from mlplatform.features.offline import event_columns
from mlplatform.features.online_state import aggregate_cast, events_table_ddl
from mlplatform.settings import DEFAULT_CONTRACT, Settings
from mlplatform.warehouse.connection import read_sql

SETTINGS = Settings(home=Path("/nonexistent"))
REGISTRY = feature_registry(SETTINGS, load_contract(DEFAULT_CONTRACT))
INCOMES = {band: float(income) for band, income in SETTINGS.income_band_monthly_income.items()}
T = datetime(2025, 6, 1, 12, 0, 0, 250_001)
BIG = 1.7976931348623157e300


def _time(column: str) -> str:
    return f"CAST(epoch_us({column}) AS DOUBLE)"


def _number(column: str) -> str:
    return f"CAST({column} AS DOUBLE)"


#: name: (function, dtype, columns (name SQL-type), the inputs as the offline engine reads
#: them, the old SQL, rows). Rows hold NULLs, zeros, negatives, very large values and many
#: decimals wherever the old SQL gave a value (not NaN or inf: see the tests below).
CASES: dict[str, tuple[Any, str, str, list[str], str, list[tuple]]] = {
    "is_night": (
        derived.is_night, "BOOLEAN", "hour TINYINT", [_number("hour")],
        "hour < 6 OR hour >= 22", [(0,), (5,), (6,), (21,), (22,), (23,), (None,)],
    ),
    "ratio": (
        derived.ratio, "DOUBLE", "a DOUBLE, b DOUBLE", [_number("a"), _number("b")],
        "a / nullif(b, 0)",
        [(1.0, 3.0), (None, 2.0), (1.0, None), (1.0, 0.0), (0.0, 0.0), (-3.5, 0.0),
         (-7.25, 2.5), (5.0, -0.0), (BIG, 1e-300), (1e-300, BIG), (0.123456789123, 3.3333333),
         (-0.0, -2.0)],
    ),
    "mean (a sum over a count)": (
        derived.ratio, "DOUBLE", "s DOUBLE, n BIGINT", [_number("s"), _number("n")], "s / n",
        [(10.0, 3), (-4.5, 2), (None, 1), (0.01, 7), (BIG, 3), (1234567.89, 99991)],
    ),
    "std_from_sums": (
        derived.std_from_sums, "DOUBLE", "sq DECIMAL(38,4), s DECIMAL(38,2), n HUGEINT",
        [_number("sq"), _number("s"), _number("n")],
        "sqrt(greatest(sq / n - pow(s / n, 2), 0))",
        [(Decimal("152.4157"), Decimal("12.35"), 1), (Decimal("1.0000"), Decimal("1.00"), 2),
         (Decimal("123456789.1234"), Decimal("12345.67"), 3),
         (Decimal("0.0001"), Decimal("0.01"), 1),
         (Decimal("99999999999999999999.9999"), Decimal("9999999999.99"), 1),
         (Decimal("2.0002"), Decimal("-0.02"), 5)],
    ),
    "zscore": (
        derived.zscore, "DOUBLE", "x DOUBLE, m DOUBLE, s DOUBLE",
        [_number("x"), _number("m"), _number("s")], "(x - m) / nullif(s, 0)",
        [(10.0, 4.0, 2.0), (4.0, 4.0, 0.0), (-1.5, 2.25, 0.125), (None, 1.0, 1.0),
         (1.0, None, 1.0), (1.0, 1.0, None), (1e200, -1e200, 1e-100), (3.3333, 1.1111, 0.7)],
    ),
    "speed_kmh": (
        derived.speed_kmh, "DOUBLE", "km DOUBLE, secs DOUBLE", [_number("km"), _number("secs")],
        "km / greatest(secs, 60) * 3600",
        [(10.0, 600.0), (10.0, 59.999), (0.0, 0.0), (None, 60.0), (12345.678, 1e9),
         (1e300, 60.0), (3.14159, 86400.5)],
    ),
    "daily_ratio": (
        derived.daily_ratio, "DOUBLE", "a DOUBLE, b DOUBLE, h DOUBLE",
        [_number("a"), _number("b"), _number("h")],
        "(a / least(14, greatest(h, 1))) / nullif(b / least(90, greatest(h, 1)), 0)",
        [(10.0, 90.0, 100.0), (10.0, 0.0, 30.0), (0.0, 5.0, 0.5), (7.77, 3.33, 13.999),
         (None, 1.0, 1.0), (-2.0, 4.0, 45.25), (1e300, 1e-300, 90.0)],
    ),
    "spend_to_income": (
        derived.spend_to_income(INCOMES), "DOUBLE", "s DOUBLE, band VARCHAR",
        [_number("s"), "band"],
        "s / (CASE band " + " ".join(f"WHEN '{b}' THEN {i!r}" for b, i in INCOMES.items())
        + " END)",
        [(1000.0, b) for b in INCOMES] + [(1000.0, "unknown"), (None, next(iter(INCOMES))),
                                          (5.0, None), (-12.34, next(iter(INCOMES)))],
    ),
    "minus_one": (
        derived.minus_one, "BIGINT", "c HUGEINT", [_number("c")], "c - 1",
        [(1,), (2,), (0,), (None,), (2**52,)],
    ),
    "is_zero": (
        derived.is_zero, "BOOLEAN", "v BIGINT", [_number("v")], "v = 0",
        [(0,), (1,), (-1,), (None,)],
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def conn() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute(read_sql("macros"))
    return connection


def _table(conn: duckdb.DuckDBPyConnection, columns: str, rows: list[tuple]) -> None:
    conn.execute(f"CREATE OR REPLACE TEMP TABLE t (i INTEGER, {columns})")
    conn.executemany(
        f"INSERT INTO t VALUES (?{', ?' * len(rows[0])})", [(i, *r) for i, r in enumerate(rows)]
    )


def _old_and_new(conn: duckdb.DuckDBPyConnection, case: str) -> tuple[list, list]:
    function, dtype, columns, inputs, sql, rows = CASES[case]
    _table(conn, columns, rows)
    old = [
        r[0] for r in conn.execute(f"SELECT CAST({sql} AS {dtype}) FROM t ORDER BY i").fetchall()
    ]
    read = conn.execute(f"SELECT {', '.join(inputs)} FROM t ORDER BY i").fetchnumpy()
    arrays = [_array(read[k]) for k in read]
    values, nulls = derive(function, arrays, dtype)
    return old, [
        None if null else v for v, null in zip(values.tolist(), nulls.tolist(), strict=True)
    ]


def _array(column: np.ndarray) -> np.ndarray:
    """A fetched column as the offline engine gives it to a function (NaN or None: NULL)."""
    if np.ma.isMaskedArray(column):
        fill = None if column.dtype == object else np.nan
        column = column.astype(object if fill is None else float).filled(fill)
    return column if column.dtype == object else column.astype(float)


@pytest.mark.parametrize("case", list(CASES))
def test_each_derived_function_gives_the_sql_it_replaced(conn, case: str) -> None:
    old, new = _old_and_new(conn, case)
    assert new == old
    assert [type(v) for v in new] == [type(v) for v in old]


@pytest.mark.parametrize("case", list(CASES))
def test_one_row_gives_what_the_same_row_among_many_gives(conn, case: str) -> None:
    """A request's row (``derive_row``: the edges in plain Python) and the offline batch
    (``derive``) agree on every edge value of each function, to the type."""
    function, dtype, _, inputs, _, rows = CASES[case]
    _, batch = _old_and_new(conn, case)
    names = [f"x{i}" for i in range(len(inputs))]
    feature = Feature(case, Derived(function, tuple(names)), dtype, case)
    read = conn.execute(f"SELECT {', '.join(inputs)} FROM t ORDER BY i").fetchnumpy()
    arrays = [_array(read[k]) for k in read]
    one_by_one = [
        derive_row([feature], {n: a[i] for n, a in zip(names, arrays, strict=True)})[case]
        for i in range(len(rows))
    ]
    assert one_by_one == batch
    assert [type(v) for v in one_by_one] == [type(v) for v in batch]


def test_a_feature_reads_the_one_before_it_in_one_row_as_in_many() -> None:
    """A derived feature's input may be one derived before it: typed (an integer read as
    its float, NULL as NaN) the same way in both paths."""
    first = Feature("n", Derived(derived.minus_one, ("c",)), "BIGINT", "")
    second = Feature("z", Derived(derived.is_zero, ("n",)), "BOOLEAN", "")
    third = Feature("r", Derived(derived.ratio, ("c", "n")), "DOUBLE", "")
    counts = [1.0, 2.0, math.nan, 0.0]
    batch = derived.derive_all([first, second, third], {"c": np.array(counts)})
    for i, count in enumerate(counts):
        row = derive_row([first, second, third], {"c": count})
        assert row == {k: None if nulls[i] else values.tolist()[i]
                       for k, (values, nulls) in batch.items()}  # fmt: skip
    assert derive_row([first, second, third], {"c": 1.0}) == {"n": 0, "z": True, "r": None}


def test_a_zero_denominator_gives_null_where_the_sql_gave_inf_or_nan(conn) -> None:
    """Deliberate: ``ratio`` returns NULL for every zero denominator (the old ``sum / count``
    and ``count / count`` had no nullif: x/0 was inf, 0/0 NaN)."""
    _table(conn, "s DOUBLE, n BIGINT", [(10.0, 0), (0.0, 0), (-1.0, 0)])
    old = [r[0] for r in conn.execute("SELECT s / n FROM t ORDER BY i").fetchall()]
    assert old[0] == math.inf and math.isnan(old[1]) and old[2] == -math.inf
    _, nulls = derive(derived.ratio, [np.array([10.0, 0.0, -1.0]), np.zeros(3)], "DOUBLE")
    assert nulls.all()


def test_a_null_or_nan_input_gives_null_even_where_the_sql_gave_a_value(conn) -> None:
    """Deliberate: one convention for NULL. ``greatest(NULL, 60)`` was 60 in SQL, so a
    distance over an unknown time had a speed; a NaN input gave NaN. Both are NULL now."""
    speed, std = conn.execute(
        "SELECT 10.0 / greatest(NULL, 60) * 3600, sqrt(greatest(NULL - pow(1.0, 2), 0))"
    ).fetchone()
    assert (speed, std) == (600.0, 0.0)
    _, nulls = derive(derived.speed_kmh, [np.array([10.0]), np.array([np.nan])], "DOUBLE")
    assert nulls.tolist() == [True]
    ones = np.ones(1)
    _, nulls = derive(derived.std_from_sums, [np.array([np.nan]), ones, ones], "DOUBLE")
    assert nulls.tolist() == [True]
    (nan,) = conn.execute("SELECT 'nan'::DOUBLE / nullif(2.0, 0)").fetchone()
    assert math.isnan(nan)
    _, nulls = derive(derived.ratio, [np.array([np.nan]), np.array([2.0])], "DOUBLE")
    assert nulls.tolist() == [True]
    # inf stays a value
    values, nulls = derive(derived.ratio, [np.array([math.inf]), np.array([2.0])], "DOUBLE")
    assert values.tolist() == [math.inf] and nulls.tolist() == [False]


TIMES = [
    (T, T),
    (T, datetime(2025, 6, 1, 11, 40, 0, 250_001)),
    (T, datetime(2025, 5, 31, 23, 59, 59, 999_999)),
    (T, datetime(2025, 3, 3, 12, 0, 0, 250_001)),  # exactly 90 days
    (T, datetime(2025, 3, 3, 12, 0, 0, 250_000)),  # a microsecond more
    (datetime(1969, 12, 31, 23, 59, 59, 1), datetime(1901, 1, 1, 0, 0, 0, 7)),
    (datetime(2255, 4, 11), datetime(2255, 4, 10, 23, 59, 59, 999_999)),  # 2**53 us: 2255
    (T, None),
]


def test_time_differences_are_exact_microseconds_rounded_once(conn) -> None:
    """Deliberate: days and seconds between two times are the exact microsecond difference
    divided once: the correctly rounded value. The old SQL subtracted two rounded ``epoch()``
    seconds (off by up to a few microseconds far from 1970)."""
    _table(conn, "t TIMESTAMP, p TIMESTAMP", TIMES)
    old = conn.execute(
        """SELECT (epoch(t) - epoch(p)) / 86400,
                  CASE WHEN p >= t - INTERVAL 90 DAYS THEN epoch(t) - epoch(p) END
           FROM t ORDER BY i"""
    ).fetchall()
    read = conn.execute(f"SELECT {_time('t')}, {_time('p')} FROM t ORDER BY i").fetchnumpy()
    now, previous = (_array(c) for c in read.values())
    days, day_nulls = derive(derived.days_between, [now, previous], "DOUBLE")
    seconds, second_nulls = derive(derived.seconds_since_previous, [now, previous], "DOUBLE")
    for i, (t, p) in enumerate(TIMES):
        if p is None:
            assert day_nulls[i] and second_nulls[i] and old[i] == (None, None)
            continue
        micros = epoch_micros(t) - epoch_micros(p)
        assert days[i] == float(Fraction(micros, 86_400_000_000))
        assert abs(days[i] - old[i][0]) < 4e-6 / 86_400
        if old[i][1] is None:  # more than 90 days before
            assert second_nulls[i]
        else:
            assert seconds[i] == float(Fraction(micros, 1_000_000))
            assert abs(seconds[i] - old[i][1]) < 4e-6


def test_distances_use_numpys_trigonometry_within_an_ulp_of_the_sql_macro(conn) -> None:
    """Deliberate: ``haversine_km`` runs numpy's sin, cos and arcsin (DuckDB's macro its C
    library's); they agree to ~1e-15 relative. Beyond 90 days, or without a previous event,
    there is no distance, as before."""
    rng = random.Random(7)
    rows = [(T, T.replace(hour=11), rng.uniform(-90, 90), rng.uniform(-180, 180),
             rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(200)]  # fmt: skip
    rows += [(T, T, 40.0, -74.0, 40.0, -74.0), (T, T, 0.0, 0.0, 0.0, 180.0),
             (T, T, 90.0, 0.0, -90.0, 0.0), (T, TIMES[4][1], 1.0, 1.0, 2.0, 2.0),
             (T, None, 1.0, 1.0, 2.0, 2.0), (T, T, None, 1.0, 2.0, 2.0)]  # fmt: skip
    _table(conn, "t TIMESTAMP, p TIMESTAMP, plat DOUBLE, plong DOUBLE, lat DOUBLE, long DOUBLE",
           rows)  # fmt: skip
    old = conn.execute(
        """SELECT CASE WHEN p >= t - INTERVAL 90 DAYS
                  THEN haversine_km(plat, plong, lat, long) END FROM t ORDER BY i"""
    ).fetchall()
    read = conn.execute(
        f"SELECT {_time('t')}, {_time('p')}, plat, plong, lat, long FROM t ORDER BY i"
    ).fetchnumpy()
    values, nulls = derive(derived.km_from_previous, [_array(c) for c in read.values()], "DOUBLE")
    for (expected,), value, null in zip(old, values.tolist(), nulls.tolist(), strict=True):
        assert null if expected is None else math.isclose(value, expected, rel_tol=1e-14)
    assert values[200] == 0.0 and nulls[-3:].tolist() == [True, True, True]


AMOUNTS = [0.005, 0.015, 1.005, 2.675, 0.125, 7.125, -7.125, 1.115, 8.345, 1e-9, 0.0, -0.0,
           123456.785, 99999999.995, 1234567890123.455, 9.99e15, 12.34,
           5e-3 * 3]  # fmt: skip


def test_double_to_decimal_rounds_as_duckdb_does(conn) -> None:
    """DuckDB multiplies by 10**scale as a double, then rounds half away from zero: not the
    double's exact value (2.675 is 2.67499999... and becomes 2.68)."""
    rng = random.Random(3)
    values = AMOUNTS + [round(rng.uniform(0, 5000), rng.randint(2, 9)) for _ in range(5000)]
    values += [rng.randint(1, 10**7) / 1000 + 0.0005 for _ in range(5000)]
    values += [rng.uniform(-1e9, 1e9) for _ in range(2000)]
    expected = conn.execute(
        "SELECT CAST(x AS DECIMAL(18, 2)) FROM unnest($v) t(x)", {"v": values}
    ).fetchall()
    for value, (want,) in zip(values, expected, strict=True):
        got = decimal_of_double(value, 2, 18)
        assert got == want and got.as_tuple().exponent == -2, value
    assert decimal_of_double(2.675, 2, 18) == Decimal("2.68")
    assert decimal_of_double(None, 2, 18) is None
    for beyond in (1e17, math.inf, math.nan):
        with pytest.raises(duckdb.Error):
            conn.execute("SELECT CAST(?::DOUBLE AS DECIMAL(18, 2))", [beyond]).fetchone()
        with pytest.raises(ValueError):
            decimal_of_double(beyond, 2, 18)


def test_decimal_to_double_is_duckdbs_cast(conn) -> None:
    """Every size of non-negative decimal (sums of amounts, of squares), and negative ones of
    up to 2**53 units (DuckDB's conversion of larger negative 128-bit values is its own)."""
    rng = random.Random(5)
    for scale, width in ((2, 38), (4, 38), (2, 18)):
        units = [rng.randint(0, 10**digits) for digits in range(1, width + 1) for _ in range(200)]
        units += [rng.randint(-(2**53), 0) for _ in range(2000)]
        units += [0, 1, -1, 5, 2**53, 2**53 + 1, 2**64]
        decimals = [Decimal(f"{n}E-{scale}") for n in units if len(str(abs(n))) <= width]
        expected = conn.execute(
            f"SELECT CAST(CAST(x AS DECIMAL({width}, {scale})) AS DOUBLE) FROM unnest($v) t(x)",
            {"v": [str(d) for d in decimals]},
        ).fetchall()
        for value, (want,) in zip(decimals, expected, strict=True):
            assert as_double(value) == want, value
    counts = [0, 1, 2**53 + 1, 2**64 + 3, 2**100 + 12345]
    expected = conn.execute("SELECT CAST(x::HUGEINT AS DOUBLE) FROM unnest($v) t(x)",
                            {"v": [str(c) for c in counts]}).fetchall()  # fmt: skip
    assert [as_double(c) for c in counts] == [e for (e,) in expected]
    assert as_double(None) is None and as_double(1.5) == 1.5


def test_epoch_micros_is_duckdbs_epoch_us(conn) -> None:
    times = [
        T,
        datetime(1970, 1, 1),
        datetime(1969, 12, 31, 23, 59, 59, 999_999),
        datetime(1900, 2, 28, 1, 2, 3, 4),
        datetime(2262, 4, 11, 23, 47, 16, 854_775),
    ]
    expected = conn.execute("SELECT epoch_us(x) FROM unnest($v) t(x)", {"v": times}).fetchall()
    assert [epoch_micros(t) for t in times] == [e for (e,) in expected]


def test_event_values_are_the_event_columns_sql(conn) -> None:
    """Every event column the windows read, of rows with awkward amounts and categories,
    from the Python twin and from :func:`event_columns` in DuckDB: equal values, equal
    decimal scales."""
    discretionary = SETTINGS.discretionary_categories[0]
    rows = []
    for i, (amount, category) in enumerate(
        [(a, discretionary) for a in AMOUNTS[:12]]
        + [(7.125, "grocery_pos"), (3.0, None), (1e-9, discretionary)]
    ):
        when = datetime(1969 + i % 3, 12, 31, 23, 59, 59, 999_999 - i)
        rows.append({
            "transaction_id": f"t{i}", "event_time": when, "partition_date": when.date(),
            "card_id": "c", "amount": amount, "category": category,
            "merchant_lat": None if i == 3 else 40.0 + i, "merchant_long": -74.25,
        })  # fmt: skip
    conn.execute(events_table_ddl("typed_events"))
    columns, marks = ", ".join(rows[0]), ", ".join("?" for _ in rows[0])
    conn.executemany(
        f"INSERT INTO typed_events ({columns}) VALUES ({marks})",
        [list(row.values()) for row in rows],
    )
    sql = event_columns(REGISTRY, "typed_events")
    fetched = conn.execute(f"SELECT * FROM ({sql}) ORDER BY transaction_id").fetchall()
    names = [d[0] for d in conn.description]
    for row, values in zip(sorted(rows, key=lambda r: r["transaction_id"]), fetched, strict=True):
        expected = dict(zip(names, values, strict=True))
        full = {**dict.fromkeys(expected), **row}
        for name, got in event_values(REGISTRY, full).items():
            assert got == expected[name] and type(got) is type(expected[name]), name
            if isinstance(got, Decimal):
                assert got.as_tuple().exponent == expected[name].as_tuple().exponent, name


def test_a_framed_aggregate_cast_with_no_python_twin_is_refused_naming_it() -> None:
    assert aggregate_cast("s", "DECIMAL(38,2)", "DOUBLE")(Decimal("0.10")) == 0.1
    assert aggregate_cast("n", "HUGEINT", "BIGINT")(3) == 3
    with pytest.raises(UnsupportedAggregation, match="card_x: no online CAST of TIMESTAMP AS"):
        aggregate_cast("card_x", "TIMESTAMP", "DOUBLE")

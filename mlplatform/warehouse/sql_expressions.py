"""SQL scalar expressions compiled to Python functions, with DuckDB's semantics.

The feature declarations are SQL. Planning even a one-row DuckDB query of them costs
milliseconds (the binder and optimiser walk every expression), which the online path cannot
pay per request. So the declarations' expressions are parsed by DuckDB itself
(``json_serialize_sql``) and compiled here to closures over a row (a dict of values), for
the subset of SQL they use: column references, constants, casts, arithmetic, comparisons,
AND/OR/NOT, IS [NOT] NULL, CASE, struct fields, the scalar functions in :data:`FUNCTIONS`
and the macros of ``macros.sql``. Anything else raises :class:`Unsupported`, and the caller
falls back to DuckDB. Values follow DuckDB: ``/`` is a float division (x/0 is infinite),
decimals are exact (:class:`~decimal.Decimal`) until they meet a double, NULL propagates.
Parity with DuckDB is tested on every feature (``tests/test_online.py``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import duckdb

from mlplatform.features.events import epoch_micros

Row = Mapping[str, Any]
Compiled = Callable[[Row], Any]

_MACRO = re.compile(
    r"CREATE OR REPLACE TEMP MACRO (\w+)\(([^)]*)\) AS\s+(.*?);\s*(?=CREATE|\Z)", re.S
)


class Unsupported(ValueError):
    """An expression this compiler does not evaluate (the caller uses DuckDB instead)."""


class NotPlain(ValueError):
    """A value whose conversion here might differ from DuckDB's (text that is not plain
    ASCII digits, an amount with more decimals than a rounding keeps...): the caller
    evaluates that input with DuckDB instead. The message says which kind of value, never
    the value (it may be personal data); the caller logs and counts it."""


_PLAIN_DOUBLE = re.compile(r"-?\d{1,12}(\.\d{1,8})?")
_PLAIN_INTEGER = re.compile(r"-?\d{1,15}")
_PLAIN_FORMATS = {
    "%Y-%m-%d %H:%M:%S": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"),
    "%Y-%m-%d": re.compile(r"\d{4}-\d{2}-\d{2}"),
}


def _regex_text(value: str) -> str:
    """Text without a vertical tab: where Python's ASCII classes and RE2's agree (both
    ASCII-only, any other character matched as itself, non-ASCII included)."""
    if "\x0b" in value:
        raise NotPlain("text with a vertical tab")
    return value


def _ascii_text(value: str) -> str:
    """ASCII text: case mapping beyond ASCII is DuckDB's own (utf8proc: upper('straße'))."""
    if not value.isascii():
        raise NotPlain("text that is not ASCII in lower() or upper()")
    return value


def _try_cast(value: Any, type_name: str) -> Any:
    """TRY_CAST of text to a number, for plain decimal text only."""
    if value is None:
        return None
    text = str(value)
    name = type_name.upper()
    if name == "DOUBLE" and _PLAIN_DOUBLE.fullmatch(text):
        return float(text)
    if name in ("BIGINT", "INTEGER") and _PLAIN_INTEGER.fullmatch(text):
        return int(text)
    raise NotPlain("a number that is not plain decimal text")


def _try_strptime(value: Any, fmt: str) -> datetime | None:
    if value is None:
        return None
    pattern = _PLAIN_FORMATS.get(fmt)
    if pattern is None or not pattern.fullmatch(value):
        raise NotPlain("a time that is not plain text of its format")
    try:
        return datetime.strptime(value, fmt)
    except ValueError as error:  # e.g. month 13: DuckDB decides what that is
        raise NotPlain("a time that is not a real date") from error


def _round(value: Any, digits: int = 0) -> Any:
    """round() of a value already at that precision (the only case evaluated here)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and math.isfinite(value) and float(f"{value:.{digits}f}") == value:
        return value
    raise NotPlain("a value with more decimals than the rounding keeps")


def _regexp_matches(value: Any, pattern: str) -> Any:
    return None if value is None else re.search(pattern, _regex_text(value), re.ASCII) is not None


def _regexp_replace(value: Any, pattern: str, replacement: str, options: str = "") -> Any:
    if value is None:
        return None
    if set(options) - {"g"}:
        raise NotPlain("regexp_replace options other than g")
    return re.sub(pattern, replacement, _regex_text(value), count=0 if "g" in options else 1,
                  flags=re.ASCII)  # fmt: skip


def _concat(a: Any, b: Any) -> Any:
    return None if a is None or b is None else f"{_text(a)}{_text(b)}"


def _text(value: Any) -> str:
    if isinstance(value, float):
        raise NotPlain("a double as text")  # DuckDB's shortest text of a double: not attempted
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _null_safe(function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return None if any(a is None for a in args) else function(*args)

    return call


def _float(value: Any) -> float:
    return float(value)


def _numeric(a: Any, b: Any) -> tuple[Any, Any]:
    """Operands in a common type: a double meets anything as a double (as in DuckDB)."""
    if isinstance(a, float) or isinstance(b, float):
        return float(a), float(b)
    return a, b


def _divide(a: Any, b: Any) -> float:
    a, b = float(a), float(b)
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


def _epoch(value: datetime) -> float:
    return epoch_micros(value) / 1_000_000


def _greatest(*args: Any) -> Any:
    values = [a for a in args if a is not None]
    return max(_common(values)) if values else None


def _least(*args: Any) -> Any:
    values = [a for a in args if a is not None]
    return min(_common(values)) if values else None


def _common(values: list[Any]) -> list[Any]:
    return [float(v) for v in values] if any(isinstance(v, float) for v in values) else values


#: Scalar functions by DuckDB name (NULL in, NULL out unless said otherwise).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": _null_safe(lambda x: math.sqrt(float(x)) if float(x) >= 0 else math.nan),
    "pow": _null_safe(lambda x, y: math.pow(float(x), float(y))),
    "power": _null_safe(lambda x, y: math.pow(float(x), float(y))),
    "sin": _null_safe(lambda x: math.sin(float(x))),
    "cos": _null_safe(lambda x: math.cos(float(x))),
    "asin": _null_safe(lambda x: math.asin(float(x))),
    "radians": _null_safe(lambda x: float(x) * (math.pi / 180.0)),
    "abs": _null_safe(abs),
    "epoch": _null_safe(_epoch),
    "epoch_us": _null_safe(epoch_micros),
    "hour": _null_safe(lambda t: t.hour),
    "isodow": _null_safe(lambda t: t.isoweekday()),
    "year": _null_safe(lambda t: t.year),
    "greatest": _greatest,
    "least": _least,
    "nullif": lambda a, b: None if a is not None and b is not None and a == b else a,
    "coalesce": lambda *args: next((a for a in args if a is not None), None),
    "isfinite": _null_safe(lambda x: math.isfinite(float(x))),
    "lower": _null_safe(lambda text: _ascii_text(text).lower()),
    "upper": _null_safe(lambda text: _ascii_text(text).upper()),
    "to_days": _null_safe(lambda n: timedelta(days=n)),
    "to_hours": _null_safe(lambda n: timedelta(hours=n)),
    "to_minutes": _null_safe(lambda n: timedelta(minutes=n)),
    "to_seconds": _null_safe(lambda n: timedelta(seconds=float(n))),
    "trunc": _null_safe(lambda x: math.trunc(x) if isinstance(x, float) else x),
    "try_strptime": _try_strptime,
    "round": _round,
    "regexp_matches": _regexp_matches,
    "regexp_replace": _regexp_replace,
    "||": _concat,
    "^@": _null_safe(lambda a, b: a.startswith(b)),
    "suffix": _null_safe(lambda a, b: a.endswith(b)),
}


def _plus(a: Any, b: Any) -> Any:
    if isinstance(a, datetime | date | timedelta) or isinstance(b, datetime | date | timedelta):
        return a + b
    a, b = _numeric(a, b)
    return a + b


def _minus(a: Any, b: Any) -> Any:
    if isinstance(a, date) and not isinstance(a, datetime) and isinstance(b, date):
        return (a - b).days  # DATE - DATE is a number of days
    if isinstance(a, datetime | date | timedelta):
        return a - b
    a, b = _numeric(a, b)
    return a - b


def _times(a: Any, b: Any) -> Any:
    a, b = _numeric(a, b)
    return a * b


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": _null_safe(_plus),
    "-": _null_safe(_minus),
    "*": _null_safe(_times),
    "/": _null_safe(_divide),
}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "COMPARE_EQUAL": lambda a, b: a == b,
    "COMPARE_NOTEQUAL": lambda a, b: a != b,
    "COMPARE_LESSTHAN": lambda a, b: a < b,
    "COMPARE_GREATERTHAN": lambda a, b: a > b,
    "COMPARE_LESSTHANOREQUALTO": lambda a, b: a <= b,
    "COMPARE_GREATERTHANOREQUALTO": lambda a, b: a >= b,
}


def cast_value(value: Any, type_name: str) -> Any:
    """DuckDB's CAST of a Python value (doubles to integers round half to even, decimals
    half away from zero)."""
    if value is None:
        return None
    name = type_name.upper()
    if name in ("DOUBLE", "FLOAT", "REAL"):
        return float(value)
    if name in ("BIGINT", "INTEGER", "TINYINT", "SMALLINT", "HUGEINT", "UBIGINT"):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise Unsupported(f"CAST of {value} AS {name}")
            return round(value)
        if isinstance(value, Decimal):
            return int(value.to_integral_value(rounding=ROUND_HALF_UP))
        return int(value)
    if name == "BOOLEAN":
        if isinstance(value, str):  # the literals true and false are CAST('t'/'f' AS BOOLEAN)
            return _boolean_text(value)
        return bool(value)
    if name == "VARCHAR":
        return _text(value)
    if name == "DATE":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str) and _PLAIN_FORMATS["%Y-%m-%d"].fullmatch(value):
            return date.fromisoformat(value)
        raise NotPlain("a date that is not plain text")
    if name == "TIMESTAMP" and isinstance(value, datetime):
        return value
    raise Unsupported(f"CAST AS {type_name}")


def _boolean_text(value: str) -> bool:
    """DuckDB's CAST of text to BOOLEAN (any case of its words; else NotPlain)."""
    word = value.lower()
    if word in ("t", "true", "1", "y", "yes"):
        return True
    if word in ("f", "false", "0", "n", "no"):
        return False
    raise NotPlain("text that is not one of DuckDB's boolean words")


def _cast_decimal(value: Any, scale: int) -> Decimal | None:
    """CAST AS DECIMAL(_, scale) of a value already at that precision (else NotPlain)."""
    if value is None:
        return None
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        exact = Decimal(value)
        if exact == exact.quantize(Decimal(1).scaleb(-scale)):
            return exact.quantize(Decimal(1).scaleb(-scale))
        raise NotPlain("a value with more decimals than the decimal type keeps")
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.{scale}f}"
        if float(text) == value:
            return Decimal(text)
    raise NotPlain("a value with more decimals than the decimal type keeps")


class ExpressionCompiler:
    """Compiles SQL expressions (text) to functions of a row, parsed by ``conn``.

    ``macros`` is the text of ``macros.sql``: its scalar macros are compiled too.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, macros: str = "") -> None:
        self._conn = conn
        self._macros: dict[str, tuple[list[str], dict[str, Any]]] = {}
        for name, params, body in _MACRO.findall(macros):
            self._macros[name] = ([p.strip() for p in params.split(",")], self._parse(body))

    def compile(self, sql: str) -> Compiled:
        """A function of a row (column name -> value) returning the expression's value."""
        return self._node(self._parse(sql), {})

    def compile_select(self, select: str) -> list[tuple[str, Compiled]]:
        """(alias, function) of each item of a SELECT statement's select list."""
        return [(item.get("alias", ""), self._node(item, {})) for item in self._select(select)]

    def _parse(self, sql: str) -> dict[str, Any]:
        return self._select(f"SELECT {sql}")[0]

    def _select(self, select: str) -> list[dict[str, Any]]:
        text = self._conn.execute("SELECT json_serialize_sql($q)", {"q": select})
        tree = json.loads(text.fetchone()[0])
        if tree.get("error"):
            raise Unsupported(f"{select[:80]}: {tree.get('error_message')}")
        return tree["statements"][0]["node"]["select_list"]

    def _node(self, node: dict[str, Any], bound: dict[str, Compiled]) -> Compiled:
        kind = node["class"]
        if kind == "COLUMN_REF":
            name = node["column_names"][-1]
            if name in bound:
                return bound[name]
            return lambda row: row[name]
        if kind == "CONSTANT":
            value = _constant(node["value"])
            return lambda row: value
        if kind == "CAST":
            child, cast_type = self._node(node["child"], bound), node["cast_type"]
            type_name = cast_type["id"]
            if node["try_cast"]:
                return lambda row: _try_cast(child(row), type_name)
            if type_name == "DECIMAL":
                scale = cast_type["type_info"]["scale"]
                return lambda row: _cast_decimal(child(row), scale)
            return lambda row: cast_value(child(row), type_name)
        if kind == "PARAMETER":
            name = "$" + node["identifier"]
            return lambda row: row[name]
        if kind == "COMPARISON":
            left, right = self._node(node["left"], bound), self._node(node["right"], bound)
            compare = _COMPARISONS.get(node["type"])
            if compare is None:
                raise Unsupported(node["type"])

            def comparison(row: Row) -> Any:
                a, b = left(row), right(row)
                if a is None or b is None:
                    return None
                a, b = _numeric(a, b) if _is_number(a) and _is_number(b) else (a, b)
                return compare(a, b)

            return comparison
        if kind == "CONJUNCTION":
            children = [self._node(c, bound) for c in node["children"]]
            return _conjunction(children, node["type"] == "CONJUNCTION_AND")
        if kind == "OPERATOR":
            return self._operator(node, bound)
        if kind == "CASE":
            return self._case(node, bound)
        if kind == "FUNCTION":
            return self._function(node, bound)
        raise Unsupported(kind)

    def _operator(self, node: dict[str, Any], bound: dict[str, Compiled]) -> Compiled:
        children = [self._node(c, bound) for c in node["children"]]
        kind = node["type"]
        if kind == "OPERATOR_IS_NULL":
            return lambda row: children[0](row) is None
        if kind == "OPERATOR_IS_NOT_NULL":
            return lambda row: children[0](row) is not None
        if kind == "OPERATOR_NOT":
            return lambda row: None if (v := children[0](row)) is None else not v
        if kind in ("COMPARE_IN", "COMPARE_NOT_IN"):
            value, *options = children
            inside = kind == "COMPARE_IN"

            def membership(row: Row) -> Any:
                v = value(row)
                return None if v is None else (v in {o(row) for o in options}) is inside

            return membership
        if kind == "STRUCT_EXTRACT":
            field = _constant(node["children"][1]["value"])
            return lambda row: None if (v := children[0](row)) is None else v.get(field)
        raise Unsupported(kind)

    def _case(self, node: dict[str, Any], bound: dict[str, Compiled]) -> Compiled:
        checks = [
            (self._node(c["when_expr"], bound), self._node(c["then_expr"], bound))
            for c in node["case_checks"]
        ]
        otherwise = self._node(node["else_expr"], bound)

        def case(row: Row) -> Any:
            for when, then in checks:
                if when(row):
                    return then(row)
            return otherwise(row)

        return case

    def _function(self, node: dict[str, Any], bound: dict[str, Compiled]) -> Compiled:
        name = node["function_name"]
        if name == "struct_pack":
            fields = [(a["alias"], self._node(a, bound)) for a in node["children"]]
            return lambda row: {field: value(row) for field, value in fields}
        arguments = [self._node(a, bound) for a in node["children"]]
        if node.get("is_operator") and name in _OPERATORS:
            if len(arguments) == 1 and name == "-":
                (child,) = arguments
                return lambda row: None if (v := child(row)) is None else -v
            left, right = arguments
            operator = _OPERATORS[name]
            return lambda row: operator(left(row), right(row))
        if name in self._macros:
            params, body = self._macros[name]
            compiled = self._node(body, dict(zip(params, arguments, strict=True)))
            return compiled
        function = FUNCTIONS.get(name)
        if function is None:
            raise Unsupported(f"function {name}")
        return lambda row: function(*(a(row) for a in arguments))


def _conjunction(children: list[Compiled], conjunction_and: bool) -> Compiled:
    def evaluate(row: Row) -> Any:
        unknown = False
        for child in children:
            value = child(row)
            if value is None:
                unknown = True
            elif bool(value) is not conjunction_and:
                return not conjunction_and
        return None if unknown else conjunction_and

    return evaluate


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _constant(value: dict[str, Any]) -> Any:
    """A parsed constant (``{'type': {'id': ...}, 'is_null': ..., 'value': ...}``) as a
    Python value (numbers with a point are exact decimals)."""
    if value["is_null"]:
        return None
    kind, raw = value["type"]["id"], value["value"]
    if kind in ("INTEGER", "BIGINT", "HUGEINT"):
        return _integer(raw)
    if kind == "DECIMAL":  # the unscaled integer: 1.5 is 15 at scale 1 (exact, any width)
        return Decimal(f"{_integer(raw)}E-{value['type']['type_info']['scale']}")
    if kind == "VARCHAR":
        return str(raw)
    if kind in ("DOUBLE", "FLOAT"):
        return float(raw)
    raise Unsupported(f"constant {value}")


def _integer(raw: int | dict[str, int]) -> int:
    """An integer constant: 128-bit ones (HUGEINT, wide decimals) come as upper and lower
    64-bit halves."""
    if isinstance(raw, dict):
        return raw["upper"] * 2**64 + raw["lower"]
    return int(raw)

"""Mapping expressions (``{sql: EXPRESSION}``): DuckDB expressions over a source's columns.

An expression is parsed by DuckDB itself (``json_serialize_sql``) to find the source columns
it reads, then bound over those columns as text (a zero-row relation of VARCHAR columns, as
a landing file stages them), so that a mapping DuckDB cannot run fails when the contract is
loaded, not on the first file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb


class ExpressionError(ValueError):
    """An expression DuckDB cannot parse or bind over the source's text columns."""


@dataclass(frozen=True)
class Expression:
    """A mapping expression and the source columns it reads (in the order it reads them)."""

    sql: str
    sources: tuple[str, ...]


def quote_identifier(name: str) -> str:
    """A column name as a SQL identifier (double-quoted, quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def text_relation(sources: tuple[str, ...] | list[str]) -> str:
    """A zero-row relation with these columns as VARCHAR (what an expression is bound on)."""
    columns = ", ".join(f"NULL::VARCHAR AS {quote_identifier(s)}" for s in sources) or "1 AS _"
    return f"(SELECT {columns} LIMIT 0)"


def parse_expression(sql: str, conn: duckdb.DuckDBPyConnection | None = None) -> Expression:
    """Parse and bind one expression; raises :class:`ExpressionError` saying why not."""
    conn = conn or duckdb.connect()
    text = conn.execute("SELECT json_serialize_sql($q)", {"q": f"SELECT ({sql})"}).fetchone()[0]
    tree = json.loads(text)
    if tree.get("error"):
        raise ExpressionError(f"DuckDB cannot parse {sql!r}: {tree.get('error_message')}")
    statements = tree["statements"]
    if len(statements) != 1 or len(statements[0]["node"]["select_list"]) != 1:
        raise ExpressionError(f"{sql!r} is not one expression")
    sources = tuple(dict.fromkeys(_column_refs(statements[0]["node"]["select_list"][0])))
    try:
        conn.execute(f"SELECT ({sql}) FROM {text_relation(sources)}")
    except duckdb.Error as error:
        first = str(error).strip().splitlines()[0]
        raise ExpressionError(
            f"DuckDB cannot bind {sql!r} over the source's columns (text): {first}"
        ) from error
    return Expression(sql, sources)


def _column_refs(node: Any) -> Iterator[str]:
    """The column names an expression's parse tree refers to (the first part of each)."""
    if isinstance(node, dict):
        if node.get("class") == "COLUMN_REF":
            yield node["column_names"][0]
            return
        for value in node.values():
            yield from _column_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _column_refs(value)

"""The registry's features compiled to per-card state, for scoring one transaction at a time.

Offline, DuckDB's window functions compute every feature of a range in one query. Online, a
query of that shape costs tens of milliseconds whatever the rows, so the same declarations
compile to two parts:

1. The declared aggregations (:class:`~mlplatform.features.declarations.Aggregation`:
   ``sum`` of ``amount_exact`` over the card's 30 days, the ``previous`` event, a daily
   window's ``count`` of labels ...) are evaluated in Python over each card's events held in
   memory (:class:`FeatureState`), exactly: decimals as scaled integers, the per-event inputs
   from the offline SQL itself (:func:`~mlplatform.features.offline.event_columns`), frames
   with the SQL's bounds (same-microsecond peers included, the sequence ordered by time and
   ``hash(transaction_id)``).
2. Every declared expression is then evaluated on those values, from the same SQL text as
   offline (:meth:`CompiledFeatures.features`, or DuckDB: :meth:`CompiledFeatures.projection_sql`).

So a feature is still declared once; parity with the offline table is tested to the bit.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from mlplatform.features.declarations import (
    INPUT_COLUMNS,
    KEY_COLUMNS,
    Feature,
    FeatureRegistry,
    Window,
)
from mlplatform.features.offline import event_columns
from mlplatform.warehouse.connection import read_sql, sql_literal
from mlplatform.warehouse.sql_expressions import ExpressionCompiler, Unsupported, epoch_micros

_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")
# The columns of an event record before its arguments (see FeatureState).
_HEAD = ("event_us", "transaction_hash", "transaction_id", "card_id", "category", "merchant")


@dataclass(frozen=True)
class Aggregate:
    """One window call of a declaration: ``function(argument)`` over ``window``."""

    name: str
    function: str
    argument: str
    window: Window
    sql_type: str


@dataclass(frozen=True)
class DailyPartial:
    """A daily window feature: per key and day ``function(argument)``, summed over days."""

    feature: Feature
    function: str
    argument: str
    sql_type: str


class CompiledFeatures:
    """The enabled features of ``registry`` as window aggregates plus one SQL projection.

    ``conn`` is any DuckDB connection: the aggregates' SQL types are read from it (the same
    expressions over an empty input), so the projection casts each value exactly as the
    offline query types it.
    """

    def __init__(self, registry: FeatureRegistry, conn: duckdb.DuckDBPyConnection) -> None:
        self.registry = registry
        framed = [f for f in registry.aggregations if not f.over.daily]
        partials = [f for f in registry.aggregations if f.over.daily]
        self.arguments = tuple(dict.fromkeys(f.aggregation.column for f in registry.aggregations))
        types = _sql_types(
            conn,
            registry,
            [f"{f.aggregation.call}({f.aggregation.column}) OVER ()" for f in framed]
            + list(self.arguments),
        )
        partial_types = _sql_types(
            conn, registry, [f"sum({f.aggregation.sql()}) OVER ()" for f in partials]
        )
        self.aggregates = tuple(
            Aggregate(f.name, f.aggregation.call, f.aggregation.column, f.over, types[i])
            for i, f in enumerate(framed)
        )
        self.daily = tuple(
            DailyPartial(f, f.aggregation.call, f.aggregation.column, partial_types[i])
            for i, f in enumerate(partials)
        )
        argument_types = types[len(framed) :]
        #: Decimal scale of each decimal argument: held as integers of 10**-scale.
        self.scales = {
            argument: int(match[2])
            for argument, sql_type in zip(self.arguments, argument_types, strict=True)
            if (match := _DECIMAL.fullmatch(sql_type))
        }
        #: Fields of each struct argument: fetched as columns (DuckDB's conversion of
        #: structs to Python is slow), put together again by :meth:`fetch_records`.
        self.struct_fields = {
            argument: _struct_fields(sql_type)
            for argument, sql_type in zip(self.arguments, argument_types, strict=True)
            if sql_type.startswith("STRUCT(")
        }
        #: Timestamp arguments: held as microseconds since 1970 (Python datetimes are slow
        #: to make by the hundred thousand), made datetimes again only as aggregate values.
        self.timestamps = {
            argument
            for argument, sql_type in zip(self.arguments, argument_types, strict=True)
            if sql_type == "TIMESTAMP"
        }
        self.windows = tuple(dict.fromkeys(a.window for a in self.aggregates))
        #: The features compiled to Python, or None with ``unsupported`` saying why (then
        #: every request's features are projected by DuckDB: a fallback that is logged and
        #: counted, see :class:`~mlplatform.serving.online.OnlineFeatures`).
        self.evaluators, self.unsupported = _evaluators(self, conn)

    def features(self, rows: Sequence[Mapping[str, Any]], values: Sequence[Sequence[Any]]):
        """The features of ``rows`` (input columns) given their aggregate ``values``, as
        dicts of the key columns and features: the declarations' SQL compiled to Python
        (:mod:`~mlplatform.warehouse.sql_expressions`); None when some expression is not
        supported there (then use :meth:`projection_sql`)."""
        if self.evaluators is None:
            return None
        names = [*(a.name for a in self.aggregates), *(p.feature.name for p in self.daily)]
        result = []
        for row, row_values in zip(rows, values, strict=True):
            env = {**row, **dict(zip(names, row_values[1:], strict=True))}
            for name, evaluate in self.evaluators:
                env[name] = evaluate(env)
            result.append({c: env[c] for c in (*KEY_COLUMNS, *self._outputs)})
        return result

    @property
    def _outputs(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.registry.enabled)

    def records_sql(self, source: str) -> str:
        """SELECT of the event records of ``source`` (a table with the input columns): the
        columns :class:`FeatureState` keeps, decimals scaled to integers, timestamps in
        microseconds, structs as one column per field."""
        columns = []
        for a in self.arguments:
            if a in self.scales:
                # BIGINT, not HUGEINT (1 s per column per 600k rows to read into Python): an
                # amount squared in 1/10000 fits while amounts stay below 3e7
                columns.append(f"CAST({a} * {10 ** self.scales[a]} AS BIGINT) AS {a}")
            elif a in self.struct_fields:
                columns += [
                    f"epoch_us(({a}).{f}) AS {a}__{f}"
                    if t == "TIMESTAMP"
                    else f"({a}).{f} AS {a}__{f}"
                    for f, t in self.struct_fields[a].items()
                ]
            elif a in self.timestamps:
                columns.append(f"{_held(a, True)} AS {a}")
            else:
                columns.append(a)
        return (
            f"SELECT {', '.join(_HEAD)}, event_day, {', '.join(columns)}\n"
            f"FROM ({event_columns(self.registry, source)})"
        )

    def fetch_records(
        self,
        conn: duckdb.DuckDBPyConnection,
        source: str,
        params: Mapping[str, Any] | None = None,
        order: str = "",
    ) -> list[tuple]:
        """The event records of ``source`` (see :meth:`records_sql`), in ``order``."""
        return conn.execute(self.records_sql(source) + order, params or {}).fetchall()

    def slots(self) -> dict[str, int]:
        """Where each argument starts in a record (a struct takes a slot per field)."""
        at, where = len(_HEAD) + 1, {}
        for a in self.arguments:
            where[a] = at
            at += len(self.struct_fields.get(a, ())) or 1
        return where

    def record(self, event: Mapping[str, Any], transaction_hash: int) -> tuple:
        """The event record of one row of event columns (as :meth:`records_sql` selects)."""
        arguments: list[Any] = []
        for a in self.arguments:
            if a in self.scales:
                arguments.append(int(Decimal(event[a]).scaleb(self.scales[a])))
            elif a in self.struct_fields:
                value = event[a] or {}
                arguments += [
                    _encoded(value.get(f), t == "TIMESTAMP")
                    for f, t in self.struct_fields[a].items()
                ]
            else:
                arguments.append(_encoded(event[a], a in self.timestamps))
        head = tuple(transaction_hash if c == "transaction_hash" else event[c] for c in _HEAD)
        return (*head, event["event_day"], *arguments)

    def partials_sql(self, source: str) -> str:
        """SELECT of the daily partials per key and day of the events of ``source``, with
        the declarations' own SQL (``count(label)`` ...)."""
        columns = ", ".join(
            f"{p.feature.aggregation.sql()} AS {p.feature.name}" for p in self.daily
        )
        keys = ", ".join(dict.fromkeys(k for p in self.daily for k in p.feature.over.partition_by))
        return (
            f"SELECT {keys}, event_day, {columns or 'NULL AS none'}\n"
            f"FROM ({event_columns(self.registry, source)}) GROUP BY ALL"
        )

    def projection_sql(self, rows: str, values: Sequence[Sequence[Any]]) -> str:
        """The features of the rows of ``rows`` (a relation with ``row_idx`` and the input
        columns) given each row's aggregate ``values`` (as :meth:`FeatureState.aggregates`
        returns them), computed by the declarations' SQL; ordered by ``row_idx``."""
        typed = [*(a.sql_type for a in self.aggregates), *(p.sql_type for p in self.daily)]
        names = [*(a.name for a in self.aggregates), *(p.feature.name for p in self.daily)]
        tuples = ", ".join(
            "(" + ", ".join([str(i), *map(_literal, row, typed)]) + ")"
            for i, row in zip((r[0] for r in values), (r[1:] for r in values), strict=True)
        )
        typed = ", ".join(
            f"CAST({a.name} AS {dtype}) AS {a.name}"
            for a in self.aggregates
            if (dtype := self.registry.by_name[a.name].dtype)
        )
        framed = f" REPLACE ({typed})" if typed else ""
        outputs = ",\n    ".join(
            f.name if f.over else f"CAST({f.expression()} AS {f.dtype}) AS {f.name}"
            for f in self.registry.enabled
        )
        return f"""WITH aggregates(row_idx, {", ".join(names)}) AS (VALUES {tuples}),
windowed AS (
    SELECT *{framed}
    FROM {rows} JOIN aggregates USING (row_idx)
)
SELECT row_idx, {", ".join(KEY_COLUMNS)},
    {outputs}
FROM windowed
ORDER BY row_idx"""


def _evaluators(
    compiled: CompiledFeatures, conn: duckdb.DuckDBPyConnection
) -> tuple[list[tuple[str, Any]] | None, str | None]:
    """(name, function) of each computed feature in evaluation order: the framed window
    features, then the expressions of the others, as the offline SELECT orders them; or
    None and the construct that does not compile."""
    compiler = ExpressionCompiler(conn, read_sql("macros"))
    registry = compiled.registry
    try:
        framed = [
            (a.name, compiler.compile(f"CAST({a.name} AS {dtype})"))
            for a in compiled.aggregates
            if (dtype := registry.by_name[a.name].dtype)
        ]
        derived = [
            (f.name, compiler.compile(f.expression())) for f in registry.enabled if not f.over
        ]
    except Unsupported as error:
        return None, str(error)
    return framed + derived, None


def _sql_types(
    conn: duckdb.DuckDBPyConnection, registry: FeatureRegistry, expressions: list[str]
) -> list[str]:
    """DuckDB's type of each expression over the feature SQL's event columns."""
    if not expressions:
        return []
    cursor = conn.cursor()
    try:
        cursor.execute(read_sql("macros"))
        schema = ", ".join(f"{name} {dtype}" for name, dtype in INPUT_COLUMNS.items())
        cursor.execute(f"CREATE OR REPLACE TEMP TABLE typing_input ({schema})")
        cursor.execute("INSERT INTO typing_input (transaction_id) VALUES ('typing')")
        columns = ", ".join(f"typeof({e})" for e in expressions)
        row = cursor.execute(
            f"SELECT {columns} FROM ({event_columns(registry, 'typing_input')})"
        ).fetchone()
        cursor.execute("DROP TABLE typing_input")
    finally:
        cursor.close()
    return [str(t).replace(", ", ",") if t.startswith("DECIMAL") else str(t) for t in row]


def _literal(value: Any, sql_type: str) -> str:
    """``value`` as an SQL expression of type ``sql_type`` (exactly: text casts)."""
    if value is None:
        return f"CAST(NULL AS {sql_type})"
    if isinstance(value, dict):
        fields = _struct_fields(sql_type)
        inner = ", ".join(
            f"{sql_literal(k)}: {_literal(value.get(k), t)}" for k, t in fields.items()
        )
        return f"CAST({{{inner}}} AS {sql_type})"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, datetime | date):
        text = value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    else:
        text = str(value)
    return f"CAST({sql_literal(text)} AS {sql_type})"


def _struct_fields(sql_type: str) -> dict[str, str]:
    """``STRUCT(a TIMESTAMP, b DOUBLE)`` -> ``{"a": "TIMESTAMP", "b": "DOUBLE"}``."""
    inner = sql_type[sql_type.index("(") + 1 : -1]
    return dict(part.strip().split(" ", 1) for part in inner.split(","))


class _Card:
    """One card's event records, ordered by (event time in microseconds, id hash)."""

    __slots__ = ("keys", "records", "times")

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []
        self.times: list[int] = []
        self.records: list[tuple] = []

    def insert(self, record: tuple) -> None:
        key = (record[0], record[1])
        at = bisect.bisect_right(self.keys, key)
        self.keys.insert(at, key)
        self.times.insert(at, record[0])
        self.records.insert(at, record)

    def remove(self, transaction_id: str) -> None:
        for at, record in enumerate(self.records):
            if record[2] == transaction_id:
                del self.keys[at], self.times[at], self.records[at]
                return


class FeatureState:
    """Every card's recent events and the daily partials of the keyed windows, in memory.

    Records are tuples of the columns of :meth:`CompiledFeatures.records_sql`: event time
    (microseconds), id hash, transaction id, card, category, merchant, event day, then the
    aggregates' arguments.
    """

    def __init__(self, compiled: CompiledFeatures) -> None:
        self.compiled = compiled
        self.cards: dict[str, _Card] = {}
        self.card_of: dict[str, str] = {}
        self.partials: dict[tuple, dict[int, list[Any]]] = {}
        self._argument = compiled.slots()
        self._columns = {
            **{c: i for i, c in enumerate(_HEAD)},
            "event_day": len(_HEAD),
            **self._argument,
        }

    def load(
        self,
        conn: duckdb.DuckDBPyConnection,
        source: str,
        params: Mapping[str, Any] | None = None,
    ) -> int:
        """Add the events of ``source`` (a table with the curated columns, optionally with a
        ``WHERE`` bound by ``params``) to the cards; how many. The daily partials are loaded
        apart (:meth:`load_partials`)."""
        records = self.compiled.fetch_records(
            conn, source, params, " ORDER BY card_id, event_us, transaction_hash"
        )
        for record in records:
            card = self.cards.get(record[3])
            if card is None:
                card = self.cards[record[3]] = _Card()
            card.keys.append((record[0], record[1]))
            card.times.append(record[0])
            card.records.append(record)
            self.card_of[record[2]] = record[3]
        return len(records)

    def load_partials(self, conn: duckdb.DuckDBPyConnection, source: str) -> None:
        """Set the daily partials (per key and day) from the events of ``source``."""
        if not self.compiled.daily:
            return
        width = len(self._partition_columns())
        for row in conn.execute(self.compiled.partials_sql(source)).fetchall():
            days = self.partials.setdefault(tuple(row[:width]), {})
            days[row[width]] = list(row[width + 1 :])

    def add(self, records: Iterable[tuple]) -> None:
        """Add new events (a transaction id already held is replaced)."""
        for record in records:
            self.remove([record[2]])
            card = self.cards.get(record[3])
            if card is None:
                card = self.cards[record[3]] = _Card()
            card.insert(record)
            self.card_of[record[2]] = record[3]
            for days in self._partial_days(record):
                values = days.setdefault(record[len(_HEAD)], [_zero(p) for p in self._daily])
                for i, partial in enumerate(self._daily):
                    argument = record[self._argument[partial.argument]]
                    values[i] = _accumulate(partial, values[i], argument)

    def remove(self, transaction_ids: Iterable[str]) -> None:
        """Forget events by transaction id (and their part in the daily partials)."""
        for transaction_id in transaction_ids:
            card_id = self.card_of.pop(transaction_id, None)
            if card_id is None:
                continue
            card = self.cards[card_id]
            record = next(r for r in card.records if r[2] == transaction_id)
            card.remove(transaction_id)
            for days in self._partial_days(record):
                values = days.get(record[len(_HEAD)])
                if values is not None:
                    for i, partial in enumerate(self._daily):
                        argument = record[self._argument[partial.argument]]
                        values[i] = _retract(partial, values[i], argument)

    def aggregates(self, records: Sequence[tuple]) -> list[list[Any]]:
        """The aggregate values of each new event of ``records`` (request order), over the
        held events plus all of ``records`` (an id held already is the new event's, not
        history). Each row: the record's position, then the values in the order of
        :meth:`CompiledFeatures.projection_sql`."""
        new_ids = {r[2] for r in records}
        by_card: dict[str, _Card] = {}
        for record in records:
            card = by_card.get(record[3])
            if card is None:
                card = by_card[record[3]] = _Card()
                held = self.cards.get(record[3])
                if held is not None:
                    kept = [i for i, r in enumerate(held.records) if r[2] not in new_ids]
                    card.keys = [held.keys[i] for i in kept]
                    card.times = [held.times[i] for i in kept]
                    card.records = [held.records[i] for i in kept]
            card.insert(record)
        rows = []
        for position, record in enumerate(records):
            card = by_card[record[3]]
            frames = {w: self._frame(card, record, w) for w in self.compiled.windows}
            rows.append(
                [position]
                + [self._evaluate(a, frames[a.window]) for a in self.compiled.aggregates]
                + [self._daily_value(i, p, record) for i, p in enumerate(self._daily)]
            )
        return rows

    @property
    def _daily(self) -> tuple[DailyPartial, ...]:
        return self.compiled.daily

    def _partition_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for p in self._daily for k in p.feature.over.partition_by))

    def _partial_days(self, record: tuple) -> list[dict[int, list[Any]]]:
        """The daily partials of the record's key (none when no daily window is on)."""
        if not self._daily:
            return []
        key = tuple(record[self._columns[c]] for c in self._partition_columns())
        return [self.partials.setdefault(key, {})]

    def _frame(self, card: _Card, record: tuple, window: Window) -> list[tuple]:
        """The records in ``window``'s frame of ``record`` (for a sequence: the previous)."""
        extra = [self._columns[c] for c in window.partition_by[1:]]
        if window.span is None:
            at = bisect.bisect_left(card.keys, (record[0], record[1]))
            for previous in reversed(card.records[:at]):
                if all(previous[i] == record[i] for i in extra):
                    return [previous]
            return []
        lower = record[0] - (window.span + window.end) // timedelta(microseconds=1)
        upper = record[0] - window.end // timedelta(microseconds=1)
        members = card.records[
            bisect.bisect_left(card.times, lower) : bisect.bisect_right(card.times, upper)
        ]
        if extra:
            members = [m for m in members if all(m[i] == record[i] for i in extra)]
        return members

    def _evaluate(self, aggregate: Aggregate, members: list[tuple]) -> Any:
        column = self._argument[aggregate.argument]
        if aggregate.function in ("first_value", "lag"):
            if not members:
                return None
            fields = self.compiled.struct_fields.get(aggregate.argument)
            if fields is not None:
                values = members[0][column : column + len(fields)]
                return {
                    f: _decoded(v, t == "TIMESTAMP")
                    for (f, t), v in zip(fields.items(), values, strict=True)
                }
            return _unscaled(self.compiled, aggregate.argument, members[0][column])
        values = [m[column] for m in members if m[column] is not None]
        if not values:
            return None
        total = sum(values) if aggregate.function == "sum" else max(values)
        return _unscaled(self.compiled, aggregate.argument, total)

    def _daily_value(self, index: int, partial: DailyPartial, record: tuple) -> int:
        window = partial.feature.over
        key = tuple(record[self._columns[c]] for c in window.partition_by)
        days = self.partials.get(key, {})
        first = record[len(_HEAD)] - (window.span + window.end).days
        last = record[len(_HEAD)] - window.end.days - 1
        total = 0
        for day in range(first, last + 1):
            values = days.get(day)
            if values is not None and values[index] is not None:
                total += values[index]
        return total


def _unscaled(compiled: CompiledFeatures, argument: str, value: Any) -> Any:
    """An aggregate's value from its held form (scaled decimal, timestamp microseconds)."""
    if value is None:
        return None
    scale = compiled.scales.get(argument)
    if scale is not None:
        return Decimal(value).scaleb(-scale)
    return _decoded(value, argument in compiled.timestamps)


_EPOCH = datetime(1970, 1, 1)


def _held(sql: str, timestamp: bool) -> str:
    return f"epoch_us({sql})" if timestamp else sql


def _encoded(value: Any, timestamp: bool) -> Any:
    return epoch_micros(value) if timestamp and value is not None else value


def _decoded(value: Any, timestamp: bool) -> Any:
    return _EPOCH + timedelta(microseconds=value) if timestamp and value is not None else value


def _zero(partial: DailyPartial) -> int | None:
    return 0 if partial.function == "count" else None


def _accumulate(partial: DailyPartial, total: Any, value: Any) -> Any:
    if partial.function == "count":
        return total + (value is not None)
    if value is None:
        return total
    return value if total is None else total + value


def _retract(partial: DailyPartial, total: Any, value: Any) -> Any:
    if partial.function == "count":
        return total - (value is not None)
    return total if value is None or total is None else total - value


def events_table_ddl(name: str) -> str:
    """CREATE of a temp table of curated-shaped events (the feature input columns)."""
    schema = ", ".join(f"{column} {dtype}" for column, dtype in INPUT_COLUMNS.items())
    return f"CREATE OR REPLACE TEMP TABLE {name} ({schema})"


def as_records(
    conn: duckdb.DuckDBPyConnection, compiled: CompiledFeatures, events: Iterable[Mapping]
) -> list[tuple]:
    """Event records of curated-shaped ``events`` (e.g. from a prediction log), in order."""
    rows = list(events)
    if not rows:
        return []
    cursor = conn.cursor()
    try:
        cursor.execute(events_table_ddl("logged_events"))
        placeholders = ", ".join("?" for _ in INPUT_COLUMNS)
        cursor.executemany(
            f"INSERT INTO logged_events VALUES ({placeholders})",
            [[row.get(c) for c in INPUT_COLUMNS] for row in rows],
        )
        return compiled.fetch_records(cursor, "logged_events")
    finally:
        cursor.close()

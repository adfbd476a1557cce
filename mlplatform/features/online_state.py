"""The registry's features compiled to per-card state, for scoring one transaction at a time.

Offline, DuckDB's window functions compute every feature of a range in one query. Online, a
query of that shape costs tens of milliseconds whatever the rows, so the same declarations
compile to two parts:

1. The declared aggregations (:class:`~mlplatform.features.declarations.Aggregation`:
   ``sum`` of ``amount_exact`` over the card's 30 days, the ``previous`` event, a daily
   window's ``count`` of labels ...) are evaluated in Python over each card's state
   (:class:`~mlplatform.features.card_state.CardState`: its events of the windows in day
   tiles with partial aggregates) and the merchants' daily partials (:class:`FeatureState`),
   exactly: decimals as scaled integers, the per-event inputs from the offline SQL itself
   (:func:`~mlplatform.features.offline.event_columns`) or its Python twin
   (:func:`~mlplatform.features.events.event_values`), frames with the SQL's bounds
   (same-microsecond peers included, the sequence ordered by time and
   ``hash(transaction_id)``), then typed as the offline SQL casts them
   (:func:`aggregate_cast`).
2. The derived features' functions (:mod:`~mlplatform.features.derived`) then run over
   those values, the same functions as offline (:meth:`CompiledFeatures.features`).

So a feature is still declared once; parity with the offline table is tested to the bit.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np

from mlplatform.features.card_state import (
    DAY_US,
    HASH,
    TIME,
    CardState,
    StateLayout,
    TileSpec,
    fold,
    merge,
)
from mlplatform.features.declarations import (
    INPUT_COLUMNS,
    KEY_COLUMNS,
    Feature,
    FeatureRegistry,
    UnsupportedAggregation,
    Window,
    struct_fields,
)
from mlplatform.features.derived import derive_all, derive_row
from mlplatform.features.events import as_double, epoch_micros
from mlplatform.features.offline import event_columns
from mlplatform.warehouse.connection import read_sql

_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")
# The columns of an event record before its arguments (see FeatureState).
_HEAD = ("event_us", "transaction_hash", "transaction_id", "card_id", "category", "merchant")
# The record columns a card's state keeps (the rest are the card's, or follow from the time):
# time, id hash, the second partition keys, then the arguments (after ``event_day``).
_KEPT_HEAD = ("event_us", "transaction_hash", "category", "merchant")
_KIND_OF_TYPE = {"TIMESTAMP": "int", "INTEGER": "int", "BIGINT": "int", "DOUBLE": "float",
                 "VARCHAR": "str"}  # fmt: skip


@dataclass(frozen=True)
class Aggregate:
    """One window call of a declaration: ``function(argument)`` over ``window``."""

    name: str
    function: str
    argument: str
    window: Window
    sql_type: str


@dataclass(frozen=True)
class Plan:
    """How a card's state answers one framed aggregate: the event column of its argument
    (``width`` columns for a struct), the second partition keys (event columns), the
    frame's bounds before the transaction (microseconds; span None: the sequence) and the
    tile partial it reads (``sum``/``max``)."""

    function: str
    column: int
    width: int
    keys: tuple[int, ...]
    span_us: int | None
    end_us: int
    spec: int | None


@dataclass(frozen=True)
class DailyPartial:
    """A daily window feature: per key and day ``function(argument)``, summed over days."""

    feature: Feature
    function: str
    argument: str
    sql_type: str


class CompiledFeatures:
    """The enabled features of ``registry`` as window aggregates plus derived functions.

    ``conn`` is any DuckDB connection: the aggregates' SQL types are read from it (the same
    expressions over an empty input), so each value is held and typed exactly as the
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
            argument: struct_fields(sql_type)
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
        self.layout, self.plans = _state_layout(
            self, dict(zip(self.arguments, argument_types, strict=True))
        )
        #: The framed aggregates typed to their features' dtypes, in Python.
        self._casts = tuple(
            (a.name, aggregate_cast(a.name, a.sql_type, dtype))
            for a in self.aggregates
            if (dtype := registry.by_name[a.name].dtype)
        )
        self._inputs = registry.derived_inputs()
        self._derived = tuple(f for f in registry.enabled if f.derive)
        self._outputs = (*KEY_COLUMNS, *(f.name for f in registry.enabled))

    def features(
        self, rows: Sequence[Mapping[str, Any]], values: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        """The features of ``rows`` (input columns) given their aggregate ``values`` (as
        :meth:`FeatureState.aggregates` returns them), as dicts of the key columns and
        features: the framed aggregates typed (:func:`aggregate_cast`), then the derived
        features' functions over the rows' arrays, as offline."""
        names = [*(a.name for a in self.aggregates), *(p.feature.name for p in self.daily)]
        envs = []
        for row, row_values in zip(rows, values, strict=True):
            env = {**row, **dict(zip(names, row_values[1:], strict=True))}
            for name, cast in self._casts:
                env[name] = cast(env[name])
            envs.append(env)
        if len(envs) == 1:  # a request's transaction
            (env,) = envs
            inputs = {name: _input_value(env, name, kind) for name, kind in self._inputs.items()}
            env.update(derive_row(self._derived, inputs))
            return [{c: env[c] for c in self._outputs}]
        columns = {
            name: _input_array([_input_value(env, name, kind) for env in envs], kind)
            for name, kind in self._inputs.items()
        }
        for name, (derived, nulls) in derive_all(self._derived, columns).items():
            for env, value, null in zip(envs, derived.tolist(), nulls.tolist(), strict=True):
                env[name] = None if null else value
        return [{c: env[c] for c in self._outputs} for env in envs]

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


def _state_layout(
    compiled: CompiledFeatures, argument_types: Mapping[str, str]
) -> tuple[StateLayout, tuple[Plan, ...]]:
    """The events a card's state keeps (:data:`_KEPT_HEAD`, then the arguments: a column per
    struct field), the partials its tiles keep and how each framed aggregate reads them."""
    columns, kinds = list(_KEPT_HEAD), ["int", "uint", "str", "str"]
    at: dict[str, int] = {}
    for argument in compiled.arguments:
        at[argument] = len(columns)
        fields = compiled.struct_fields.get(argument)
        typed = fields.items() if fields else [(None, argument_types[argument])]
        for field, sql_type in typed:
            kind = "int" if sql_type.startswith("DECIMAL") else _KIND_OF_TYPE.get(sql_type)
            if kind is None:
                raise UnsupportedAggregation(
                    f"{argument}: a card's state holds no {sql_type} (supported: DECIMAL, "
                    f"{', '.join(_KIND_OF_TYPE)})"
                )
            columns.append(argument if field is None else f"{argument}__{field}")
            kinds.append(kind)
    specs: list[TileSpec] = []
    plans = []
    for aggregate in compiled.aggregates:
        window = aggregate.window
        if lacking := [c for c in window.partition_by[1:] if c not in columns]:
            raise UnsupportedAggregation(
                f"{aggregate.name}: a card's state keys windows by {', '.join(_KEPT_HEAD[2:])}"
                f", not {', '.join(lacking)}"
            )
        keys = tuple(columns.index(c) for c in window.partition_by[1:])
        column = at[aggregate.argument]
        spec = None
        if aggregate.function in ("sum", "max"):
            tile = TileSpec(aggregate.function, column, keys)
            if tile not in specs:
                specs.append(tile)
            spec = specs.index(tile)
        span = None if window.span is None else _us(window.span + window.end)
        width = len(compiled.struct_fields.get(aggregate.argument, ())) or 1
        plans.append(Plan(aggregate.function, column, width, keys, span, _us(window.end), spec))
    lookback = max((p.span_us for p in plans if p.span_us is not None), default=0)
    return StateLayout(tuple(columns), tuple(kinds), tuple(specs), lookback), tuple(plans)


def _us(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


class FeatureState:
    """Every card's state (:class:`~mlplatform.features.card_state.CardState`) and the
    daily partials of the keyed windows (per key and day), in memory.

    Records are tuples of the columns of :meth:`CompiledFeatures.records_sql`: event time
    (microseconds), id hash, transaction id, card, category, merchant, event day, then the
    aggregates' arguments; a card's state keeps them as events (:meth:`event`). An event is
    identified by its id hash within its card.
    """

    def __init__(self, compiled: CompiledFeatures) -> None:
        self.compiled = compiled
        self.layout = compiled.layout
        self.cards: dict[str, CardState] = {}
        self.partials: dict[tuple, dict[int, list[Any]]] = {}
        self._column = {c: i for i, c in enumerate(self.layout.columns)}
        self._partial_keys = [self._column[c] for c in self._partition_columns()]
        self._partial_arguments = [self._column[p.argument] for p in self._daily]
        #: Days of daily partials kept before the newest event's day (the daily windows'
        #: longest reach, and a day for late transactions).
        self._partial_days = 1 + max(
            ((p.feature.over.span + p.feature.over.end).days + 1 for p in self._daily), default=0
        )
        self._newest_day: int | None = None

    @staticmethod
    def event(record: tuple) -> tuple:
        """The event a card's state keeps of a record (no id, card or day)."""
        return (record[0], record[1], record[4], record[5], *record[len(_HEAD) + 1 :])

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
        start = 0
        for end in range(1, len(records) + 1):
            if end < len(records) and records[end][3] == records[start][3]:
                continue
            card_id = records[start][3]
            events = [self.event(r) for r in records[start:end]]
            held = self.cards.get(card_id)
            if held is None:
                self.cards[card_id] = CardState.of(self.layout, events)
            else:
                for event in events:
                    held.add(event)
            start = end
            # Let a waiting thread run between cards: a store loaded beside the requests
            # would otherwise hold the interpreter for its switch interval (5 ms) at a time.
            time.sleep(0)
        return len(records)

    def load_partials(self, conn: duckdb.DuckDBPyConnection, source: str) -> None:
        """Set the daily partials (per key and day) from the events of ``source`` (all of
        them, as :meth:`CardState.of` keeps a card's: adding events drops the days no daily
        window reaches any more)."""
        if not self._daily:
            return
        width = len(self._partial_keys)
        for row in conn.execute(self.compiled.partials_sql(source)).fetchall():
            days = self.partials.setdefault(tuple(row[:width]), {})
            days[row[width]] = list(row[width + 1 :])

    def add(self, records: Iterable[tuple]) -> None:
        """Add new events (a transaction id its card already holds is replaced)."""
        for record in records:
            self.add_event(record[3], self.event(record))

    def add_event(self, card_id: str, event: tuple) -> None:
        """Add one event (as :meth:`event` makes it) of ``card_id``."""
        card = self.cards.get(card_id)
        if card is None:
            card = self.cards[card_id] = CardState(self.layout)
        replaced = card.add(event)
        if replaced is not None:
            self._count_daily(replaced, -1)
        self._count_daily(event, +1)

    def daily_key(self, event: tuple) -> tuple:
        """The key of the daily partials an event counts in (e.g. its merchant)."""
        return tuple(event[c] for c in self._partial_keys)

    def daily_keys(self, event: tuple) -> set[tuple]:
        """The keys of the daily partials an event counts in and its features read."""
        if not self._daily:
            return set()
        return {self.daily_key(event)} | {
            tuple(event[self._column[c]] for c in p.feature.over.partition_by) for p in self._daily
        }

    def aggregates(self, records: Sequence[tuple]) -> list[list[Any]]:
        """The aggregate values of each new event of ``records`` (request order), over the
        held events plus all of ``records`` (an id held already is the new event's, not
        history). Each row: the record's position, then the framed aggregates' values and
        the daily ones', in the order :meth:`CompiledFeatures.features` reads them."""
        events = [self.event(r) for r in records]
        request: dict[str, list[tuple]] = {}
        for record, event in zip(records, events, strict=True):
            request.setdefault(record[3], []).append(event)
        held: dict[str, CardState | None] = {}
        for card_id, new in request.items():
            card = self.cards.get(card_id)
            resent = {e[HASH] for e in new if card is not None and card.holds(e[HASH])}
            if resent:  # the request's version of a held transaction, not both
                card = card.without(resent)
            held[card_id] = card
        rows = []
        for position, (record, event) in enumerate(zip(records, events, strict=True)):
            card, new = held[record[3]], request[record[3]]
            rows.append(
                [position]
                + [self._value(p, a.argument, card, new, event)
                   for p, a in zip(self.compiled.plans, self.compiled.aggregates, strict=True)]
                + [self._daily_value(i, p, event) for i, p in enumerate(self._daily)]
            )  # fmt: skip
        return rows

    @property
    def _daily(self) -> tuple[DailyPartial, ...]:
        return self.compiled.daily

    def _partition_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for p in self._daily for k in p.feature.over.partition_by))

    def _value(
        self, plan: Plan, argument: str, card: CardState | None, new: list[tuple], event: tuple
    ) -> Any:
        """One framed aggregate of ``event`` over the card's state and the request's events
        ``new`` of the card (``event`` among them)."""
        if plan.keys:
            key = tuple(event[c] for c in plan.keys)
            mine = [e for e in new if all(e[c] == k for c, k in zip(plan.keys, key, strict=True))]
        else:  # the card's events: all of the request's
            key, mine = (), new
        order = (event[TIME], event[HASH])
        if plan.span_us is None:  # the sequence: the event before this one
            found = [e for e in mine if (e[TIME], e[HASH]) < order]
            if card is not None and (before := card.before(event, plan.keys, key)) is not None:
                found.append(before)
            chosen = max(found, key=_order, default=None)
            return self._held_value(plan, argument, chosen)
        lower, upper = event[TIME] - plan.span_us, event[TIME] - plan.end_us
        mine = [e for e in mine if lower <= e[TIME] <= upper]
        if plan.spec is None:  # first_value: the frame's earliest event
            if card is not None and (first := card.first(lower, upper, plan.keys, key)):
                mine.append(first)
            return self._held_value(plan, argument, min(mine, key=_order, default=None))
        spec = self.layout.specs[plan.spec]
        total = fold(spec, mine, key)
        if card is not None:
            total = merge(spec.function, card.fold(plan.spec, lower, upper, key), total)
        return _unscaled(self.compiled, argument, total)

    def _held_value(self, plan: Plan, argument: str, event: tuple | None) -> Any:
        """The argument of a chosen event as the aggregate's value (a struct as a dict)."""
        if event is None:
            return None
        fields = self.compiled.struct_fields.get(argument)
        if fields is None:
            return _unscaled(self.compiled, argument, event[plan.column])
        values = event[plan.column : plan.column + plan.width]
        return {
            f: _decoded(v, t == "TIMESTAMP")
            for (f, t), v in zip(fields.items(), values, strict=True)
        }

    def _count_daily(self, event: tuple, sign: int) -> None:
        """Count an event in (sign 1) or out of (-1) its key's daily partials."""
        if not self._daily:
            return
        day = event[TIME] // DAY_US
        days = self.partials.setdefault(self.daily_key(event), {})
        values = days.setdefault(day, [_zero(p) for p in self._daily])
        for i, (partial, column) in enumerate(
            zip(self._daily, self._partial_arguments, strict=True)
        ):
            values[i] = _accumulate(partial, values[i], event[column], sign)
        if sign > 0:
            self._advance(day)

    def _advance(self, day: int) -> None:
        """Note the newest event day; drop the daily partials no window reaches any more."""
        if self._newest_day is not None and day <= self._newest_day:
            return
        self._newest_day = day
        oldest = day - self._partial_days
        for key, days in list(self.partials.items()):
            for old in [d for d in days if d < oldest]:
                del days[old]
            if not days:
                del self.partials[key]

    def _daily_value(self, index: int, partial: DailyPartial, event: tuple) -> int:
        window = partial.feature.over
        key = tuple(event[self._column[c]] for c in window.partition_by)
        days = self.partials.get(key, {})
        day = event[TIME] // DAY_US
        first = day - (window.span + window.end).days
        last = day - window.end.days - 1
        total = 0
        for d in range(first, last + 1):
            values = days.get(d)
            if values is not None and values[index] is not None:
                total += values[index]
        return total


def aggregate_cast(name: str, sql_type: str, dtype: str) -> Callable[[Any], Any]:
    """The Python twin of the offline SQL's ``CAST(aggregate AS dtype)`` of the framed
    aggregate ``name`` (of DuckDB type ``sql_type``): decimal sums and doubles to DOUBLE,
    integer counts to an integer type; any other pair is refused when the registry
    compiles, naming the feature."""
    if dtype == "DOUBLE" and (sql_type == "DOUBLE" or sql_type.startswith("DECIMAL(")):
        return as_double
    if dtype in _INTEGERS and sql_type in _INTEGERS:
        return _integer
    raise UnsupportedAggregation(f"{name}: no online CAST of {sql_type} AS {dtype}")


_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")


def _integer(value: int | None) -> int | None:
    return None if value is None else int(value)


def _input_value(env: Mapping[str, Any], name: str, kind: str) -> Any:
    """A derived feature's input from a row's values (see :mod:`~mlplatform.features.derived`:
    numbers as doubles, times as microseconds, NULL as NaN; text as it is)."""
    column, _, field = name.partition(".")
    value = env[column]
    if field and value is not None:
        value = value[field]
    if kind == "text":
        return value
    if value is None:
        return math.nan
    return float(epoch_micros(value)) if kind == "time" else as_double(value)


def _input_array(values: list[Any], kind: str) -> np.ndarray:
    return np.array(values, dtype=object if kind == "text" else float)


def _order(event: tuple) -> tuple[int, int]:
    return event[TIME], event[HASH]


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


def _accumulate(partial: DailyPartial, total: Any, value: Any, sign: int) -> Any:
    """A daily partial with ``value`` counted in (``sign`` 1) or out (-1)."""
    if partial.function == "count":
        return total + sign * (value is not None)
    if value is None:
        return total
    return sign * value if total is None else total + sign * value


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

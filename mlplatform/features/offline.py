"""``features.card_features``: the registry's features, offline (per partition range) and online.

Both paths run the same generated SELECT over a relation of curated-shaped events: offline
over the warehouse's curated rows of the range plus its lookback, online over a card's (and
its merchant's) recent events plus the new transaction. Sums run on exact decimals, so the
two paths agree to the last bit. The derived features' numpy functions
(:mod:`~mlplatform.features.derived`) run inside that SELECT, as one vectorised Arrow UDF
(:func:`derived_functions`) over each batch of rows.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from mlplatform.features.declarations import (
    INPUT_COLUMNS,
    KEY_COLUMNS,
    LAST_EVENT,
    Feature,
    FeatureRegistry,
)
from mlplatform.features.derived import derive_all
from mlplatform.warehouse.connection import (
    insertion_order,
    read_sql,
    sql_literal,
    table_ddl_for,
    transactions,
)

TABLE = "features.card_features"


@dataclass(frozen=True)
class FeatureBuildResult:
    """A built range of ``features.card_features``."""

    start: date
    end: date
    rows: int
    curated_rows: int
    lookback_start: date
    seconds: float
    table_recreated: bool


#: What a collapsed block row holds for each column the framed windows read (see
#: :func:`feature_sql`): sums of the additive columns, the largest amount, the first event's
#: time (the block's position) and the last event (for the previous-transaction features).
BLOCK_COLUMNS = {
    "event_count": "sum(event_count)::INTEGER",
    "amount_exact": "sum(amount_exact)::DECIMAL(18, 2)",
    "amount_squared": "sum(amount_squared)::DECIMAL(38, 4)",
    "disc_amount": "sum(disc_amount)::DECIMAL(18, 2)",
    "amount": "max(amount)",
    "event_time": "min(event_time)",
    "event_us": "min(event_us)",
    "last_event": "arg_max(last_event, (event_us, transaction_hash))",
}


def feature_sql(
    registry: FeatureRegistry, source: str, where: str, blocks: Mapping[int, int] | None = None
) -> str:
    """The SELECT of the enabled features for the rows of ``source`` matching ``where``.

    ``source`` is a table (or view) with the :data:`INPUT_COLUMNS`, optionally followed by a
    ``WHERE`` on its columns; window features see all of its rows, the output keeps those that
    match ``where``.

    Each window partition (card; card and category; card and merchant) is one window operator;
    they are chained over only the columns their features read (DuckDB prunes the rest), keyed
    by the source's ``rowid``, and the rows the output keeps are joined to the results once.
    So every window sorts narrow rows, and the wide transaction columns are read only for the
    output rows. Frames order by the event time in integer microseconds (``event_us``).

    ``blocks`` (:func:`collapsible_days`) maps days to collapse to their block: the events of
    a block become one row per window partition key (:data:`BLOCK_COLUMNS`), placed at its
    first event, and only for keys that have output rows. Every frame of an output row holds
    a block whole or not at all, so the windows give exactly the per-event values while a
    daily run's windows read a few rows per key instead of every event of its lookback.
    """
    daily: dict[tuple[str, ...], list[Feature]] = {}
    framed: dict[tuple[str, ...], list[Feature]] = {}
    for feature in registry.aggregations:
        group = daily if feature.over.daily else framed
        group.setdefault(feature.over.partition_by, []).append(feature)
    # The framed windows' partition keys as hashes, computed once per event.
    partitions = {f.over.key: f.over.key_sql() for fs in framed.values() for f in fs}
    ctes = [f"events AS NOT MATERIALIZED (\n    {event_columns(registry, source, partitions)}\n)"]
    previous = "events"
    if blocks:
        days = ", ".join(f"({day}, {block})" for day, block in sorted(blocks.items()))
        ctes.append(
            f"""collapsed_days(day, block) AS (VALUES {days}),
detail AS NOT MATERIALIZED (
    SELECT * FROM events WHERE event_day NOT IN (SELECT day FROM collapsed_days)
)"""
        )
        previous = "detail"
    joins = []
    # Chained: each window operator passes on the (narrow) columns the next ones read. The
    # partition with the most features goes last, so that its results are carried least.
    for number, features in enumerate(sorted(framed.values(), key=len)):
        windows = dict.fromkeys(f.over for f in features)
        columns = "".join(f", {f.expression()} AS {f.name}" for f in features)
        clause = ", ".join(f"{w.name} AS ({w.sql()})" for w in windows)
        rows = previous
        if blocks:
            key = features[0].over.key
            aggregates = ", ".join(f"{sql} AS {name}" for name, sql in BLOCK_COLUMNS.items())
            rows = f"""(
        SELECT * FROM {previous}
        UNION ALL BY NAME
        SELECT {key}, {aggregates}
        FROM events JOIN collapsed_days ON event_day = day
        WHERE {key} IN (SELECT {key} FROM events WHERE {where})
        GROUP BY {key}, block
    )"""
        ctes.append(
            f"""windows_{number} AS (
    SELECT *{columns}
    FROM {rows}
    WINDOW {clause}
)"""
        )
        previous = f"windows_{number}"
        if blocks:  # collapsed rows only serve their own partition's window
            previous = f"(SELECT * FROM windows_{number} WHERE row_key IS NOT NULL)"
    framed_join = ""
    if framed:
        names = ", ".join(f.name for fs in framed.values() for f in fs)
        framed_join = f"JOIN (SELECT row_key, {names} FROM {previous}) USING (row_key)"
    for number, (keys, features) in enumerate(daily.items()):
        key_list = ", ".join((*keys, "event_day"))
        partials = ", ".join(f"{f.aggregation.sql()} AS {f.name}" for f in features)
        totals = ", ".join(f"CAST(coalesce(sum({f.name}) OVER ({f.over.sql()}), 0) AS {f.dtype})"
                           f" AS {f.name}" for f in features)  # fmt: skip
        ctes.append(
            f"""daily_{number} AS (
    SELECT {key_list}, {partials} FROM events GROUP BY {key_list}
),
daily_windows_{number} AS (SELECT {key_list}, {totals} FROM daily_{number})"""
        )
        joins.append(f"LEFT JOIN daily_windows_{number} USING ({key_list})")
    # The small daily results join the kept rows first, the framed windows' results last:
    # written the other way round, DuckDB 1.5 (which estimates the range filters at 20% of
    # the rows) builds the daily join's hash table from the wide joined rows instead.
    if framed_join:
        joins.append(framed_join)
    # The derived features: their functions over each batch of rows, called by DuckDB
    # (registered by derived_functions).
    inputs = ", ".join(f"{column} := {sql}" for column, sql in derived_inputs(registry).values())
    outputs = ",\n    ".join(
        [f.name for f in registry.enabled if not f.derive]
        + ([f"unnest({DERIVED_FUNCTION}(struct_pack({inputs})))"] if inputs else [])
    )
    with_clause = ",\n".join(ctes)
    return f"""WITH {with_clause}
SELECT {", ".join(KEY_COLUMNS)},
    {outputs}
FROM (SELECT * FROM events WHERE {where}) AS kept
{" ".join(joins)}"""


def derived_inputs(registry: FeatureRegistry) -> dict[str, tuple[str, str]]:
    """Input name -> (column, SQL) of each value the derived features read that the SQL
    computes, as their functions take it (:mod:`~mlplatform.features.derived`): a double,
    a time in microseconds (as a double: exact up to the year 2255) or text."""
    inputs = {}
    for name, kind in registry.derived_inputs().items():
        column, _, field = name.partition(".")
        sql = f"({column}).{field}" if field else column
        if kind == "time":
            sql = f"CAST(epoch_us({sql}) AS DOUBLE)"
        elif kind == "number":
            sql = f"CAST({sql} AS DOUBLE)"
        inputs[name] = "input__" + name.replace(".", "__"), sql
    return inputs


#: The Arrow type of each derived feature's dtype.
_ARROW_TYPES = {"DOUBLE": pa.float64(), "BIGINT": pa.int64(), "INTEGER": pa.int32(),
                "BOOLEAN": pa.bool_()}  # fmt: skip
#: The SQL function :func:`feature_sql` calls for the derived features.
DERIVED_FUNCTION = "mlplatform_derived_features"


@contextmanager
def derived_functions(conn: duckdb.DuckDBPyConnection, registry: FeatureRegistry) -> Iterator[None]:
    """The registry's derived features as one vectorised function of ``conn``
    (:data:`DERIVED_FUNCTION`: a struct of the inputs of a batch of rows in, a struct of the
    features out), for the time of a :func:`feature_sql` query."""
    inputs = derived_inputs(registry)
    derived = [f for f in registry.enabled if f.derive]
    if not derived:
        yield
        return
    kinds = registry.derived_inputs()

    def compute(rows: pa.ChunkedArray) -> pa.StructArray:
        struct = rows.combine_chunks()
        fields = dict(zip([f.name for f in struct.type], struct.flatten(), strict=True))
        columns = {name: fields[column].to_numpy(zero_copy_only=False)
                   for name, (column, _) in inputs.items()}  # fmt: skip
        values = derive_all(derived, columns)
        return pa.StructArray.from_arrays(
            [pa.array(v, mask=nulls, type=_ARROW_TYPES[registry.by_name[name].dtype])
             for name, (v, nulls) in values.items()],
            names=list(values),
        )  # fmt: skip

    argument = duckdb.struct_type({column: "VARCHAR" if kinds[name] == "text" else "DOUBLE"
                                   for name, (column, _) in inputs.items()})  # fmt: skip
    result = duckdb.struct_type({f.name: f.dtype for f in derived})
    conn.create_function(DERIVED_FUNCTION, compute, [argument], result, type="arrow",
                         null_handling="special")  # fmt: skip
    try:
        yield
    finally:
        conn.remove_function(DERIVED_FUNCTION)


def event_columns(
    registry: FeatureRegistry, source: str, keys: Mapping[str, str] | None = None
) -> str:
    """SELECT of the per-event inputs the feature SQL's windows read, from the rows of
    ``source`` (a table: its ``rowid`` keys the rows): the input columns, the event time in
    integer microseconds, exact decimal amounts, the discretionary amount, the event as the
    next one's previous event, and the partition-key hashes ``keys`` (name -> SQL)."""
    discretionary = ", ".join(sql_literal(c) for c in registry.discretionary_categories)
    key_columns = "".join(f"\n        {sql} AS {key}," for key, sql in (keys or {}).items())
    last_event = ", ".join(f"'{field}': {field}" for field in LAST_EVENT)
    return f"""SELECT {", ".join(INPUT_COLUMNS)},
        rowid AS row_key,{key_columns}
        hash(transaction_id) AS transaction_hash,
        1 AS event_count,
        amount::DECIMAL(18, 2) AS amount_exact,
        amount::DECIMAL(18, 2) * amount::DECIMAL(18, 2) AS amount_squared,
        CASE WHEN category IN ({discretionary or "NULL"}) THEN amount::DECIMAL(18, 2) ELSE 0 END
            AS disc_amount,
        {{{last_event}}} AS last_event,
        (event_time::DATE - DATE '1970-01-01') AS event_day,
        epoch_us(event_time) AS event_us
    FROM {source}"""


def collapsible_days(
    conn: duckdb.DuckDBPyConnection,
    registry: FeatureRegistry,
    source: str,
    where: str,
    params: Mapping[str, Any],
) -> dict[int, int]:
    """The event days of ``source`` (days since 1970-01-01) whose events :func:`feature_sql`
    can collapse for the rows matching ``where``, each mapped to its block.

    A day is kept as events when it holds an output row or a frame of one can start or end in
    it (:attr:`FeatureRegistry.boundary_days`); each run of other days between two such days
    is one block, numbered by how many kept days come before it.
    """
    days = conn.execute(
        f"""SELECT event_time::DATE - DATE '1970-01-01' AS day, bool_or({where})
            FROM {source} GROUP BY day""",
        params,
    ).fetchall()
    output = {day for day, kept in days if kept}
    detail = {day - before for day in output for before in registry.boundary_days}
    ordered = sorted(detail)
    return {day: bisect.bisect_left(ordered, day) for day, _ in days if day not in detail}


# Ids with many distinct values: zstd writes them about twice as fast as the default
# compression, a little larger (see create_schema.sql).
_COMPRESSION = {"transaction_id": " USING COMPRESSION zstd", "card_id": " USING COMPRESSION zstd"}


def table_ddl(registry: FeatureRegistry) -> str:
    """CREATE TABLE of ``features.card_features`` with the keys and the enabled features."""
    columns = [f"{c} {INPUT_COLUMNS[c]}{_COMPRESSION.get(c, '')} NOT NULL" for c in KEY_COLUMNS]
    columns += [f"{f.name} {f.dtype}" for f in registry.enabled]
    return f"CREATE TABLE {TABLE} (\n    " + ",\n    ".join(columns) + "\n)"


def _ensure_table(conn: duckdb.DuckDBPyConnection, registry: FeatureRegistry) -> bool:
    """Create the table, or recreate it when the enabled features changed. True if an
    existing table was replaced (a new one is no news)."""
    existing = [
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'features' "
            "AND table_name = 'card_features' AND table_catalog = current_database() "
            "ORDER BY ordinal_position"
        ).fetchall()
    ]
    wanted = [*KEY_COLUMNS, *(f.name for f in registry.enabled)]
    if existing == wanted:
        return False
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(table_ddl_for(conn, table_ddl(registry)))
    return bool(existing)


def build_card_features(
    conn: duckdb.DuckDBPyConnection, registry: FeatureRegistry, start: date, end: date
) -> FeatureBuildResult:
    """Replace the partitions ``start``..``end`` (inclusive) of ``features.card_features``.

    Reads the curated rows of the range and of the registry's lookback before it; writes only
    the range, in one transaction. When the set of enabled features changed (another
    contract), the table is recreated and holds only this range until the rest is rebuilt.
    """
    began = datetime.now()
    lookback_start = start - timedelta(days=registry.lookback.days + 1)
    params = {"start": start, "end": end}
    source = "curated.transactions WHERE partition_date BETWEEN $lookback_start AND $end"
    for attempt in transactions(conn):
        with attempt:
            recreated = _ensure_table(conn, registry)
            conn.execute(
                f"DELETE FROM {TABLE} WHERE partition_date BETWEEN $start AND $end", params
            )
            where = "partition_date BETWEEN $start AND $end"
            read = {**params, "lookback_start": lookback_start}
            blocks = collapsible_days(conn, registry, source, where, read)
            # The table's row order means nothing (readers order or filter): letting DuckDB insert
            # in any order lets both threads write row groups at once.
            with insertion_order(conn, preserve=False), derived_functions(conn, registry):
                conn.execute(
                    f"INSERT INTO {TABLE} BY NAME " + feature_sql(registry, source, where, blocks),
                    read,
                )
            rows, curated = conn.execute(
                f"""SELECT (SELECT count(*) FROM {TABLE}
                            WHERE partition_date BETWEEN $start AND $end),
                           (SELECT count(*) FROM curated.transactions
                            WHERE partition_date BETWEEN $start AND $end)""",
                params,
            ).fetchone()
    return FeatureBuildResult(
        start=start,
        end=end,
        rows=rows,
        curated_rows=curated,
        lookback_start=lookback_start,
        seconds=(datetime.now() - began).total_seconds(),
        table_recreated=recreated,
    )


def context_events(
    conn: duckdb.DuckDBPyConnection,
    registry: FeatureRegistry,
    card_id: str,
    merchant: str | None,
    event_time: datetime,
    exclude_transaction_id: str | None = None,
) -> pd.DataFrame:
    """The curated events the online features of a transaction need: the card's events in the
    registry's lookback up to ``event_time`` (same second included) and, for merchant risk,
    the merchant's events in the same span."""
    columns = ", ".join(INPUT_COLUMNS)
    return conn.execute(
        f"""SELECT {columns} FROM curated.transactions
            WHERE event_time BETWEEN $since AND $until
              AND (card_id = $card_id OR merchant = $merchant)
              AND transaction_id IS DISTINCT FROM $exclude
            ORDER BY event_time, transaction_id""",
        {
            "since": event_time - registry.lookback,
            "until": event_time,
            "card_id": card_id,
            "merchant": merchant,
            "exclude": exclude_transaction_id,
        },
    ).df()


def online_features(
    registry: FeatureRegistry, history: pd.DataFrame, transaction: Mapping[str, Any]
) -> dict[str, Any]:
    """The feature vector of one new ``transaction`` given its ``history``.

    ``history`` holds curated-shaped events (:data:`INPUT_COLUMNS`; e.g. from
    :func:`context_events`): the card's events of the lookback and the merchant's for merchant
    risk. ``transaction`` is one curated-shaped row. Returns ``{feature: value}`` for the
    enabled features: exactly what the offline table holds for the same events.
    """
    with duckdb.connect() as conn:
        conn.execute(read_sql("macros"))
        schema = ", ".join(f"{name} {dtype}" for name, dtype in INPUT_COLUMNS.items())
        conn.execute(f"CREATE TABLE context ({schema})")
        new = pd.DataFrame([{c: transaction.get(c) for c in INPUT_COLUMNS}])
        for frame in (history, new):
            if len(frame):
                conn.register("frame", frame.reindex(columns=list(INPUT_COLUMNS)))
                conn.execute("INSERT INTO context BY NAME SELECT * FROM frame")
                conn.unregister("frame")
        where, params = (
            "transaction_id = $transaction_id",
            {"transaction_id": transaction["transaction_id"]},
        )
        blocks = collapsible_days(conn, registry, "context", where, params)
        with derived_functions(conn, registry):
            sql = feature_sql(registry, "context", where, blocks)
            rows = conn.execute(sql, params).to_arrow_table().to_pylist()
    if len(rows) != 1:
        raise ValueError(
            f"transaction {transaction['transaction_id']!r} appears {len(rows)} times in the "
            "history and the new transaction together; transaction ids must be unique"
        )
    return {f.name: rows[0][f.name] for f in registry.enabled}

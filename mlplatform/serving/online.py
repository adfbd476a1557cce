"""Online features for transactions given in the contract's canonical columns.

:class:`OnlineFeatures` is the feature source of the online path: one long-lived read-only
connection to a DuckDB file with the warehouse's curated schema (the online store
``online/store.duckdb``, or the warehouse itself). A new transaction goes through the same
steps as a landing-file row: the card number is pseudonymised with the platform's key, the
row is curated by the curation SQL itself (normalisation, reference data, derived fields)
and its features are computed from the card's and the merchant's history
(:func:`~mlplatform.features.offline.online_features`), so they equal the offline table's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from mlplatform.contract import CANONICAL_COLUMNS, Contract
from mlplatform.features.declarations import INPUT_COLUMNS, FeatureRegistry
from mlplatform.features.online_state import CompiledFeatures, FeatureState, as_records
from mlplatform.ingestion.duckdb_functions import NotPlain, text_hash
from mlplatform.ingestion.row_rules import pseudonyms_sql, typed_columns, violation
from mlplatform.serving.prediction_log import PredictionLog
from mlplatform.serving.shared_state import Pending, Published, RedisState
from mlplatform.settings import Settings
from mlplatform.warehouse.connection import read_sql, sql_literal, transaction
from mlplatform.warehouse.pii import hmac_pads, mask_card_like_digits
from mlplatform.warehouse.row_program import RowProgram, request_text


@dataclass(frozen=True)
class RowError:
    """Why one transaction of a request cannot be scored: the landing rule it breaks."""

    index: int
    field: str
    rule: str
    detail: str


class InvalidTransactions(ValueError):
    """Transactions that ingestion would quarantine; nothing of the request is scored."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        self.errors = list(errors)
        super().__init__(
            "; ".join(f"transaction {e.index}: {e.field}: {e.rule} ({e.detail})" for e in errors)
        )


@dataclass(frozen=True)
class FeatureBatch:
    """Online features of a request's transactions, in the request's order.

    ``rows`` (and :attr:`frame`, the same as a DataFrame, made when asked for) have
    ``transaction_id``, ``card_id`` (pseudonym), ``event_time`` and ``partition_date``, then
    one value per enabled feature. ``events`` are the curated feature inputs of each
    transaction (JSON-able, no PII), as the prediction log keeps them to rebuild fresh state
    on restart. Times in milliseconds.
    """

    rows: list[dict[str, Any]] = field(repr=False)
    events: list[dict[str, Any]] = field(repr=False)
    validation_ms: float
    features_ms: float
    records: list[tuple] = field(repr=False, default_factory=list)
    #: The stages that took DuckDB's route instead of Python's, with why: (stage, reason),
    #: stage ``rows`` (rules and curation; features are always Python's). Empty: Python's.
    fallbacks: tuple[tuple[str, str], ...] = ()
    #: Reading the cards' state (in memory, or from Redis: then ``pending`` is the read,
    #: committed by :meth:`OnlineFeatures.record`).
    state_ms: float = 0.0
    pending: Pending | None = field(repr=False, default=None)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """:attr:`rows` as a DataFrame."""
        return pd.DataFrame(self.rows)


@dataclass(frozen=True)
class StoreInfo:
    """The store file as opened: when it was written (file time) and its newest event."""

    path: Path
    modified_at: datetime
    last_event_time: datetime | None
    events: int
    #: What tells this store from another one on any machine that mounts it.
    identity: dict[str, Any] = field(repr=False, default_factory=dict)

    def age_hours(self, now: datetime | None = None) -> float:
        return ((now or datetime.now()) - self.modified_at).total_seconds() / 3600


@dataclass(frozen=True)
class LoadedStore:
    """A replaced store read beside the serving state (:meth:`OnlineFeatures.load_store`),
    to be swapped in by :meth:`OnlineFeatures.swap`. ``fresh`` are the transactions scored
    before the load began that the new store lacks (``journal_at`` of them were seen)."""

    fingerprint: tuple[int, int]
    conn: duckdb.DuckDBPyConnection = field(repr=False)
    state: FeatureState = field(repr=False)
    loaded: frozenset[str] = field(repr=False)
    fresh: list[tuple] = field(repr=False)
    journal_at: int
    reference: dict[str, tuple[Any, Any]] = field(repr=False)
    info: StoreInfo
    seconds: float


class RetiredStore:
    """A store and state that :meth:`OnlineFeatures.swap` replaced, held until
    :meth:`close` so that they are let go outside the request lock."""

    def __init__(self, conn: duckdb.DuckDBPyConnection | None, state: FeatureState) -> None:
        self._conn: duckdb.DuckDBPyConnection | None = conn
        self._state: FeatureState | None = state

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._state = None


#: The contract of online input: every canonical column under its own name.
ONLINE_CONTRACT = Contract(name="online", columns={c: c for c in CANONICAL_COLUMNS})
#: Event times this far past the clock are refused (a clock a little ahead is not an error).
FUTURE_TOLERANCE = timedelta(minutes=5)
#: Why every request takes DuckDB's route for its rows when built with compiled_rows=False.
ROWS_NOT_COMPILED = "rules and curation not compiled (compiled_rows=False)"
logger = logging.getLogger(__name__)


class OnlineFeatures:
    """Feature source over a DuckDB file with the curated schema, for new transactions.

    ``preload`` reads every card of the store when it is (re)attached, so that no request
    waits for its card's events (a service does; ad-hoc scoring reads only its cards).
    ``compiled_rows`` runs the landing rules and curation of a request in Python
    (:class:`~mlplatform.warehouse.row_program.RowProgram`); False runs ingestion's SQL
    files in DuckDB for every request (the reference the compiled rows are tested against).

    The store is attached read-only (on a connection of its own, replaced with the file);
    each card's events are read once, when the card is first seen (or at the load, with
    ``preload``), into :class:`~mlplatform.features.online_state.FeatureState`, which also
    holds the transactions scored since (``record``). A replaced store is read beside the
    serving state (:meth:`load_store`, which a thread may run while requests are served)
    and swapped in (:meth:`swap`, short: the caller holds its request lock for it only).
    Otherwise not thread-safe: one caller at a time.

    ``online_state`` ``memory`` keeps that state in this process; a Redis URL keeps every
    card's state in Redis instead (:class:`~mlplatform.serving.shared_state.RedisState`),
    shared by every process that serves: :meth:`sync_shared` publishes the store there, a
    request reads its cards there and :meth:`record` commits its events (False: a card
    changed meanwhile, compute again).
    """

    def __init__(
        self,
        store_path: Path,
        registry: FeatureRegistry,
        pii_key: bytes,
        *,
        max_amount: float = 100_000.0,
        compiled_rows: bool = True,
        preload: bool = False,
        online_state: str = "memory",
    ) -> None:
        self.store_path = Path(store_path)
        self.registry = registry
        self._pads = hmac_pads(pii_key)
        self._checks = read_sql("check_rows").format(
            typed_columns=typed_columns(ONLINE_CONTRACT),
            violation=violation(ONLINE_CONTRACT, max_amount),
        )
        self._mem = duckdb.connect()
        self._mem.execute(read_sql("create_schema"))
        self._mem.execute(read_sql("macros"))
        self.compiled = CompiledFeatures(registry, self._mem)
        self.shared = None if online_state == "memory" else RedisState(online_state, self.compiled)
        # The connection a store load writes the reference table with (from its own thread).
        self._loader = self._mem.cursor()
        self.state = FeatureState(self.compiled)
        self._program = (
            RowProgram(ONLINE_CONTRACT, registry, max_amount, pii_key) if compiled_rows else None
        )
        self._reference: dict[str, tuple[Any, Any]] = {}
        self._loaded: frozenset[str] | set[str] = set()
        self._preload = preload
        #: The transactions scored since the store was written, in order (a journal: a
        #: load reads up to its end; the swap adds what came after).
        self._fresh: list[tuple] = []
        self._fresh_lock = threading.Lock()
        self._store: duckdb.DuckDBPyConnection | None = None
        self._opened: tuple[int, int] | None = None
        self.info: StoreInfo | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Reattach the store when its file was replaced; True if it was (re)attached.

        Fresh transactions the new store holds are dropped; the others stay counted."""
        loaded = self.load_store()
        if loaded is None:
            return False
        self.swap(loaded).close()
        return True

    def load_store(self) -> LoadedStore | None:
        """Read the store file, when it was replaced since it was attached (else None),
        into a new state beside the serving one: the card reference data, the daily
        partials, every card (``preload``) or the cards of the fresh transactions, and the
        fresh transactions the new store lacks. Requests may be served meanwhile; the
        reference table of DuckDB's route for the rows is replaced here (its own
        transaction), the rest by :meth:`swap`."""
        started = time.perf_counter()
        stat = os.stat(self.store_path)
        fingerprint = (stat.st_ino, stat.st_mtime_ns)
        if fingerprint == self._opened:
            return None
        # A database of its own: DuckDB caches open files by path, so a second connection to
        # the path would reach the old store while it is attached.
        conn = duckdb.connect()
        try:
            conn.execute(f"ATTACH {sql_literal(str(self.store_path))} AS store (READ_ONLY)")
            reference = conn.sql("SELECT * FROM store.raw.card_reference").to_arrow_table()
            last, events = conn.execute(
                "SELECT max(event_time), count(*) FROM store.curated.transactions"
            ).fetchone()
            with self._fresh_lock:
                journal_at = len(self._fresh)
                scored = self._fresh[:journal_at]
            held = _held_ids(conn, [r[2] for r in scored])
            fresh = [r for r in scored if r[2] not in held]
            state = FeatureState(self.compiled)
            if self.shared is None:  # else the cards' state is in Redis
                state.load_partials(conn, "store.curated.transactions")
                if self._preload:
                    state.load(conn, "store.curated.transactions")
            loaded = set(state.cards)
            missing = sorted({r[3] for r in fresh} - loaded)
            _read_cards(state, conn, missing)
            state.add(fresh)
            loader = self._loader
            loader.register("next_card_reference", reference)
            try:
                with transaction(loader):
                    loader.execute("DELETE FROM raw.card_reference")
                    loader.execute(
                        "INSERT INTO raw.card_reference SELECT * FROM next_card_reference"
                    )
            finally:
                loader.unregister("next_card_reference")
        except BaseException:
            conn.close()
            raise
        return LoadedStore(
            fingerprint=fingerprint,
            conn=conn,
            state=state,
            loaded=frozenset(loaded | set(missing)),
            fresh=fresh,
            journal_at=journal_at,
            reference={
                card: (limit, band)
                for card, limit, band in zip(
                    reference["card_id"].to_pylist(),
                    reference["credit_limit"].to_pylist(),
                    reference["income_band"].to_pylist(),
                    strict=True,
                )
            },
            info=StoreInfo(
                self.store_path,
                datetime.fromtimestamp(stat.st_mtime),
                last,
                int(events),
                _identity(stat, int(events), last),
            ),
            seconds=time.perf_counter() - started,
        )

    def swap(self, loaded: LoadedStore) -> RetiredStore:
        """Serve from a store read by :meth:`load_store`: its state replaces the serving one,
        with the transactions scored since its load began added. The caller holds its
        request lock (if any) for this only: a few assignments, and those transactions.
        Returns the replaced store, to be closed after the lock is released (freeing a
        state of every card takes a while)."""
        with self._fresh_lock:
            later = self._fresh[loaded.journal_at :]
            self._fresh = list(loaded.fresh)
        retired = RetiredStore(self._store, self.state)
        self._store, self._opened, self.info = loaded.conn, loaded.fingerprint, loaded.info
        self.state, self._loaded, self._reference = loaded.state, loaded.loaded, loaded.reference
        self._add(later)
        return retired

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self._loader.close()
        self._mem.close()

    def compute(self, transactions: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        """Validate, curate and compute the features of ``transactions`` (canonical columns).

        Raises :class:`InvalidTransactions` naming each transaction that breaks a rule.
        """
        started = time.perf_counter()
        fallbacks: list[tuple[str, str]] = []
        curated = self._compiled_rows(transactions)
        if isinstance(curated, str):
            if transactions:
                fallbacks.append(("rows", curated))
            records, rows = self._duckdb_rows(transactions)
        else:
            records, rows = curated
        validated = time.perf_counter()
        pending = None
        if self.shared is None:
            self._load_cards({r[3] for r in records})
            state = self.state
        else:
            pending = self.shared.read(records)
            state = pending.state
        read = time.perf_counter()
        try:
            features = self.compiled.features(rows, state.aggregates(records))
        except BaseException:
            if pending is not None:
                self.shared.release(pending)
            raise
        done = time.perf_counter()
        for stage, reason in fallbacks:
            logger.info(
                "%d transaction(s): %s on DuckDB's route (%s), not Python's",
                len(transactions), stage, reason,
            )  # fmt: skip
        return FeatureBatch(
            features,
            [{c: _json(v) for c, v in row.items()} for row in rows],
            (validated - started) * 1000,
            (done - read) * 1000,
            records,
            tuple(fallbacks),
            (read - validated) * 1000,
            pending,
        )

    def _compiled_rows(
        self, transactions: Sequence[Mapping[str, Any]]
    ) -> tuple[list[tuple], list[dict[str, Any]]] | str:
        """Records and input rows of the request by the compiled row program, or why the
        request needs DuckDB (:class:`NotPlain`: which kind of value, never the value)."""
        if self._program is None:
            return ROWS_NOT_COMPILED
        if not transactions:
            return "an empty request"  # refused by the SQL route's own rule
        try:
            violations, curated, times = self._program.run(transactions, self._reference)
        except NotPlain as error:
            return str(error)
        errors = [
            RowError(i, v["column"], v["rule"], mask_card_like_digits(v["detail"] or ""))
            for i, v in violations
        ]
        _refuse(errors + _future(times))
        records = [self.compiled.record(row, text_hash(row["transaction_id"])) for row in curated]
        return records, [{c: row[c] for c in INPUT_COLUMNS} for row in curated]

    def _duckdb_rows(
        self, transactions: Sequence[Mapping[str, Any]]
    ) -> tuple[list[tuple], list[dict[str, Any]]]:
        """Records and input rows of the request by ingestion's SQL files, in DuckDB."""
        self._curate(transactions)
        records = self.compiled.fetch_records(self._mem, "online_rows")
        rows = [
            dict(zip(INPUT_COLUMNS, row, strict=True))
            for row in self._mem.execute(
                f"SELECT {', '.join(INPUT_COLUMNS)} FROM online_rows ORDER BY row_idx"
            ).fetchall()
        ]
        return records, rows

    def record(self, batch: FeatureBatch) -> bool:
        """Count the scored transactions of ``batch`` in later transactions' windows. False
        (nothing counted) when the shared state of its cards changed since :meth:`compute`
        read it: compute the batch again."""
        if batch.pending is None:
            self._add(batch.records)
            return True
        return self.shared.commit(batch.pending, batch.records)

    def discard(self, batch: FeatureBatch) -> None:
        """Give up ``batch`` without counting it (scoring it failed)."""
        if batch.pending is not None:
            self.shared.release(batch.pending)

    def stored_cards(self) -> list[str]:
        """The cards the store holds."""
        distinct = "SELECT DISTINCT card_id FROM store.curated.transactions ORDER BY 1"
        return [row[0] for row in self._store.execute(distinct).fetchall()]

    def sync_shared(
        self, logged: Callable[[datetime | None], Iterable[Mapping[str, Any]]]
    ) -> Published | None:
        """Publish this process's store to the shared state when Redis holds an older
        store's state or none (then with the ``logged`` events newer than the store: the
        prediction log's); None when there was nothing to do or another process does it."""
        assert self.shared is not None and self.info is not None
        with self.shared.publishing(self.info.identity) as publisher:
            if publisher is None:
                return None
            state = FeatureState(self.compiled)
            state.load_partials(self._store, "store.curated.transactions")
            state.load(self._store, "store.curated.transactions")
            restored = (
                as_records(self._mem, self.compiled, logged(self.info.last_event_time))
                if publisher.empty
                else []
            )
            return publisher.publish(state, restored, lambda ids: _held_ids(self._store, ids))

    def restore(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild fresh state from logged ``events`` (curated feature inputs, in order);
        returns how many were not already in the store."""
        records = as_records(self._mem, self.compiled, events)
        held = _held_ids(self._store, [r[2] for r in records])
        fresh = [r for r in records if r[2] not in held]
        self._add(fresh)
        return len(fresh)

    def _add(self, records: Sequence[tuple]) -> None:
        self._load_cards({r[3] for r in records})
        self.state.add(records)
        with self._fresh_lock:
            self._fresh.extend(records)

    def preload(self) -> int:
        """Read every card's events from the store now (instead of at a card's first
        request: a few ms each); how many events were read."""
        cards = set(self.stored_cards())
        before = sum(len(c) for c in self.state.cards.values())
        self._load_cards(cards)
        return sum(len(c) for c in self.state.cards.values()) - before

    def _load_cards(self, cards: set[str]) -> None:
        """Read the store's events of cards seen for the first time (and their fresh ones)."""
        missing = sorted(cards - self._loaded)
        if not missing:
            return
        _read_cards(self.state, self._store, missing)
        self._loaded = self._loaded | set(missing)
        wanted = set(missing)
        self.state.add(r for r in self._fresh if r[3] in wanted)

    def _curate(self, transactions: Sequence[Mapping[str, Any]]) -> None:
        """The request as curated rows in ``online_rows`` (row_idx, input columns), through
        the landing rules, the pseudonymisation and the curation SQL of ingestion."""
        if not transactions:
            raise InvalidTransactions([RowError(0, "transactions", "empty_request", "no rows")])
        mem = self._mem
        names = list(CANONICAL_COLUMNS)
        trimmed = ", ".join(f"nullif(trim({c}), '') AS {c}" for c in names)
        rows = ", ".join(
            "(" + ", ".join([str(i), *(_text(t.get(c)) for c in names)]) + ")"
            for i, t in enumerate(transactions)
        )
        mem.execute(
            f"""CREATE OR REPLACE TEMP TABLE batch AS
                SELECT 0 AS file_id,
                       CAST(try_strptime(trim(event_time),
                                         '{ONLINE_CONTRACT.event_time_format}')
                            AS DATE) AS partition_date,
                       'online' AS file, row_idx, row_idx + 1 AS line, {trimmed}
                FROM (VALUES {rows}) AS t(row_idx, {", ".join(names)})"""
        )
        mem.execute(self._checks)
        days = [r[0] for r in mem.execute("SELECT DISTINCT partition_date FROM checked").fetchall()]
        mem.execute(read_sql("flag_duplicate_ids"), {"days": [d for d in days if d]})
        errors = [
            RowError(int(i), column, rule, mask_card_like_digits(detail or ""))
            for i, rule, column, detail in mem.execute(
                """SELECT row_idx, violation.rule, violation.column, violation.detail
                   FROM checked WHERE violation IS NOT NULL ORDER BY row_idx"""
            ).fetchall()
        ]
        times = mem.execute(
            "SELECT row_idx, event_time_ts FROM checked WHERE violation IS NULL ORDER BY row_idx"
        ).fetchall()
        _refuse(errors + _future(times))
        mem.execute(pseudonyms_sql(), self._pads)
        with transaction(mem):
            mem.execute("DELETE FROM raw.transactions")
            mem.execute("DELETE FROM curated.transactions")
            mem.execute(read_sql("insert_raw_transactions"), {"ingested_at": datetime.now()})
            mem.execute(
                read_sql("curated_transactions"),
                {"days": days, "first": min(days), "last": max(days)},
            )
        mem.execute(
            f"""CREATE OR REPLACE TEMP TABLE online_rows AS
                SELECT source_line - 1 AS row_idx, {", ".join(INPUT_COLUMNS)}
                FROM curated.transactions ORDER BY source_line"""
        )
        kept = {r[0] for r in mem.execute("SELECT row_idx FROM online_rows").fetchall()}
        repeated = [
            RowError(i, "transaction_id", "duplicate_event",
                     "same card, time, amount and merchant as another transaction of the request")
            for i in range(len(transactions)) if i not in kept
        ]  # fmt: skip
        if repeated:
            raise InvalidTransactions(repeated)


def publish_online_state(
    settings: Settings, registry: FeatureRegistry, store: Path
) -> Published | None:
    """Publish the online store file ``store`` to the Redis of ``settings.online_state`` (see
    :meth:`OnlineFeatures.sync_shared`; the prediction log restores what a Redis that holds
    nothing lacks)."""
    features = OnlineFeatures(
        store, registry, settings.pseudonym_key,
        max_amount=settings.max_amount, online_state=settings.online_state,
    )  # fmt: skip
    try:
        return features.sync_shared(PredictionLog(settings.serving_dir).answered_events)
    finally:
        features.close()


def _identity(stat: os.stat_result, events: int, last: datetime | None) -> dict[str, Any]:
    """A store file's identity (see :attr:`StoreInfo.identity`)."""
    return {
        "modified_ns": stat.st_mtime_ns,
        "size": stat.st_size,
        "events": events,
        "last_event_time": None if last is None else last.isoformat(),
    }


def _held_ids(store: duckdb.DuckDBPyConnection, ids: list[str]) -> set[str]:
    """Which of ``ids`` the store (attached as ``store``) holds."""
    return {
        row[0]
        for row in store.execute(
            "SELECT transaction_id FROM store.curated.transactions "
            "WHERE list_contains($ids, transaction_id)",
            {"ids": ids},
        ).fetchall()
    }


def _read_cards(state: FeatureState, store: duckdb.DuckDBPyConnection, cards: list[str]) -> None:
    """Add the store's events of ``cards`` to ``state``."""
    if cards:
        state.load(
            store,
            "store.curated.transactions WHERE list_contains($cards, card_id)",
            {"cards": cards},
        )


def _text(value: Any) -> str:
    """A request value as an SQL literal of the text a landing file would hold."""
    text = request_text(value)
    return "NULL::VARCHAR" if text is None else sql_literal(text)


def _future(times: Iterable[tuple[int, datetime]]) -> list[RowError]:
    """The online rule: an event time later than now (give or take the tolerance)."""
    late = datetime.now() + FUTURE_TOLERANCE
    return [
        RowError(int(i), "event_time", "event_time_in_future", f"{t} is after now")
        for i, t in times
        if t is not None and t > late
    ]


def _refuse(errors: list[RowError]) -> None:
    if errors:
        raise InvalidTransactions(sorted(errors, key=lambda e: e.index))


def _json(value: Any) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.isoformat(sep=" ")
    return value.item() if hasattr(value, "item") else value

"""Online features for transactions given in the contract's canonical columns.

:class:`OnlineFeatures` is the feature source of the online path: one long-lived read-only
connection to a DuckDB file with the warehouse's curated schema (the online store
``online/store.duckdb``, or the warehouse itself). A new transaction goes through the same
steps as a landing-file row: the card number is pseudonymised with the platform's key, the
row is curated by the curation SQL itself (normalisation, reference data, derived fields)
and its features are computed from the card's and the merchant's history
(:func:`~mlplatform.warehouse.features.online_features`), so they equal the offline table's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from mlplatform.warehouse.connection import connect, read_sql
from mlplatform.warehouse.curation import curate_partitions
from mlplatform.warehouse.feature_registry import INPUT_COLUMNS, FeatureRegistry
from mlplatform.warehouse.features import context_events, online_features
from mlplatform.warehouse.pii import card_pseudonym

#: Canonical columns a transaction must have to be scored.
REQUIRED = ("transaction_id", "event_time", "card_number", "amount")
#: Canonical columns carried into raw as they are (when present).
PASSED_THROUGH = (
    "merchant", "category", "gender", "city", "state", "zip", "city_pop", "job",
    "home_lat", "home_long", "merchant_lat", "merchant_long", "label",
)  # fmt: skip


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

    ``frame`` has ``transaction_id``, ``card_id`` (pseudonym), ``event_time`` and
    ``partition_date``, then one column per enabled feature. ``events`` are the curated
    feature inputs of each transaction (JSON-able, no PII), as the prediction log keeps
    them to rebuild fresh state on restart. Times in milliseconds.
    """

    frame: pd.DataFrame
    events: list[dict[str, Any]] = field(repr=False)
    validation_ms: float
    features_ms: float


@dataclass(frozen=True)
class StoreInfo:
    """The store file as opened: when it was written (file time) and its newest event."""

    path: Path
    modified_at: datetime
    last_event_time: datetime | None
    events: int

    def age_hours(self, now: datetime | None = None) -> float:
        return ((now or datetime.now()) - self.modified_at).total_seconds() / 3600


class OnlineFeatures:
    """Feature source over a DuckDB file with the curated schema, for new transactions.

    Not thread-safe: one caller at a time (the service serialises its calls).
    """

    def __init__(self, store_path: Path, registry: FeatureRegistry, pii_key: bytes) -> None:
        self.store_path = Path(store_path)
        self.registry = registry
        self._key = pii_key
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._opened: tuple[int, int] | None = None
        self.info: StoreInfo | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Reopen the store when its file was replaced; True if it was (re)opened."""
        stat = os.stat(self.store_path)
        fingerprint = (stat.st_ino, stat.st_mtime_ns)
        if fingerprint == self._opened:
            return False
        conn = connect(self.store_path, read_only=True)
        last, events = conn.execute(
            "SELECT max(event_time), count(*) FROM curated.transactions"
        ).fetchone()
        if self._conn is not None:
            self._conn.close()
        self._conn, self._opened = conn, fingerprint
        self.info = StoreInfo(
            self.store_path, datetime.fromtimestamp(stat.st_mtime), last, int(events)
        )
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def compute(self, transactions: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        """Validate, curate and compute the features of ``transactions`` (canonical columns).

        Raises :class:`InvalidTransactions` naming each transaction that breaks a rule.
        """
        assert self._conn is not None, "the store is closed"
        started = time.perf_counter()
        errors = [
            RowError(i, name, "missing_required_field", "empty or absent")
            for i, transaction in enumerate(transactions)
            for name in REQUIRED
            if transaction.get(name) in (None, "")
        ]
        if errors:
            raise InvalidTransactions(errors)
        frame = pd.DataFrame(list(transactions))
        validated = time.perf_counter()
        curated = curated_rows(self._conn, frame, self._key)
        features = feature_frame(self._conn, self.registry, curated)
        ids = frame["transaction_id"].astype(str)
        ordered = curated.set_index("transaction_id").loc[ids].reset_index()
        result = ordered[["transaction_id", "card_id", "event_time", "partition_date"]].merge(
            features, on="transaction_id", how="left"
        )
        events = [{c: _json(row[c]) for c in INPUT_COLUMNS} for row in ordered.to_dict("records")]
        done = time.perf_counter()
        return FeatureBatch(result, events, (validated - started) * 1000, (done - validated) * 1000)

    def record(self, batch: FeatureBatch) -> None:
        """Count the scored transactions of ``batch`` in later transactions' windows."""

    def restore(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Rebuild fresh state from logged ``events``; how many were newer than the store."""
        return 0


def _json(value: Any) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.isoformat(sep=" ")
    return value.item() if hasattr(value, "item") else value


def curated_rows(
    conn: duckdb.DuckDBPyConnection, transactions: pd.DataFrame, key: bytes
) -> pd.DataFrame:
    """``transactions`` (canonical columns) as ``curated.transactions`` rows, curated by the
    curation SQL with the reference data of the warehouse ``conn``."""
    missing = [c for c in REQUIRED if c not in transactions.columns]
    if missing:
        raise ValueError(f"transactions lack required canonical columns: {missing}")
    event_time = pd.to_datetime(transactions["event_time"])
    raw = pd.DataFrame(
        {
            "transaction_id": transactions["transaction_id"].astype(str),
            "event_time": event_time,
            "partition_date": event_time.dt.date,
            "card_id": [card_pseudonym(str(n), key) for n in transactions["card_number"]],
            "amount": pd.to_numeric(transactions["amount"]),
            **{c: transactions[c] for c in PASSED_THROUGH if c in transactions.columns},
            "source_file": "online",
            "source_line": range(1, len(transactions) + 1),
            "ingested_at": datetime.now(),
        }
    )
    if "birth_date" in transactions.columns:
        raw["birth_year"] = pd.to_datetime(transactions["birth_date"], errors="coerce").dt.year
    reference = conn.execute(
        "SELECT * FROM raw.card_reference WHERE list_contains($cards, card_id)",
        {"cards": sorted(set(raw["card_id"]))},
    ).df()
    with duckdb.connect() as memory:
        memory.execute(read_sql("create_schema"))
        memory.execute(read_sql("macros"))
        for table, frame in (("raw.transactions", raw), ("raw.card_reference", reference)):
            memory.register("frame", frame)
            memory.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")
            memory.unregister("frame")
        curate_partitions(memory, sorted(set(raw["partition_date"])))
        return memory.execute("SELECT * FROM curated.transactions").df()


def feature_frame(
    conn: duckdb.DuckDBPyConnection, registry: FeatureRegistry, curated: pd.DataFrame
) -> pd.DataFrame:
    """One row of online features per curated transaction (``transaction_id`` first), each
    computed over the warehouse history before it (the transaction itself excluded)."""
    rows = []
    for transaction in curated.to_dict("records"):
        history = context_events(
            conn, registry, transaction["card_id"], transaction["merchant"],
            transaction["event_time"], exclude_transaction_id=transaction["transaction_id"],
        )  # fmt: skip
        features = online_features(registry, history, transaction)
        rows.append({"transaction_id": transaction["transaction_id"], **features})
    return pd.DataFrame(rows)

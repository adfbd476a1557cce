"""Online features for transactions given in the contract's canonical columns.

A new transaction goes through the same steps as a landing-file row, in memory: the card
number is pseudonymised with the warehouse's key, the row is curated by the curation SQL
itself (normalisation, reference data, derived fields) and its features are computed by the
feature SQL over the card's and the merchant's history in the warehouse
(:func:`~mlplatform.warehouse.features.online_features`), so they equal the offline table's.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from mlplatform.warehouse.connection import read_sql
from mlplatform.warehouse.curation import curate_partitions
from mlplatform.warehouse.feature_registry import FeatureRegistry
from mlplatform.warehouse.features import context_events, online_features
from mlplatform.warehouse.pii import card_pseudonym

#: Canonical columns a transaction must have to be scored.
REQUIRED = ("transaction_id", "event_time", "card_number", "amount")
#: Canonical columns carried into raw as they are (when present).
PASSED_THROUGH = (
    "merchant", "category", "gender", "city", "state", "zip", "city_pop", "job",
    "home_lat", "home_long", "merchant_lat", "merchant_long", "label",
)  # fmt: skip


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

"""Batch scoring: ``ml.predictions``, the model's score of every feature row of a range of days.

DuckDB streams the rows as Arrow in chunks of :data:`CHUNK_ROWS`: the keys, and the model's
inputs as DOUBLE columns laid out as :meth:`~mlplatform.ml.models.FeatureSpec.matrix` has them
(categories as their code among the train levels, missing as NaN), so the model gets a float64
matrix and no pandas frame is built. The keys and scores go back as Arrow; while a chunk is
scored, a writer thread inserts the previous one (DuckDB and LightGBM release the GIL). The
rows are read on a cursor of their own; every insert runs in the one transaction that first
deleted the days. No per-row Python, no Python string (``bench/batch_scoring.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import duckdb
import numpy as np
import pyarrow as pa

from mlplatform.features.offline import TABLE as FEATURES_TABLE
from mlplatform.ml.models import FeatureSpec
from mlplatform.serving.model import ModelHandle
from mlplatform.warehouse.connection import read_sql, sql_literal, transactions

TABLE = "ml.predictions"
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
#: The keys of a feature row, which its prediction row carries.
KEYS = ("transaction_id", "card_id", "partition_date")
#: Rows read, scored and written at a time: the read streams, so memory holds a chunk, not
#: the range, and a chunk's insert runs while the next is scored. A demo day (~6-8k rows) is
#: one chunk: chunks of 1-4k rows cost more in per-call overheads than the overlap saved on
#: the 2-core machine (``bench/README.md``).
CHUNK_ROWS = 16384


@dataclass(frozen=True)
class BatchScoringResult:
    """A scored range of days: rows written, positive decisions, score quantiles, the model."""

    start: date
    end: date
    rows: int
    positives: int
    model_name: str
    model_version: str
    dataset_version: str | None
    score_quantiles: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def positive_share(self) -> float:
        """Share of the rows with a positive decision (0 when there are none)."""
        return self.positives / self.rows if self.rows else 0.0


def feature_batches(
    conn: duckdb.DuckDBPyConnection,
    spec: FeatureSpec,
    start: date,
    end: date,
    rows: int = CHUNK_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The :data:`KEYS` and the model's inputs of ``features.card_features`` for the days
    ``start``..``end`` (inclusive), ``rows`` rows at a time (streamed, not held at once).
    The inputs are DOUBLE without nulls, as :meth:`FeatureSpec.matrix` has them: numbers as
    they are (booleans 0/1), categories as their code among the train levels; missing and
    unseen levels NaN. DuckDB does the conversions; :func:`feature_matrix` stacks them."""
    inputs = [f"CAST({name} AS DOUBLE)" for name in spec.numeric]
    for name, levels in spec.categorical.items():
        enum = f"ENUM({', '.join(map(sql_literal, levels))})"
        inputs.append(
            f"CAST(enum_code(TRY_CAST({name} AS {enum})) AS DOUBLE)" if levels else "NULL"
        )
    columns = [
        *KEYS,
        *(
            f"coalesce({value}, 'NaN'::DOUBLE) AS {name}"
            for name, value in zip(spec.names, inputs, strict=True)
        ),
    ]
    # The days as literals: with parameters, DuckDB 1.5.5 reads every row group of the table
    # (a day of 59 inputs: 220 ms instead of 8 ms on the demo's 80 days).
    query = conn.sql(
        f"SELECT {', '.join(columns)} FROM {FEATURES_TABLE} WHERE partition_date BETWEEN "
        f"CAST({sql_literal(start.isoformat())} AS DATE) "
        f"AND CAST({sql_literal(end.isoformat())} AS DATE)"
    )
    yield from query.to_arrow_reader(rows)


def feature_matrix(batch: pa.RecordBatch) -> np.ndarray:
    """The model's inputs of a batch of :func:`feature_batches`: float64 ``(rows, features)``."""
    inputs = batch.columns[len(KEYS) :]
    return np.column_stack([column.to_numpy() for column in inputs])


def score_partitions(
    conn: duckdb.DuckDBPyConnection,
    handle: ModelHandle,
    start: date,
    end: date,
    chunk_rows: int = CHUNK_ROWS,
) -> BatchScoringResult:
    """Replace the partitions ``start``..``end`` (inclusive) of ``ml.predictions`` with the
    scores of ``handle`` on their feature rows, in one transaction (delete, then the insert of
    every chunk of ``chunk_rows`` rows): on any error, the days keep the rows they had."""
    began = time.perf_counter()
    days = {"start": start, "end": end}
    insert = read_sql("insert_predictions")
    constants = {
        "threshold": handle.threshold,
        "model_name": handle.model_name,
        "model_version": handle.version,
        "dataset_version": handle.dataset_version,
        "scored_at": datetime.now(UTC).replace(tzinfo=None),
    }

    def write(keys: pa.RecordBatch, scores: np.ndarray) -> None:
        conn.register("scored", pa.Table.from_batches([keys]).append_column("score", [scores]))
        conn.execute(insert, constants)

    try:
        for attempt in transactions(conn):  # a DuckLake commit that conflicts runs again
            chunks: list[np.ndarray] = []
            with conn.cursor() as reader, attempt, ThreadPoolExecutor(1) as writer:
                conn.execute(
                    f"DELETE FROM {TABLE} WHERE partition_date BETWEEN $start AND $end", days
                )
                written: Future[None] | None = None
                last: tuple[pa.RecordBatch, np.ndarray] | None = None  # scored, not written
                for batch in feature_batches(reader, handle.model.spec, start, end, chunk_rows):
                    if last is not None:  # written while this batch is scored
                        if written is not None:
                            written.result()  # one insert at a time on the connection; its error
                        written = writer.submit(write, *last)
                    scores = handle.score_matrix(feature_matrix(batch))
                    last = (batch.select(KEYS), scores)
                    chunks.append(scores)
                if written is not None:
                    written.result()
                if last is not None:  # the last here: a day of one chunk starts no thread
                    write(*last)
    finally:  # not inside the transaction: an aborted one refuses it
        conn.unregister("scored")
    scores = np.concatenate(chunks) if chunks else np.empty(0)
    quantiles = np.quantile(scores, list(QUANTILES.values())) if len(scores) else []
    return BatchScoringResult(
        start=start,
        end=end,
        rows=len(scores),
        positives=int(np.count_nonzero(scores >= handle.threshold)),
        model_name=handle.model_name,
        model_version=handle.version,
        dataset_version=handle.dataset_version,
        score_quantiles=dict(zip(QUANTILES, map(float, quantiles), strict=False)),
        seconds=time.perf_counter() - began,
    )

"""Batch scoring: ``ml.predictions``, the model's score of every feature row of a range of days.

The model's feature columns are read with DuckDB straight into a DataFrame (numbers as
float64 and categories as categoricals of the train levels, converted by DuckDB; each row's
``rowid`` instead of its string keys), scored in one call
of :meth:`~mlplatform.serving.model.ModelHandle.score`, and the scores go back as an Arrow
table of two numeric columns that DuckDB joins to the keys by rowid: no per-row Python and no
per-row string crosses between DuckDB and Python, so the path costs little more than the
model's own predict (``bench/batch_scoring.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mlplatform.features.declarations import sql_literal
from mlplatform.features.offline import TABLE as FEATURES_TABLE
from mlplatform.ml.models import FeatureSpec
from mlplatform.serving.model import ModelHandle
from mlplatform.warehouse.connection import read_sql, transaction

TABLE = "ml.predictions"
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


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


def feature_frame(
    conn: duckdb.DuckDBPyConnection, spec: FeatureSpec, start: date, end: date
) -> pd.DataFrame:
    """``row_key`` (the rowid) and the model's features of ``features.card_features`` for the
    days ``start``..``end`` (inclusive), typed as the model frame wants them: numbers float64,
    categories pandas categoricals over the train levels (unseen levels missing). DuckDB does
    the conversions, so :meth:`FeatureSpec.frame` finds nothing left to convert."""
    columns = [f"CAST({name} AS DOUBLE) AS {name}" for name in spec.numeric]
    for name, levels in spec.categorical.items():
        enum = f"ENUM({', '.join(map(sql_literal, levels))})" if levels else "VARCHAR"
        columns.append(f"TRY_CAST({name} AS {enum}) AS {name}")
    return conn.execute(
        f"SELECT rowid AS row_key, {', '.join(columns)} FROM {FEATURES_TABLE} "
        "WHERE partition_date BETWEEN $start AND $end",
        {"start": start, "end": end},
    ).df()


def score_partitions(
    conn: duckdb.DuckDBPyConnection, handle: ModelHandle, start: date, end: date
) -> BatchScoringResult:
    """Replace the partitions ``start``..``end`` (inclusive) of ``ml.predictions`` with the
    scores of ``handle`` on their feature rows: read, delete and insert in one transaction."""
    began = time.perf_counter()
    days = {"start": start, "end": end}
    with transaction(conn):  # the rowids stay those of the rows read
        features = feature_frame(conn, handle.model.spec, start, end)
        scores = handle.score(features)
        conn.execute(f"DELETE FROM {TABLE} WHERE partition_date BETWEEN $start AND $end", days)
        # An Arrow table of the two numeric columns: DuckDB reads it without a copy.
        scored = pa.table({"row_key": features["row_key"].to_numpy(), "score": scores})
        conn.register("scored", scored)
        try:
            conn.execute(
                read_sql("insert_predictions"),
                {
                    **days,
                    "threshold": handle.threshold,
                    "model_name": handle.model_name,
                    "model_version": handle.version,
                    "dataset_version": handle.dataset_version,
                    "scored_at": datetime.now(UTC).replace(tzinfo=None),
                },
            )
        finally:
            conn.unregister("scored")
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

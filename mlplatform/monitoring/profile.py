"""Reference distributions that drift is measured against, kept per version.

``ml.training_reference_profile``: the train split's per-feature distributions, one set of rows
per dataset version (a rebuild of a version replaces its rows, other versions stay, so the
reference of a champion trained on an older version outlives a rejected challenger).
``ml.champion_score_profile``: each elected model version's holdout score distribution, and
``ml.champion_feature_importance`` its feature importances.

Numbers: quantile bin edges and the count in each bin (bin ``i`` holds values in
``(edge[i-1], edge[i]]``, the first and last bins are open-ended, missing values are bin -1),
with the mean of each bin's values and the feature's standard deviation and distinct values
(the Wasserstein distance is computed from them). Categories: the frequency of each value
(missing as NULL). Drift bins a day's values with :func:`bin_sql` and compares, without
re-reading the training data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from mlplatform.warehouse.connection import transactions

PROFILE_TABLE = "ml.training_reference_profile"
SCORE_PROFILE_TABLE = "ml.champion_score_profile"
IMPORTANCE_TABLE = "ml.champion_feature_importance"
TRAIN_SPLIT = "(SELECT * FROM ml.master_table WHERE split = 'train')"


@dataclass(frozen=True)
class ProfileResult:
    """The built profile: which dataset version, rows profiled, features by kind."""

    dataset_version: str
    rows: int
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


def bin_sql(column: str, edges: str | Sequence[float]) -> str:
    """SQL of the bin index of ``column`` for ascending ``edges`` (-1 if NULL): the number
    of edges below the value. ``edges`` is an SQL list expression, or the edges themselves
    (known when the SQL is written: a chain of comparisons, several times faster)."""
    if isinstance(edges, str):
        below = f"list_filter({edges}, lambda bin_edge: bin_edge < {column})"
        return f"CASE WHEN {column} IS NULL THEN -1 ELSE len({below}) END"
    steps = " ".join(f"WHEN {column} <= {float(e)!r} THEN {i}" for i, e in enumerate(edges))
    return f"CASE WHEN {column} IS NULL THEN -1 {steps} ELSE {len(edges)} END"


def numeric_profile_sql(name: str, value: str, source: str, bins: int) -> str:
    """SQL of the profile rows of the number ``value`` of ``source`` (a table or subquery),
    named ``name``: ``bins`` quantile bins (every bin, empty ones with count 0), the missing
    bin -1 when there are missing values, each bin's mean, the std and distinct values."""
    quantiles = [k / bins for k in range(1, bins)]
    return f"""(WITH src AS (SELECT {value}::DOUBLE AS v FROM {source}),
          e AS (SELECT coalesce(list_sort(list_distinct(quantile_cont(v, {quantiles}))),
                                []::DOUBLE[]) AS edges,
                       stddev_pop(v) AS std, count(DISTINCT v) AS n_distinct FROM src),
          c AS (SELECT {bin_sql("v", "e.edges")} AS bin, count(*) AS count, avg(v) AS mean
                FROM src, e GROUP BY ALL),
          b AS (SELECT unnest(range(0, len(edges) + 1)) AS bin FROM e
                UNION SELECT bin FROM c WHERE bin = -1)
      SELECT '{name}' AS feature, 'numeric' AS kind, b.bin, NULL::VARCHAR AS category,
             CASE WHEN b.bin >= 1 THEN e.edges[b.bin] END AS lower,
             CASE WHEN b.bin BETWEEN 0 AND len(e.edges) - 1 THEN e.edges[b.bin + 1] END AS upper,
             coalesce(c.count, 0) AS count, c.mean, e.std, e.n_distinct
      FROM b CROSS JOIN e LEFT JOIN c USING (bin))"""


def categorical_profile_sql(name: str, source: str) -> str:
    """SQL of the profile rows of the category ``name`` of ``source``: one row per value."""
    return f"""(SELECT '{name}' AS feature, 'categorical' AS kind, NULL::INTEGER AS bin,
              {name}::VARCHAR AS category, NULL::DOUBLE AS lower, NULL::DOUBLE AS upper,
              count(*) AS count, NULL::DOUBLE AS mean, NULL::DOUBLE AS std,
              NULL::BIGINT AS n_distinct
       FROM {source} GROUP BY {name})"""


def profile_sql(
    features: Mapping[str, str], source: str, bins: int, sources: Mapping[str, str] | None = None
) -> str:
    """SQL of the profile rows (with ``share``) of ``features`` (name -> type: ``VARCHAR`` is
    categorical, others numeric, booleans as 0/1) of ``source`` (or of ``sources[name]``)."""
    sources = sources or {}
    parts = [
        categorical_profile_sql(name, sources.get(name, source))
        if dtype == "VARCHAR"
        else numeric_profile_sql(name, name, sources.get(name, source), bins)
        for name, dtype in features.items()
    ]
    return f"""SELECT *, count / sum(count) OVER (PARTITION BY feature) AS share
               FROM ({" UNION ALL ".join(parts)})"""


def full_window_days(
    conn: duckdb.DuckDBPyConnection, warm_up: Mapping[str, timedelta]
) -> dict[str, date]:
    """Per feature, the first day whose rows had the feature's whole window of history: the
    first curated day plus ``warm_up[name]`` (whole days)."""
    ((first_day,),) = conn.execute(
        "SELECT min(partition_date) FROM curated.transactions"
    ).fetchall()
    return {
        name: first_day + timedelta(days=-(-span // timedelta(days=1)))
        for name, span in warm_up.items()
    }


def warmed_up_train_rows(
    conn: duckdb.DuckDBPyConnection, warm_up: Mapping[str, timedelta], min_rows: int
) -> tuple[dict[str, str], dict[str, str]]:
    """Per feature, the train rows of ``ml.master_table`` whose feature had its whole window
    of history (from :func:`full_window_days` on), as SQL sources; and the features left
    out (fewer than ``min_rows`` such rows), with why.

    A window still filling up (the first 90 days of a 90-day sum) gives smaller values than
    every later day: profiled, it would make each day after training look drifted."""
    sources, skipped = {}, {}
    for name, since in full_window_days(conn, warm_up).items():
        ((rows,),) = conn.execute(
            "SELECT count(*) FROM ml.master_table WHERE split = 'train' AND partition_date >= ?",
            [since],
        ).fetchall()
        if rows < min_rows:
            skipped[name] = (
                f"its {warm_up[name].days}-day window is full from {since} on: {rows} train "
                f"rows (< {min_rows}), not profiled, so not monitored for drift"
            )
        else:
            sources[name] = (
                f"(SELECT * FROM ml.master_table WHERE split = 'train' "
                f"AND partition_date >= DATE '{since.isoformat()}')"
            )
    return sources, skipped


def build_reference_profile(
    conn: duckdb.DuckDBPyConnection,
    features: dict[str, str],
    dataset_version: str,
    bins: int,
    source: str = TRAIN_SPLIT,
    sources: Mapping[str, str] | None = None,
) -> ProfileResult:
    """Replace the rows of ``dataset_version`` in the profile with the profile of ``source``
    (default: the train split of ``ml.master_table``; a feature of ``sources`` from its own
    source); other versions' rows stay.

    ``features`` maps each feature to its type (``VARCHAR`` is categorical; others numeric,
    booleans as 0/1).
    """
    numeric = tuple(name for name, dtype in features.items() if dtype != "VARCHAR")
    categorical = tuple(name for name, dtype in features.items() if dtype == "VARCHAR")
    for attempt in transactions(conn):
        with attempt:
            conn.execute(
                f"DELETE FROM {PROFILE_TABLE} WHERE dataset_version = ?", [dataset_version]
            )
            conn.execute(
                f"""INSERT INTO {PROFILE_TABLE} BY NAME
                    SELECT $version AS dataset_version, *
                    FROM ({profile_sql(features, source, bins, sources)})
                    ORDER BY feature, bin, category""",
                {"version": dataset_version},
            )
    ((rows,),) = conn.execute(f"SELECT count(*) FROM {source}").fetchall()
    return ProfileResult(dataset_version, rows, numeric, categorical)


def record_model_profile(
    conn: duckdb.DuckDBPyConnection,
    model_version: str,
    dataset_version: str,
    holdout_scores: np.ndarray,
    importances: Mapping[str, float],
    bins: int,
) -> None:
    """Replace ``model_version``'s rows of ``ml.champion_score_profile`` (its holdout scores
    in ``bins`` quantile bins) and of ``ml.champion_feature_importance``."""
    scores = pa.table({"score": np.asarray(holdout_scores, dtype=float)})
    ranked = sorted(importances.items(), key=lambda item: -item[1])
    importance = pa.table({
        "feature": [name for name, _ in ranked],
        "importance": [float(value) for _, value in ranked],
        "rank": list(range(1, len(ranked) + 1)),
    })  # fmt: skip
    conn.register("holdout_scores", scores)
    conn.register("importances", importance)
    try:
        for attempt in transactions(conn):
            with attempt:
                conn.execute(f"DELETE FROM {SCORE_PROFILE_TABLE} WHERE model_version = ?",
                             [model_version])  # fmt: skip
                conn.execute(
                    f"""INSERT INTO {SCORE_PROFILE_TABLE} BY NAME
                        SELECT $model AS model_version, $dataset AS dataset_version,
                               * EXCLUDE (feature, kind, category),
                               count / sum(count) OVER () AS share
                        FROM {numeric_profile_sql("score", "score", "holdout_scores", bins)}
                        ORDER BY bin""",
                    {"model": model_version, "dataset": dataset_version},
                )
                conn.execute(f"DELETE FROM {IMPORTANCE_TABLE} WHERE model_version = ?",
                             [model_version])  # fmt: skip
                conn.execute(
                    f"INSERT INTO {IMPORTANCE_TABLE} BY NAME SELECT $model AS model_version, * "
                    "FROM importances",
                    {"model": model_version},
                )
    finally:
        conn.unregister("holdout_scores")
        conn.unregister("importances")

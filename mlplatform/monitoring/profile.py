"""``ml.training_reference_profile``: the training split's per-feature distributions.

Numbers: quantile bin edges of train and the count in each bin (bin ``i`` holds values in
``(edge[i-1], edge[i]]``, the first and last bins are open-ended, missing values are bin -1).
Categories: the frequency of each value (missing as NULL). Drift checks bin a day's values
with :func:`bin_sql` and compare, without re-reading the training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from mlplatform.warehouse.connection import transaction

PROFILE_TABLE = "ml.training_reference_profile"


@dataclass(frozen=True)
class ProfileResult:
    """The built profile: which dataset version, rows profiled, features by kind."""

    dataset_version: str
    rows: int
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


def bin_sql(column: str, edges: str) -> str:
    """SQL of the bin index of ``column`` for a list of ascending ``edges`` (-1 if NULL)."""
    below = f"list_filter({edges}, lambda e: e < {column})"
    return f"CASE WHEN {column} IS NULL THEN -1 ELSE len({below}) END"


def build_reference_profile(
    conn: duckdb.DuckDBPyConnection,
    features: dict[str, str],
    dataset_version: str,
    bins: int,
) -> ProfileResult:
    """Replace the profile with the train split of ``ml.master_table``.

    ``features`` maps each feature to its type (``VARCHAR`` is categorical; others numeric,
    booleans as 0/1).
    """
    numeric = tuple(name for name, dtype in features.items() if dtype != "VARCHAR")
    categorical = tuple(name for name, dtype in features.items() if dtype == "VARCHAR")
    quantiles = [k / bins for k in range(1, bins)]
    parts = []
    for name in numeric:
        value = f"{name}::DOUBLE"
        parts.append(
            f"""SELECT '{name}' AS feature, 'numeric' AS kind, bin, NULL::VARCHAR AS category,
                       CASE WHEN bin >= 1 THEN edges[bin] END AS lower,
                       CASE WHEN bin BETWEEN 0 AND len(edges) - 1 THEN edges[bin + 1] END AS upper,
                       count(*) AS count
                FROM (SELECT {bin_sql(value, "e.edges")} AS bin, e.edges
                      FROM ml.master_table,
                           (SELECT list_sort(list_distinct(quantile_cont({value}, {quantiles})))
                                   AS edges
                            FROM ml.master_table WHERE split = 'train') AS e
                      WHERE split = 'train')
                GROUP BY bin, edges"""
        )
    for name in categorical:
        parts.append(
            f"""SELECT '{name}', 'categorical', NULL, {name}, NULL, NULL, count(*)
                FROM ml.master_table WHERE split = 'train' GROUP BY {name}"""
        )
    with transaction(conn):
        conn.execute(
            f"""CREATE OR REPLACE TABLE {PROFILE_TABLE} AS
                SELECT $version AS dataset_version, feature, kind, bin, category, lower, upper,
                       count, count / sum(count) OVER (PARTITION BY feature) AS share
                FROM ({" UNION ALL ".join(parts)})
                ORDER BY feature, bin, category""",
            {"version": dataset_version},
        )
    rows = conn.execute("SELECT count(*) FROM ml.master_table WHERE split = 'train'").fetchone()[0]
    return ProfileResult(dataset_version, rows, numeric, categorical)

"""``monitoring.performance``: the champion's performance on each day's matured labels.

For a day D, the rows of ``ml.predictions`` of D are joined with their targets in
``ml.targets``. A day is judged once every scored row has a matured target and at least
``min_positives`` of them are positive: average precision, ROC AUC, expected calibration error
(10 equal-width bins, :func:`~mlplatform.ml.evaluation.expected_calibration_error`'s default,
as the holdout ``ece``) and card precision@k, against the holdout figures of the model version
that scored D. A day that cannot be judged still gets its row, with ``judged`` false and the
reason (no predictions, labels not matured yet, too few positives, no holdout figures), so the
table says where every day stands. Rewriting days is idempotent (delete, insert, one
transaction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from mlplatform.warehouse.connection import read_sql, table_exists, transactions

TABLE = "monitoring.performance"
#: Stands for ``ml.targets`` before the first ``target_labels`` run: no row has matured.
_NO_TARGETS = "(SELECT NULL::VARCHAR AS transaction_id, false AS matured, NULL::INTEGER AS target)"


@dataclass(frozen=True)
class PerformanceRule:
    """When a day is judged and when it counts as degraded."""

    ap_margin: float  # degraded when holdout AP - day AP > ap_margin
    min_positives: int  # matured positives needed to judge
    k: int  # cards of card precision@k


@dataclass(frozen=True)
class DayPerformance:
    """One row of ``monitoring.performance``; shares in [0, 1], None where undefined."""

    partition_date: date
    model_version: str | None
    dataset_version: str | None
    rows: int
    matured: int
    positives: int
    average_precision: float | None
    roc_auc: float | None
    calibration_error: float | None
    card_precision_at_k: float | None
    holdout_average_precision: float | None
    holdout_roc_auc: float | None
    holdout_calibration_error: float | None
    ap_drop: float | None
    judged: bool
    degraded: bool | None
    reason: str


def day_performance(
    day: date,
    rows: pd.DataFrame,
    versions: tuple[str | None, str | None],
    holdout: Mapping[str, float],
    rule: PerformanceRule,
) -> DayPerformance:
    """The performance of the scored ``rows`` of ``day`` (columns card, score, matured,
    target), scored by ``versions`` (model version, dataset version), against ``holdout`` (the
    model version's holdout metrics by name: ``average_precision``, ``roc_auc``, ``ece``)."""
    matured = rows[rows["matured"]]
    positives = int((matured["target"] == 1).sum())
    version, dataset_version = versions
    common = {
        "partition_date": day,
        "model_version": version,
        "dataset_version": dataset_version,
        "rows": len(rows),
        "matured": len(matured),
        "positives": positives,
        "holdout_average_precision": _finite(holdout.get("average_precision")),
        "holdout_roc_auc": _finite(holdout.get("roc_auc")),
        "holdout_calibration_error": _finite(holdout.get("ece")),
    }
    if rows.empty:
        return _unjudged(common, f"no predictions for {day} in ml.predictions")
    if len(matured) < len(rows):
        return _unjudged(
            common,
            f"labels not matured yet: {len(matured):,} of {len(rows):,} scored rows have a "
            "matured target in ml.targets",
        )
    # scikit-learn (and SciPy) are imported by the run that judges a day, not by every
    # process that loads the code location (2 of its 4 s of imports).
    from mlplatform.ml.evaluation import (
        card_precision_at_k,
        expected_calibration_error,
        ranking_scores,
    )

    y = matured["target"].to_numpy(dtype=np.int64)
    p = matured["score"].to_numpy(dtype=np.float64)
    roc_auc, average_precision = ranking_scores(y, p)
    figures = {
        **common,
        "average_precision": _finite(average_precision),
        "roc_auc": _finite(roc_auc),
        "calibration_error": expected_calibration_error(y, p),
        "card_precision_at_k": card_precision_at_k(y, p, matured["card"].to_numpy(), rule.k)[0],
    }
    if positives < rule.min_positives:
        return _unjudged(
            figures,
            f"not enough matured positives to judge ({positives} < {rule.min_positives})",
        )
    holdout_ap = figures["holdout_average_precision"]
    if holdout_ap is None or figures["average_precision"] is None:
        return _unjudged(figures, f"no holdout average precision for model version {version}")
    drop = holdout_ap - figures["average_precision"]
    degraded = drop > rule.ap_margin
    return DayPerformance(
        **figures,
        ap_drop=drop,
        judged=True,
        degraded=degraded,
        reason=f"holdout AP {holdout_ap:.4f} - day AP {figures['average_precision']:.4f} = "
        f"{drop:.4f} {'>' if degraded else '<='} margin {rule.ap_margin}",
    )


def measure_performance(
    conn: duckdb.DuckDBPyConnection,
    start: date,
    end: date,
    holdout_metrics: Callable[[str], Mapping[str, float]],
    rule: PerformanceRule,
) -> list[DayPerformance]:
    """Compute and write (replacing them) the rows of the days ``start``..``end`` of
    ``monitoring.performance``, one per day; ``holdout_metrics`` gives a model version's
    holdout metrics (empty when unknown)."""
    has_targets = table_exists(conn, "ml.targets")
    sql = read_sql("matured_predictions").format(
        targets="ml.targets" if has_targets else _NO_TARGETS
    )
    params = {"start": start, "end": end}
    scored = conn.execute(sql, params).df()
    versions = {
        day: (model_version, dataset_version)
        for day, model_version, dataset_version in conn.execute(
            "SELECT partition_date, mode(model_version), mode(dataset_version) "
            "FROM ml.predictions WHERE partition_date BETWEEN $start AND $end GROUP BY 1",
            params,
        ).fetchall()
    }
    by_day = {key.date(): rows for key, rows in scored.groupby("partition_date")}
    results = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        version = versions.get(day, (None, None))
        holdout = holdout_metrics(version[0]) if version[0] else {}
        results.append(
            day_performance(day, by_day.get(day, scored.iloc[:0]), version, holdout, rule)
        )
    computed_at = datetime.now(UTC).replace(tzinfo=None)  # the warehouse keeps UTC, naive
    frame = pd.DataFrame([asdict(r) for r in results]).assign(computed_at=computed_at)
    conn.register("performance_rows", frame)
    try:
        for attempt in transactions(conn):
            with attempt:
                conn.execute(
                    f"DELETE FROM {TABLE} WHERE partition_date BETWEEN ? AND ?", [start, end]
                )
                conn.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM performance_rows")
    finally:
        conn.unregister("performance_rows")
    return results


def _unjudged(figures: dict[str, object], reason: str) -> DayPerformance:
    """A day that is not judged, with whatever figures it has."""
    metrics = {"average_precision": None, "roc_auc": None, "calibration_error": None,
               "card_precision_at_k": None}  # fmt: skip
    return DayPerformance(
        **{**metrics, **figures}, ap_drop=None, judged=False, degraded=None, reason=reason
    )


def _finite(value: float | None) -> float | None:
    """``value`` as a float, None when missing or NaN (an undefined metric)."""
    return None if value is None or math.isnan(value) else float(value)

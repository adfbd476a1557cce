"""Monitoring: the champion's performance on each day's matured labels (``model_performance``).

Labels mature late (revenge spending: 72 hours after the transaction; a carried label: the
label delay, MLPLATFORM_LABEL_DELAY_DAYS), so day D can be judged only that long after its
end: the ``model_performance_schedule`` runs the latest day that has matured (job
``performance_monitoring``). MLflow is
imported inside the asset: only its runs need it.
"""

import functools
from collections.abc import Mapping

import dagster as dg

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.metadata import table_metadata
from mlplatform.assets.partitions import daily_partitions, partition_days
from mlplatform.assets.scoring import predictions
from mlplatform.assets.training_data import ML_OWNERS, target_labels
from mlplatform.monitoring.performance import (
    TABLE,
    DayPerformance,
    PerformanceRule,
    measure_performance,
)
from mlplatform.resources import MlflowResource, WarehouseResource
from mlplatform.settings import get_settings

CHECK = "performance_within_margin"
#: Figures of a day shown on its materialization (numbers plot over the partitions in the UI).
FIGURES = (
    "rows", "matured", "positives", "average_precision", "roc_auc", "calibration_error",
    "card_precision_at_k", "holdout_average_precision", "holdout_roc_auc", "ap_drop",
)  # fmt: skip


@dg.asset(
    group_name="monitoring",
    kinds={"duckdb", "mlflow"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[predictions, target_labels],
    check_specs=[dg.AssetCheckSpec(CHECK, asset="model_performance")],
    description=f"`{TABLE}`: the champion's average precision, ROC AUC, expected calibration "
    "error (10 equal-width bins) and card precision@k (MLPLATFORM_CARD_PRECISION_K) on the "
    "day's matured labels (`ml.predictions` joined with `ml.targets`), beside the holdout "
    "figures of the model version that scored the day. A day is judged once every scored row "
    "has a matured target and MLPLATFORM_PERFORMANCE_MIN_POSITIVES of them are positive; "
    "other days get a row with judged = false and the reason. Check: holdout AP minus the "
    "day's AP within MLPLATFORM_PERFORMANCE_AP_MARGIN (on the latest judged day of the run).",
)
@with_compute_cost
def model_performance(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow_store: MlflowResource
) -> dg.MaterializeResult:
    settings = get_settings()
    rule = PerformanceRule(
        ap_margin=settings.performance_ap_margin,
        min_positives=settings.performance_min_positives,
        k=settings.card_precision_k,
    )
    start, end = partition_days(context)
    holdout = functools.cache(functools.partial(_holdout_metrics, mlflow_store))
    with warehouse.connection() as conn:
        days = measure_performance(conn, start, end, holdout, rule)
        metadata = table_metadata(conn, TABLE, start if start == end else None)
    for day in days:
        context.log.info("%s: %s", day.partition_date, day.reason)
        context.add_asset_metadata(_day_metadata(day), partition_key=day.partition_date.isoformat())
    judged = [day for day in days if day.judged]
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "days_judged": len(judged),
            "days_not_judged": len(days) - len(judged),
        },
        check_results=[_check(judged[-1] if judged else days[-1], judged, rule)],
    )


def _holdout_metrics(mlflow_store: MlflowResource, version: str) -> Mapping[str, float]:
    """The registered version's holdout metrics; empty when the registry does not have it."""
    from mlflow.exceptions import MlflowException

    from mlplatform.serving.model import registered_holdout_metrics

    try:
        return registered_holdout_metrics(
            mlflow_store.tracking_uri, mlflow_store.model_name, version
        )
    except MlflowException:
        return {}


def _day_metadata(day: DayPerformance) -> dict[str, object]:
    """What a day's materialization shows: whether it was judged, why, and its figures."""
    figures = {name: getattr(day, name) for name in FIGURES}
    return {
        "judged": day.judged,
        "status": day.reason,
        "model_version": day.model_version or "(none)",
        **{name: value for name, value in figures.items() if value is not None},
    }


def _check(
    day: DayPerformance, judged: list[DayPerformance], rule: PerformanceRule
) -> dg.AssetCheckResult:
    """``performance_within_margin`` on ``day`` (the latest judged day of the run, else its
    last day, which passes unjudged)."""
    metadata: dict[str, object] = {
        "partition": day.partition_date.isoformat(),
        "judged": day.judged,
        "reason": day.reason,
        "model_version": day.model_version or "(none)",
        "ap_margin": rule.ap_margin,
        "min_positives": rule.min_positives,
        **{name: getattr(day, name) for name in FIGURES if getattr(day, name) is not None},
    }
    degraded_days = [d.partition_date.isoformat() for d in judged if d.degraded]
    if len(judged) > 1:
        metadata["degraded_days_in_run"] = ", ".join(degraded_days) or "(none)"
    return dg.AssetCheckResult(
        check_name=CHECK,
        passed=not day.degraded,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{day.partition_date}: {day.reason}",
        metadata=metadata,
    )

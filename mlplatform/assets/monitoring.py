"""Monitoring stage: data drift and prediction drift of every day, with their checks.

Each day is compared with the reference of the champion that scored it (its dataset
version's training profile, its holdout scores). A run over a range computes every day; its
check judges every day and reports the worst one. A day no champion has scored yet is
skipped (metadata says why; the check passes).
"""

from datetime import date

import dagster as dg
import duckdb

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.features import card_features
from mlplatform.assets.ingestion import partitions_result, range_label
from mlplatform.assets.partitions import daily_partitions
from mlplatform.assets.scoring import predictions
from mlplatform.assets.serving import serving_log
from mlplatform.assets.training_data import ML_OWNERS
from mlplatform.features.declarations import feature_registry
from mlplatform.monitoring import drift
from mlplatform.monitoring.drift import DayDrift, DriftRule, Judgement
from mlplatform.monitoring.profile import full_window_days
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import Settings, get_settings

DRIFT_CHECK = "drift_within_threshold"
PREDICTION_DRIFT_CHECK = "prediction_drift_within_threshold"


def drift_rule(settings: Settings) -> DriftRule:
    """The per-feature verdict's thresholds from settings."""
    return DriftRule(settings.drift_distance_threshold, settings.drift_p_value)


def _days(context: dg.AssetExecutionContext) -> list[date]:
    return [date.fromisoformat(key) for key in context.partition_keys]


def _features_markdown(day: DayDrift) -> dg.MetadataValue:
    lines = ["| feature | kind | PSI | distance | p | drifted |", "|---|---|---:|---:|---:|---|"]
    for f in sorted(day.features, key=lambda f: (not f.drifted, -f.psi)):
        distance = "" if f.distance is None else f"{f.distance:.4f} ({f.distance_name})"
        lines.append(f"| {f.feature} | {f.kind} | {f.psi:.4f} | {distance} | {f.p_value:.3g} "
                     f"| {'yes' if f.drifted else ''} |")  # fmt: skip
    return dg.MetadataValue.md("\n".join(lines) + "\n")


def _day_metadata(day: DayDrift) -> dict[str, object]:
    metadata: dict[str, object] = {"partition": day.partition_date.isoformat(),
                                   "status": day.status}  # fmt: skip
    if day.scorer is not None:
        metadata["model_version"] = day.scorer.model_version
        metadata["reference_dataset_version"] = day.scorer.dataset_version or "(unknown)"
    if day.computed:
        metadata |= {
            "dagster/row_count": len(day.features),
            "rows": day.features[0].rows,
            "drifted": len(day.drifted),
            "drifted_share": round(day.drifted_share, 4),
            "drifted_features": ", ".join(f.feature for f in day.drifted) or "(none)",
            "features": _features_markdown(day),
        }
    return metadata


def _report_features(day: DayDrift, columns: int) -> dict[str, str]:
    """The ``columns`` features of the day with the highest PSI (the drifted ones first), as
    name -> kind: the Evidently report's columns (its cost grows with them)."""
    ranked = sorted(day.features, key=lambda f: (not f.drifted, -f.psi))[:columns]
    return {f.feature: f.kind for f in ranked}


def _partition_label(results: list[DayDrift]) -> str:
    keys = [str(d.partition_date) for d in results]
    return keys[0] if len(keys) == 1 else range_label(keys)


def _check_result(
    check_name: str, results: list[DayDrift], judgements: list[Judgement]
) -> dg.AssetCheckResult:
    """The run's check: every computed day judged, the worst one reported (as ``partition``)."""
    if not judgements:
        return dg.AssetCheckResult(
            check_name=check_name, passed=True,
            description=f"skipped: {results[0].status}" if results else "skipped",
            metadata={"partition": _partition_label(results), "skipped": True},
        )  # fmt: skip
    judged = drift.worst(judgements)
    failing = [str(j.partition_date) for j in judgements if not j.passed]
    metadata: dict[str, object] = {
        "partition": judged.partition_date.isoformat(),
        "share": round(judged.share, 4),
        "failed_features": dg.MetadataValue.json(
            {
                f.feature: {
                    "psi": round(f.psi, 4),
                    "distance": None if f.distance is None else round(f.distance, 4),
                    "distance_name": f.distance_name,
                    "p_value": f.p_value,
                }
                for f in judged.watched
            }
        ),
        # A list: the retraining sensor's reason names the first few and counts the rest.
        "failed_feature_names": dg.MetadataValue.json([f.feature for f in judged.watched]),
        "partitions_checked": len(judgements),
        "partitions_failing": ", ".join(failing) or "(none)",
    }
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=judged.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{judged.partition_date}: " + "; ".join(judged.reasons)
        if judged.reasons
        else f"no drift beyond the thresholds ({len(judgements)} days)",
        metadata=metadata,
    )


def _result(
    context: dg.AssetExecutionContext,
    per_partition: dict[str, dict[str, object]],
    check_name: str,
    results: list[DayDrift],
    judgements: list[Judgement],
) -> dg.MaterializeResult:
    """Each day's metadata, the run's counts and the run's check."""
    counts = {
        "range": range_label(list(per_partition)),
        "days_computed": len(judgements),
        "days_failing": sum(not j.passed for j in judgements),
    }
    check = _check_result(check_name, results, judgements)
    return partitions_result(context, per_partition, counts, [check])


def _report(
    conn: duckdb.DuckDBPyConnection,
    day: DayDrift,
    settings: Settings,
    full_from: dict[str, date],
) -> object:
    """The day's Evidently report as metadata: its path, or why there is none."""
    from mlplatform.monitoring.drift_report import write_drift_report

    path = write_drift_report(
        conn, day.partition_date, _report_features(day, settings.drift_report_columns),
        day.scorer.dataset_version, settings.datasets_dir, settings.reports_dir,
        settings.drift_report_rows, full_from,
    )  # fmt: skip
    return dg.MetadataValue.path(str(path)) if path else "(the dataset's snapshot is gone)"


@dg.asset(
    group_name="monitoring",
    kinds={"duckdb", "evidently"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[card_features, predictions],
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="data_drift",
            description="Fails (ERROR) when the share of drifted features reaches "
            "MLPLATFORM_DRIFT_SHARE_THRESHOLD or the PSI of one of the champion's "
            "MLPLATFORM_DRIFT_TOP_FEATURES most important features passes "
            "MLPLATFORM_DRIFT_PSI_THRESHOLD (significantly); a range reports its worst day.",
        )
    ],
    description="`monitoring.drift` (kinds numeric, categorical): each model feature of the day "
    "against the training profile of the champion's dataset version, from the stored bins: "
    "PSI, normed Wasserstein (numbers) or Jensen-Shannon (categories), and a verdict that "
    "needs the distance over its threshold and a significant chi-square test (small days "
    "raise no false alarms; a card's or merchant's rows count at their effective sample "
    "size, `effective_rows`). One row per day and feature, replaced per day. An Evidently "
    "report per day under `reports/data_drift/`.",
)
@with_compute_cost
def data_drift(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    settings = get_settings()
    registry = feature_registry(settings, landing.contract)
    entities = {f.name: f.entity for f in registry.features}
    warm_up = {f.name: registry.warm_up(f.name) for f in registry.enabled}
    with warehouse.connection() as conn:
        full_from = full_window_days(conn, warm_up)
        rule = drift_rule(settings)
        results = [drift.data_drift(conn, day, rule, entities) for day in _days(context)]
        drift.store_drift(conn, results, drift.DATA_KINDS)
        per_partition = {str(d.partition_date): _day_metadata(d) for d in results}
        judgements = []
        for day in (d for d in results if d.computed):
            important = drift.top_features(conn, day.scorer.model_version,
                                           settings.drift_top_features)  # fmt: skip
            judgements.append(drift.judge_data_drift(
                day, important, settings.drift_share_threshold, settings.drift_psi_threshold
            ))  # fmt: skip
            if settings.drift_report:
                per_partition[str(day.partition_date)]["report"] = _report(
                    conn, day, settings, full_from
                )
    for day in results:
        names = ", ".join(f.feature for f in day.drifted)
        summary = f"{len(day.drifted)} of {len(day.features)} features drifted {names}"
        context.log.info("%s: %s", day.partition_date, summary if day.computed else day.status)
    return _result(context, per_partition, DRIFT_CHECK, results, judgements)


@dg.asset(
    group_name="monitoring",
    kinds={"duckdb"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[predictions, serving_log],
    check_specs=[
        dg.AssetCheckSpec(
            PREDICTION_DRIFT_CHECK,
            asset="prediction_drift",
            description="Fails (ERROR) when the PSI of the day's scores against the "
            "champion's holdout scores passes MLPLATFORM_DRIFT_PSI_THRESHOLD (significantly); "
            "a range reports its worst day.",
        )
    ],
    description="`monitoring.drift` (kind prediction): the day's batch scores (`score`, from "
    "`ml.predictions`) and the REST service's answers of the champion (`served_score`, from "
    "`monitoring.serving_log`, when it logged any) against the holdout score distribution "
    "of the champion that scored the day (`ml.champion_score_profile`): PSI and normed "
    "Wasserstein. Replaced per day.",
)
@with_compute_cost
def prediction_drift(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    settings = get_settings()
    with warehouse.connection() as conn:
        rule = drift_rule(settings)
        results = [drift.prediction_drift(conn, day, rule) for day in _days(context)]
        drift.store_drift(conn, results, [drift.PREDICTION])
    judgements = [
        drift.judge_prediction_drift(day, settings.drift_psi_threshold)
        for day in results
        if day.computed
    ]
    per_partition = {str(d.partition_date): _day_metadata(d) for d in results}
    for day in results:
        context.log.info("%s: %s", day.partition_date, "; ".join(
            f"{f.feature} PSI {f.psi:.3f}, Wasserstein {f.distance or 0:.3f}"
            for f in day.features
        ) or day.status)  # fmt: skip
    return _result(context, per_partition, PREDICTION_DRIFT_CHECK, results, judgements)

"""Training data: matured targets, the master table (with its checks) and its profile."""

import dagster as dg

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.features import card_features
from mlplatform.assets.ingestion import OWNERS
from mlplatform.assets.metadata import table_metadata
from mlplatform.features.declarations import feature_registry
from mlplatform.ml.master_table import build_master_table, master_table_checks
from mlplatform.monitoring.profile import (
    PROFILE_TABLE,
    build_reference_profile,
    warmed_up_train_rows,
)
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.targets import build_targets

ML_OWNERS = ["team:ml-platform"]
MASTER_TABLE_CHECKS = ("no_leakage", "enough_rows_and_positives", "splits_disjoint")


@dg.asset(
    group_name="training_data",
    kinds={"duckdb"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[card_features],
    description="`ml.targets`: every curated transaction's target (the contract's `target`: "
    "the built revenge-spending label or the carried label) with the quantities behind it. "
    "A target is NULL until it matures (revenge: 72 hours; label: the label delay).",
)
@with_compute_cost
def target_labels(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    with warehouse.connection() as conn:
        result = build_targets(conn, get_settings(), landing.contract)
        metadata = table_metadata(conn, "ml.targets")
    context.log.info(
        "%s: %d of %d targets matured, %d positive", result.target, result.matured,
        result.rows, result.positives,
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "target": result.target,
            "as_of": str(result.as_of),
            "matured": result.matured,
            "immature": result.rows - result.matured,
            "positives": result.positives,
            "prevalence": round(result.positives / max(result.matured, 1), 5),
        }
    )


@dg.asset(
    group_name="training_data",
    kinds={"duckdb", "parquet"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[card_features, target_labels],
    check_specs=[
        dg.AssetCheckSpec(name, asset="master_table", blocking=True) for name in MASTER_TABLE_CHECKS
    ],
    description="`ml.master_table`: features + matured target + card + split. The latest "
    "matured days are the out-of-time holdout; earlier rows split into train and validation "
    "by card. Feature selection (constant, all-missing, near-duplicate) is recorded in "
    "`ml.feature_selection`. Also a Parquet snapshot whose content hash is the dataset "
    "version. Checks: leakage, minimum rows and positives, split disjointness.",
)
@with_compute_cost
def master_table(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    settings = get_settings()
    registry = feature_registry(settings, landing.contract)
    with warehouse.connection() as conn:
        result = build_master_table(conn, registry, settings, settings.datasets_dir)
        checks = master_table_checks(conn, settings)
        metadata = table_metadata(conn, "ml.master_table")
    dropped = [d for d in result.selection if not d.kept]
    context.log.info(
        "dataset %s: %s rows, %d features kept, %d dropped",
        result.version[:16], result.rows, len(result.features), len(dropped),
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "dataset_version": result.version,
            "snapshot": dg.MetadataValue.path(str(result.snapshot)),
            **{f"rows_{split}": rows for split, rows in result.rows.items()},
            **{f"positives_{split}": n for split, n in result.positives.items()},
            "holdout_days": f"{result.holdout_start} .. {result.holdout_end}",
            "features_kept": len(result.features),
            "features_dropped": dg.MetadataValue.md(
                "\n".join(f"- `{d.feature}`: {d.reason}" for d in dropped) or "(none)"
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=check.name,
                passed=check.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=check.description,
                metadata={
                    key: dg.MetadataValue.json(value) if isinstance(value, dict) else value
                    for key, value in check.details.items()
                },
            )
            for check in checks
        ],
    )


@dg.asset(
    group_name="training_data",
    kinds={"duckdb"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[master_table],
    description=f"`{PROFILE_TABLE}`: per-feature distribution of the training split "
    "(quantile bins with counts and means, and the std, for numbers; frequencies for "
    "categories), one set of rows per dataset version (a rebuild replaces its version's "
    "rows): the reference `data_drift` compares a day with, the profile of the dataset "
    "version of the champion that scored the day, without re-reading the training data.",
)
@with_compute_cost
def training_reference_profile(
    warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    settings = get_settings()
    registry = feature_registry(settings, landing.contract)
    with warehouse.connection() as conn:
        kept = {
            row[0]
            for row in conn.execute(
                "SELECT feature FROM ml.feature_selection WHERE kept"
            ).fetchall()
        }
        version = conn.execute(
            "SELECT any_value(dataset_version) FROM ml.feature_selection"
        ).fetchone()[0]
        monitored = [f for f in registry.enabled if f.name in kept and not f.calendar]
        sources, skipped = warmed_up_train_rows(
            conn, {f.name: registry.warm_up(f.name) for f in monitored}, settings.profile_min_rows
        )
        features = {f.name: f.dtype for f in monitored if f.name in sources}
        result = build_reference_profile(
            conn, features, version, settings.profile_bins, sources=sources
        )
        metadata = table_metadata(conn, PROFILE_TABLE)
        versions_kept = conn.execute(
            f"SELECT count(DISTINCT dataset_version) FROM {PROFILE_TABLE}"
        ).fetchone()[0]
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "dataset_version": result.dataset_version,
            "dataset_versions_kept": versions_kept,
            "train_rows": result.rows,
            "numeric_features": len(result.numeric),
            "categorical_features": len(result.categorical),
            "not_profiled": dg.MetadataValue.md(
                "\n".join(
                    [
                        f"- `{f.name}`: a calendar feature (a day differs from any multi-day "
                        "distribution by design)"
                        for f in registry.enabled
                        if f.name in kept and f.calendar
                    ]
                    + [f"- `{name}`: {why}" for name, why in skipped.items()]
                )
                or "(none)"
            ),
        }
    )

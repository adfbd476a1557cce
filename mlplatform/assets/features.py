"""Feature stage: the point-in-time card features of every curated transaction."""

import dagster as dg
import pandas as pd

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.ingestion import OWNERS
from mlplatform.assets.metadata import table_metadata
from mlplatform.assets.partitions import daily_partitions, partition_days
from mlplatform.features.declarations import feature_registry
from mlplatform.features.offline import TABLE, build_card_features
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings


@dg.asset(
    group_name="features",
    kinds={"duckdb"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[curated_transactions],
    check_specs=[
        dg.AssetCheckSpec(
            "one_row_per_curated_transaction",
            asset="card_features",
            blocking=True,
            description="Every curated transaction of the run's days has exactly one feature row.",
        )
    ],
    description="`features.card_features`: one row per curated transaction with the "
    "registry's features (card windows over 1h-90d, amount vs the card's habits, the "
    "discretionary restraint signal, credit and income ratios, category and merchant "
    "familiarity, distance and speed, calendar, matured merchant risk). Point in time: a "
    "transaction's features use only events at or before it. A run over several days reads "
    "their lookback once and writes only those days.",
)
@with_compute_cost
def card_features(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    start, end = partition_days(context)
    registry = feature_registry(get_settings(), landing.contract)
    with warehouse.connection() as conn:
        result = build_card_features(conn, registry, start, end)
        duplicates = conn.execute(
            f"""SELECT count(*) - count(DISTINCT transaction_id) FROM {TABLE}
                WHERE partition_date BETWEEN ? AND ?""",
            [start, end],
        ).fetchone()[0]
        metadata = table_metadata(conn, TABLE, start if start == end else None)
    if result.table_recreated:
        context.log.warning(
            "the enabled features changed: %s was recreated and holds only %s..%s until the "
            "other days are rebuilt",
            TABLE,
            start,
            end,
        )
    context.log.info("%d feature rows for %s..%s in %.1fs", result.rows, start, end, result.seconds)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "dagster/row_count": result.rows,
            "days": f"{start} .. {end}",
            "lookback_from": str(result.lookback_start),
            "features_on": len(registry.enabled),
            "features_off": ", ".join(f.name for f in registry.disabled) or "(none)",
            "feature_registry": dg.MetadataValue.md(
                pd.DataFrame(registry.describe()).to_markdown(index=False)
            ),
            "seconds": round(result.seconds, 2),
            "rows_per_second": round(result.rows / max(result.seconds, 1e-9)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="one_row_per_curated_transaction",
                passed=result.rows == result.curated_rows and duplicates == 0,
                metadata={
                    "feature_rows": result.rows,
                    "curated_rows": result.curated_rows,
                    "duplicate_transaction_ids": duplicates,
                },
            )
        ],
    )

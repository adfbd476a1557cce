"""Scoring stage: the champion's score of every day (``ml.predictions``).

MLflow and the model libraries are imported inside the asset: every Dagster process loads
this code location, and only scoring runs need them.
"""

import dagster as dg

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.features import card_features
from mlplatform.assets.metadata import table_metadata
from mlplatform.assets.partitions import daily_partitions, partition_days
from mlplatform.assets.training_data import ML_OWNERS
from mlplatform.resources import MlflowResource, WarehouseResource

NO_CHAMPION = "no champion yet"


@dg.asset(
    group_name="scoring",
    kinds={"duckdb", "mlflow"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[card_features],
    description="`ml.predictions`: the champion's calibrated score of every feature row of the "
    "day and its decision (score >= the champion's threshold), with the model version and "
    "dataset version that scored it. Idempotent per day (delete, insert, one transaction). "
    "Before the first champion the run succeeds and writes nothing (metadata: no champion "
    "yet); a backfill of the asset then scores the earlier days.",
)
@with_compute_cost
def predictions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow_store: MlflowResource
) -> dg.MaterializeResult:
    from mlplatform.ml.registry import CHAMPION
    from mlplatform.serving.batch import TABLE, score_partitions
    from mlplatform.serving.model import NoModelError, load_model

    start, end = partition_days(context)
    days = f"{start} .. {end}"
    try:
        handle = load_model(mlflow_store.tracking_uri, mlflow_store.model_name, CHAMPION)
    except NoModelError as error:
        context.log.info("%s: nothing scored for %s (%s)", NO_CHAMPION, days, error)
        return dg.MaterializeResult(
            metadata={"status": NO_CHAMPION, "days": days, "dagster/row_count": 0}
        )
    with warehouse.connection() as conn:
        result = score_partitions(conn, handle, start, end)
        metadata = table_metadata(conn, TABLE, start if start == end else None)
    context.log.info(
        "%d rows of %s scored by version %s in %.2fs", result.rows, days, result.model_version,
        result.seconds,
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "status": f"scored by {result.model_name} version {result.model_version}",
            "days": days,
            "dagster/row_count": result.rows,
            "positive_share": round(result.positive_share, 6),
            **{f"score_{name}": value for name, value in result.score_quantiles.items()},
            "model_name": result.model_name,
            "model_version": result.model_version,
            "model_page": mlflow_store.model_version_link(str(result.model_version)),
            "dataset_version": result.dataset_version or "(unknown)",
            "seconds": round(result.seconds, 3),
            "rows_per_second": round(result.rows / max(result.seconds, 1e-9)),
        }
    )

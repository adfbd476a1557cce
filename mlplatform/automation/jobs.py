"""Jobs: what runs together."""

import dagster as dg

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.features import card_features
from mlplatform.assets.freshness import raw_transactions_landed_on_time
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.assets.monitoring import data_drift, prediction_drift
from mlplatform.assets.partitions import daily_partitions
from mlplatform.assets.performance import model_performance
from mlplatform.assets.scoring import predictions
from mlplatform.assets.serving import online_feature_store
from mlplatform.assets.training_data import master_table, target_labels, training_reference_profile
from mlplatform.resources import WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.maintenance import checkpoint_lake

daily_ingestion_job = dg.define_asset_job(
    "daily_ingestion",
    # Lateness is about today, not about the days a run loads: a backfill of history does not
    # evaluate it (`landing_freshness` does, hourly).
    selection=dg.AssetSelection.assets(
        raw_transactions,
        curated_transactions,
        card_features,
        predictions,
        data_drift,
        prediction_drift,
        online_feature_store,
    )
    - dg.AssetSelection.checks(raw_transactions_landed_on_time),
    partitions_def=daily_partitions,
    description="Validate one day's landing file(s) into raw, curate them, build their "
    "features, score them with the champion and measure their data and prediction drift "
    "(a range of days runs as one run), then rewrite the online feature store.",
    # Each step needs the one before and the warehouse pool: one process runs them in turn,
    # where the multiprocess executor would start (and import the platform in) one per step.
    executor_def=dg.in_process_executor,
)
history_ingestion_job = dg.define_asset_job(
    "history_ingestion",
    selection=dg.AssetSelection.assets(raw_transactions, curated_transactions, card_features)
    - dg.AssetSelection.checks(raw_transactions_landed_on_time),
    partitions_def=daily_partitions,
    description="Load days of history (`mlplatform import --ingest`): validate, curate and "
    "build their features, a range as one run. Scoring and drift are for the days a "
    "champion serves: `batch_scoring` and `monitoring` backfill them when wanted.",
    executor_def=dg.in_process_executor,
)
batch_scoring_job = dg.define_asset_job(
    "batch_scoring",
    selection=dg.AssetSelection.assets(predictions),
    partitions_def=daily_partitions,
    description="Score days with the champion (`ml.predictions`), e.g. the days before the "
    "first champion, or again after a new one.",
)
training_data_job = dg.define_asset_job(
    "training_data",
    selection=dg.AssetSelection.assets(target_labels, master_table, training_reference_profile),
    description="Matured targets, the master table (and its snapshot) and the training "
    "reference profile.",
)
training_job = dg.define_asset_job(
    "training",
    selection=dg.AssetSelection.groups("training_data", "training"),
    description="Retrain: targets, master table and profile, every candidate family, then the "
    "champion competition (promotion only when the challenger beats the champion).",
    # The steps share the ML libraries: one process imports them once, where the
    # multiprocess executor would import them for every step. The candidates read the
    # master table's snapshot without the warehouse pool, so daily runs go on meanwhile.
    executor_def=dg.in_process_executor,
)
reference_data_job = dg.define_asset_job(
    "reference_data",
    selection=dg.AssetSelection.assets(card_reference),
    description="Reload the card reference data.",
)
landing_freshness_job = dg.define_asset_job(
    "landing_freshness",
    selection=dg.AssetSelection.checks(raw_transactions_landed_on_time),
    description="Is the latest day that is due loaded? (the check `landed_on_time` of "
    "raw_transactions; MLPLATFORM_LANDING_DUE_HOURS)",
)
monitoring_job = dg.define_asset_job(
    "monitoring",
    selection=dg.AssetSelection.assets(data_drift, prediction_drift),
    partitions_def=daily_partitions,
    description="Data and prediction drift of days against the champion that scored them "
    "(e.g. a backfill of history after a new champion scored it).",
    executor_def=dg.in_process_executor,
)
model_performance_job = dg.define_asset_job(
    # Not "model_performance": a job may not share its name with an asset's op.
    "performance_monitoring",
    selection=dg.AssetSelection.assets(target_labels, model_performance),
    partitions_def=daily_partitions,
    description="Rebuild `ml.targets` (so the days whose labels have matured have them), then "
    "the champion's performance on the days' matured labels (`monitoring.performance`) and "
    "its check `performance_within_margin`.",
    executor_def=dg.in_process_executor,  # two short steps in turn, both in the warehouse pool
)


@dg.op(
    description="DuckLake's checkpoint of the warehouse: inlined rows flushed to Parquet, old "
    "snapshots expired, small files merged, unneeded and orphaned files deleted."
)
def checkpoint_warehouse(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    settings = get_settings()
    with warehouse.connection() as conn:
        counts = checkpoint_lake(
            conn,
            snapshot_days=settings.warehouse_snapshot_days,
            orphan_days=settings.warehouse_orphan_days,
        )
    context.log.info(", ".join(f"{name} {count}" for name, count in counts.items()))


@dg.job(
    description="The DuckLake warehouse's daily upkeep (a DuckDB file needs none: it "
    "checkpoints itself). Defined only where MLPLATFORM_WAREHOUSE is a DuckLake."
)
def warehouse_maintenance() -> None:
    checkpoint_warehouse()

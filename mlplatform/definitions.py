"""The Dagster code location: `dagster dev` and `dagster asset materialize -m` load `defs`."""

import dagster as dg

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.features import card_features
from mlplatform.assets.freshness import raw_transactions_landed_on_time
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.assets.models import ChampionIOManager, candidate_asset, champion_asset
from mlplatform.assets.monitoring import data_drift, prediction_drift
from mlplatform.assets.performance import model_performance
from mlplatform.assets.scoring import predictions
from mlplatform.assets.serving import online_feature_store, serving_log
from mlplatform.assets.training_data import master_table, target_labels, training_reference_profile
from mlplatform.automation.jobs import (
    batch_scoring_job,
    daily_ingestion_job,
    history_ingestion_job,
    landing_freshness_job,
    model_performance_job,
    monitoring_job,
    reference_data_job,
    training_data_job,
    training_job,
    warehouse_maintenance,
)
from mlplatform.automation.schedules import (
    daily_ingestion_schedule,
    landing_freshness_schedule,
    model_performance_schedule,
    warehouse_maintenance_schedule,
)
from mlplatform.automation.sensors import landing_sensor, retraining_sensor
from mlplatform.library_output import quiet_library_output
from mlplatform.resources import (
    LandingZoneResource,
    MlflowResource,
    NotifierResource,
    WarehouseResource,
)
from mlplatform.settings import Settings, get_settings


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources every asset and sensor uses, configured from settings."""
    return {
        "warehouse": WarehouseResource.from_settings(settings),
        "landing": LandingZoneResource(
            landing_dir=str(settings.landing_dir), contract_path=str(settings.contract)
        ),
        "mlflow_store": MlflowResource(
            tracking_uri=settings.tracking_uri,
            artifact_location=settings.artifact_location,
            experiment=settings.mlflow_experiment,
            model_name=settings.model_name,
            ui_url=settings.mlflow_ui_url,
        ),
        "champion_io_manager": ChampionIOManager(),
        "notifier": NotifierResource(
            webhook_url=settings.alert_webhook_url, timeout_seconds=settings.alert_timeout_seconds
        ),
    }


def run_executor(settings: Settings) -> dg.ExecutorDefinition | None:
    """The executor of the jobs that do not set their own (None: Dagster's multiprocess one)."""
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None


SETTINGS = get_settings()
quiet_library_output()  # every Dagster process (run, daemon, webserver) loads this module


defs = dg.Definitions(
    assets=[
        card_reference,
        raw_transactions,
        curated_transactions,
        card_features,
        target_labels,
        master_table,
        training_reference_profile,
        *(candidate_asset(family) for family in SETTINGS.candidate_families),
        champion_asset(SETTINGS.candidate_families),
        predictions,
        online_feature_store,
        serving_log,
        data_drift,
        prediction_drift,
        model_performance,
    ],
    asset_checks=[raw_transactions_landed_on_time],
    jobs=[
        daily_ingestion_job,
        history_ingestion_job,
        reference_data_job,
        training_data_job,
        training_job,
        landing_freshness_job,
        batch_scoring_job,
        monitoring_job,
        model_performance_job,
        *([warehouse_maintenance] if SETTINGS.warehouse_is_lake else []),
    ],
    schedules=[
        daily_ingestion_schedule,
        landing_freshness_schedule,
        model_performance_schedule,
        *([warehouse_maintenance_schedule] if SETTINGS.warehouse_is_lake else []),
    ],
    sensors=[landing_sensor, retraining_sensor],
    resources=build_resources(SETTINGS),
    executor=run_executor(SETTINGS),
)

"""Schedules: the nightly run of yesterday's partition, and the hourly landing freshness."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from mlplatform.automation.jobs import daily_ingestion_job, landing_freshness_job
from mlplatform.automation.sensors import warehouse_loads
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.ingestion import inspect_file
from mlplatform.warehouse.ingestion_log import landing_due_at


@dg.schedule(
    job=daily_ingestion_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="Each night, ingest and curate yesterday's partition. When its landing file "
    "has not landed, the tick is skipped with the reason (the landing sensor runs the day "
    "when the file arrives); when the warehouse already loaded that content, too.",
)
def daily_ingestion_schedule(
    context: dg.ScheduleEvaluationContext,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
) -> dg.RunRequest | dg.SkipReason:
    now = context.scheduled_execution_time or datetime.now(UTC)
    day = (now.astimezone(UTC) - timedelta(days=1)).date()
    files = landing.files_for(day)
    if not files:
        due_at = landing_due_at(day, get_settings().landing_due_hours)
        return dg.SkipReason(
            f"no landing file for {day} in {landing.path}: not run. The landing sensor runs "
            f"the day when its file arrives; the check landed_on_time of raw_transactions "
            f"fails if it has not been loaded by {due_at:%Y-%m-%d %H:%M} UTC."
        )
    loaded = warehouse_loads(context.log, warehouse)
    if loaded is not None and all(
        loaded.get((day, f.name)) == inspect_file(f).sha256 for f in files
    ):
        return dg.SkipReason(
            f"{day} is already loaded with these files' content ({', '.join(f.name for f in files)}"
            "; raw.ingestion_log), e.g. by the landing sensor: not run again."
        )
    return dg.RunRequest(partition_key=day.isoformat())


landing_freshness_schedule = dg.ScheduleDefinition(
    job=landing_freshness_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    description="Hourly: evaluate whether the latest day that is due has been loaded (the "
    "check landed_on_time of raw_transactions fails, visibly, while it is late).",
)

"""Schedules: the nightly run of yesterday's partition, the hourly landing freshness, and the
daily performance of the latest day whose labels have matured."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from mlplatform.automation.jobs import (
    daily_ingestion_job,
    landing_freshness_job,
    model_performance_job,
    warehouse_maintenance,
)
from mlplatform.automation.sensors import warehouse_loads
from mlplatform.ingestion import inspect_file, landing_due_at
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.targets import latest_matured_day, target_maturity


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


@dg.schedule(
    job=model_performance_job,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    description="Each morning (after the nightly ingestion of yesterday), the champion's "
    "performance on the latest day whose labels have all matured by the end of yesterday: "
    "revenge spending matures 72 hours after the transaction (MLPLATFORM_REVENGE__HORIZON_HOURS), "
    "so the day four days back; a carried label after MLPLATFORM_LABEL_DELAY_DAYS (7: eight "
    "days back). A day that was late can be run again, or backfilled, at any time.",
)
def model_performance_schedule(
    context: dg.ScheduleEvaluationContext, landing: LandingZoneResource
) -> dg.RunRequest | dg.SkipReason:
    settings = get_settings()
    now = context.scheduled_execution_time or datetime.now(UTC)
    # ml.targets is as of the end of the latest curated day: yesterday, once it is loaded.
    as_of = datetime.combine(now.astimezone(UTC).date(), datetime.min.time())
    maturity = target_maturity(
        landing.contract.target, settings.label_delay_days, settings.revenge.horizon_hours
    )
    day = latest_matured_day(as_of, maturity)
    if day < settings.start_date:
        return dg.SkipReason(
            f"no day has matured labels yet: the latest would be {day}, before the first "
            f"partition {settings.start_date} (labels mature {maturity} after a transaction)"
        )
    return dg.RunRequest(partition_key=day.isoformat())


warehouse_maintenance_schedule = dg.ScheduleDefinition(
    job=warehouse_maintenance,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    description="Each night after the daily runs, the DuckLake warehouse's checkpoint.",
)

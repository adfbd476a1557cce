"""Schedules: the daily run of the daily assets."""

import dagster as dg

from mlplatform.automation.jobs import daily_ingestion_job

daily_ingestion_schedule = dg.build_schedule_from_partitioned_job(
    daily_ingestion_job,
    hour_of_day=2,
    description="Each night, ingest and curate yesterday's partition.",
)

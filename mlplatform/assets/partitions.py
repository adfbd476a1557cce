"""The daily partitioning every daily asset shares."""

from datetime import date, timedelta

import dagster as dg

from mlplatform.settings import get_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().start_date.isoformat(), timezone="UTC"
)


def partition_days(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The first and last day (inclusive) of the run's partition or partition range."""
    window = context.partition_time_window
    return window.start.date(), (window.end - timedelta(days=1)).date()

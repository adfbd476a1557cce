"""The daily partitioning every daily asset shares."""

import dagster as dg

from mlplatform.settings import get_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().start_date.isoformat(), timezone="UTC"
)

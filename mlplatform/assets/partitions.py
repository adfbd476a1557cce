"""The daily partitioning every daily asset shares, and runs over ranges of it."""

from datetime import date

import dagster as dg

from mlplatform.settings import get_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().start_date.isoformat(), timezone="UTC"
)


def consecutive_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days grouped into (first, last) runs of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in days:
        if ranges and (day - ranges[-1][1]).days == 1:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def partition_range_tags(first: date, last: date) -> dict[str, str]:
    """Tags of one run over the partitions first..last (the daily assets run a range at once)."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }

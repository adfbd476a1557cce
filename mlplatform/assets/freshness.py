"""Freshness of the landing: is the latest day that is due loaded into the warehouse?"""

from datetime import UTC, datetime

import dagster as dg

from mlplatform.assets.ingestion import raw_transactions
from mlplatform.ingestion import landing_due_at, landing_due_day, loaded_files
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings


@dg.asset_check(
    asset=raw_transactions,
    name="landed_on_time",
    description="The latest day whose landing file is due (MLPLATFORM_LANDING_DUE_HOURS after "
    "the midnight that ends it, UTC) is loaded in the warehouse; fails naming the day, when "
    "it was due and whether its file has landed. Run hourly by `landing_freshness_schedule`.",
)
def raw_transactions_landed_on_time(
    warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.AssetCheckResult:
    settings = get_settings()
    day = landing_due_day(datetime.now(UTC), settings.landing_due_hours)
    due_at = landing_due_at(day, settings.landing_due_hours)
    metadata = {"due_day": day.isoformat(), "due_at": f"{due_at:%Y-%m-%d %H:%M} UTC"}
    if day < settings.start_date:
        return dg.AssetCheckResult(passed=True, description="no day is due yet", metadata=metadata)
    loaded = {}
    if warehouse.exists:
        with warehouse.connection(read_only=True) as conn:
            loaded = loaded_files(conn)
    if any(loaded_day == day for loaded_day, _ in loaded):
        return dg.AssetCheckResult(passed=True, description=f"{day} is loaded", metadata=metadata)
    files = landing.files_for(day)
    where = (
        f"{', '.join(f.name for f in files)} landed and is not loaded yet (the landing sensor "
        "or the nightly schedule loads it)"
        if files
        else f"no landing file for {day} in {landing.path} (the landing sensor loads it when "
        "it arrives)"
    )
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{day} is late: its landing file was due by {metadata['due_at']} "
        f"(MLPLATFORM_LANDING_DUE_HOURS={settings.landing_due_hours:g}); {where}.",
        metadata={**metadata, "landing_files": [f.name for f in files]},
    )

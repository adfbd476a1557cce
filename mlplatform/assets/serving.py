"""Serving stage: the online feature store the REST service reads, and its prediction log
loaded back into the warehouse (``monitoring.serving_log``)."""

from datetime import date
from pathlib import Path

import dagster as dg

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.features import card_features
from mlplatform.assets.ingestion import card_reference
from mlplatform.assets.partitions import daily_partitions, partition_days
from mlplatform.assets.training_data import ML_OWNERS
from mlplatform.features.declarations import FeatureRegistry, feature_registry
from mlplatform.monitoring.serving_log import load_serving_log
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.serving.online import publish_online_state
from mlplatform.serving.shared_state import StateUnavailable
from mlplatform.settings import Settings, get_settings
from mlplatform.warehouse.online_store import store_lookback_days, write_online_store


@dg.asset(
    group_name="serving",
    kinds={"duckdb"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    deps=[curated_transactions, card_reference, card_features],
    description="`online/store.duckdb` under the data home: the curated events of the online "
    "features' lookback (plus a day) before the warehouse's last event, merchant events and "
    "labels included, sorted by card and time, and the card reference data, in the "
    "warehouse's table names, plus `online.store_info`. Pseudonyms only. Replaced atomically "
    "(written aside, fsync, rename), so `mlplatform serve` never opens the warehouse. With "
    "MLPLATFORM_ONLINE_STATE a Redis URL, every card's state is then published there as a new "
    "version that the service processes switch to at once.",
)
@with_compute_cost
def online_feature_store(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    settings = get_settings()
    registry = feature_registry(settings, landing.contract)
    lookback = store_lookback_days(registry)
    shared: dict[str, object] = {}

    def publish(store: Path) -> None:  # before the store replaces the served one
        shared.update(_publish(context, settings, registry, store))

    with warehouse.connection() as conn:
        result = write_online_store(
            conn, settings.online_store_path, lookback, warehouse.name,
            None if settings.online_state == "memory" else publish,
        )  # fmt: skip
    context.log.info(
        "online store: %d events of %d cards up to %s in %.2fs", result.events, result.cards,
        result.last_event_time, result.seconds,
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            **shared,
            "path": dg.MetadataValue.path(str(result.path)),
            "cards": result.cards,
            "events": result.events,
            "dagster/row_count": result.events,
            "size_mb": round(result.size_bytes / 1e6, 2),
            "first_event_time": str(result.first_event_time),
            "last_event_time": str(result.last_event_time),
            "lookback_days": result.lookback_days,
            "seconds": round(result.seconds, 2),
        }
    )


def _publish(
    context: dg.AssetExecutionContext, settings: Settings, registry: FeatureRegistry, store: Path
) -> dict[str, object]:
    """The new store's state published to Redis (metadata) before the file replaces the
    served one, so that no service process publishes it too; a Redis that cannot take it
    now is a warning, not a failure: the store is written, and a service process publishes
    it once Redis is back."""
    try:
        published = publish_online_state(settings, registry, store)
    except StateUnavailable as error:
        context.log.warning("online state not published: %s", error)
        return {"online_state": f"not published: {error}"}
    if published is None:
        return {"online_state": "already published (by a service process)"}
    context.log.info(
        "online state version %s: %d cards, %d bytes in %.2fs", published.version,
        published.cards, published.bytes, published.seconds,
    )  # fmt: skip
    return {
        "online_state": f"version {published.version}",
        "online_state_cards": published.cards,
        "online_state_bytes": published.bytes,
        "online_state_carried": published.carried,
        "online_state_seconds": round(published.seconds, 2),
    }


@dg.asset(
    group_name="monitoring",
    kinds={"duckdb", "json"},
    owners=ML_OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="`monitoring.serving_log`: the REST service's prediction log of the day "
    "(`serving/predictions-YYYY-MM-DD.<host>-<pid>.jsonl` under the data home, a file per "
    "service process; one row per scored "
    "transaction per model, with its role, score, decision and latency split), replaced per "
    "day. A day without a file has no rows.",
)
@with_compute_cost
def serving_log(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    folder = get_settings().serving_dir
    start, end = partition_days(context)
    days = [date.fromisoformat(key) for key in context.partition_keys]
    with warehouse.connection() as conn:
        results = [load_serving_log(conn, folder, day) for day in days]
    missing = [str(r.partition_date) for r in results if not r.files]
    if missing:
        context.log.info("no prediction log for %s in %s", ", ".join(missing), folder)
    unreadable = sum(r.unreadable_lines for r in results)
    if unreadable:
        context.log.warning(
            "%d line(s) of the prediction log are not JSON (cut short when a service process "
            "was killed mid-write): not loaded",
            unreadable,
        )
    roles: dict[str, int] = {}
    for result in results:
        for role, rows in result.rows_by_role.items():
            roles[role] = roles.get(role, 0) + rows
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(r.rows for r in results),
            "days": f"{start} .. {end}",
            "files": ", ".join(f.name for r in results for f in r.files) or "(none)",
            "days_without_a_file": ", ".join(missing) or "(none)",
            "unreadable_lines": unreadable,
            **{f"rows_{role}": rows for role, rows in sorted(roles.items())},
            "folder": dg.MetadataValue.path(str(folder)),
        }
    )

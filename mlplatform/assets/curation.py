"""Curation stage: cleaned, deduplicated, enriched daily transactions."""

from datetime import date

import dagster as dg

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.ingestion import (
    OWNERS,
    card_reference,
    markdown_table,
    partitions_result,
    range_label,
    raw_transactions,
)
from mlplatform.assets.metadata import partitions_metadata
from mlplatform.assets.partitions import daily_partitions
from mlplatform.assets.quality_checks import (
    CURATED_ONLY_CHECKS,
    TRANSACTION_CHECKS,
    check_results,
    check_specs,
    validate_partitions,
)
from mlplatform.ingestion import (
    CurationResult,
    curate_partitions,
    expected_curated_rows,
)
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.tables import CURATED_TRANSACTION_COLUMNS

CURATED_CHECKS = {**TRANSACTION_CHECKS, **CURATED_ONLY_CHECKS}


@dg.asset(
    group_name="curation",
    kinds={"duckdb"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[raw_transactions, card_reference],
    check_specs=check_specs("curated_transactions", CURATED_CHECKS, blocking=True),
    description="`curated.transactions`: the partition's raw rows deduplicated (the same "
    "event submitted twice), normalised (categories, text case, coordinates), joined to the "
    "card reference (credit limit, income band) and with hour, weekday, age and home-merchant "
    "distance. Its checks are blocking: bad data does not flow on. A backfill is one run "
    "over the range, consecutive days curated in batches of about a million rows, each batch "
    "in one transaction; a check fails if it fails on any day.",
)
@with_compute_cost
def curated_transactions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    max_amount = get_settings().max_amount
    with warehouse.connection() as conn:
        has_reference = conn.execute("SELECT count(*) FROM raw.card_reference").fetchone()[0] > 0
        reference_ids = (
            [row[0] for row in conn.execute("SELECT card_id FROM raw.card_reference").fetchall()]
            if has_reference
            else None
        )
        days = [date.fromisoformat(k) for k in context.partition_keys]
        results = curate_partitions(conn, days)
        reports = validate_partitions(
            conn,
            table="curated.transactions",
            columns=CURATED_TRANSACTION_COLUMNS,
            partition_dates=list(results),
            contract=landing.contract,
            max_amount=max_amount,
            reference_card_ids=reference_ids,
            expected_row_counts=expected_curated_rows(conn, list(results)),
        )
        tables = partitions_metadata(conn, "curated.transactions", list(results))
    curated: dict[str, CurationResult] = {day.isoformat(): r for day, r in results.items()}
    per_partition = {
        day.isoformat(): {
            **tables[day],
            "raw_rows": result.raw_rows,
            "duplicates_removed": result.duplicates_removed,
            "rows_with_reference": result.with_reference,
        }
        for day, result in results.items()
    }
    # One log line for the run (each is an event in the run's log); per partition in the
    # materialization's metadata.
    context.log.info(
        "%d partition(s): curated %d of %d raw rows (%d duplicate submissions removed)",
        len(curated),
        sum(r.curated_rows for r in curated.values()),
        sum(r.raw_rows for r in curated.values()),
        sum(r.duplicates_removed for r in curated.values()),
    )
    return partitions_result(
        context,
        per_partition,
        {
            "range": range_label(list(curated)),
            "range_raw_rows": sum(r.raw_rows for r in curated.values()),
            "range_duplicates_removed": sum(r.duplicates_removed for r in curated.values()),
            "range_rows_curated": sum(r.curated_rows for r in curated.values()),
        },
        check_results(
            {day.isoformat(): report for day, report in reports.items()},
            "curated_transactions",
            CURATED_CHECKS,
        ),
        {
            "range_by_partition": markdown_table(
                ["partition", "raw", "duplicates removed", "curated", "with reference"],
                [
                    [key, r.raw_rows, r.duplicates_removed, r.curated_rows, r.with_reference]
                    for key, r in curated.items()
                ],
            ),
        },
    )

"""Curation stage: cleaned, deduplicated, enriched daily transactions."""

from datetime import date

import dagster as dg

from mlplatform.assets.ingestion import OWNERS, card_reference, raw_transactions
from mlplatform.assets.metadata import table_metadata
from mlplatform.assets.partitions import daily_partitions
from mlplatform.assets.quality_checks import (
    CURATED_ONLY_CHECKS,
    TRANSACTION_CHECKS,
    check_results,
    check_specs,
    validate_partition,
)
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.curation import curate_partition, expected_curated_rows
from mlplatform.warehouse.tables import CURATED_TRANSACTION_COLUMNS

CURATED_CHECKS = {**TRANSACTION_CHECKS, **CURATED_ONLY_CHECKS}


@dg.asset(
    group_name="curation",
    kinds={"duckdb"},
    owners=OWNERS,
    pool="warehouse",
    partitions_def=daily_partitions,
    deps=[raw_transactions, card_reference],
    check_specs=check_specs("curated_transactions", CURATED_CHECKS, blocking=True),
    description="`curated.transactions`: the partition's raw rows deduplicated (the same "
    "event submitted twice), normalised (categories, text case, coordinates), joined to the "
    "card reference (credit limit, income band) and with hour, weekday, age and home-merchant "
    "distance. Its checks are blocking: bad data does not flow on.",
)
def curated_transactions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    partition_date = date.fromisoformat(context.partition_key)
    with warehouse.connection() as conn:
        result = curate_partition(conn, partition_date)
        has_reference = conn.execute("SELECT count(*) FROM raw.card_reference").fetchone()[0] > 0
        reference_ids = (
            [row[0] for row in conn.execute("SELECT card_id FROM raw.card_reference").fetchall()]
            if has_reference
            else None
        )
        report = validate_partition(
            conn,
            table="curated.transactions",
            columns=CURATED_TRANSACTION_COLUMNS,
            partition_date=partition_date,
            contract=landing.contract,
            max_amount=get_settings().max_amount,
            reference_card_ids=reference_ids,
            expected_row_count=expected_curated_rows(conn, partition_date),
        )
        metadata = table_metadata(conn, "curated.transactions", partition_date)
    context.log.info(
        "curated %d of %d raw rows (%d duplicate submissions removed)",
        result.curated_rows,
        result.raw_rows,
        result.duplicates_removed,
    )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "raw_rows": result.raw_rows,
            "duplicates_removed": result.duplicates_removed,
            "rows_with_reference": result.with_reference,
        },
        check_results=check_results(report, "curated_transactions", CURATED_CHECKS),
    )

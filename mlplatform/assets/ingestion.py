"""Ingestion stage: card reference data and the validated daily raw transactions."""

from datetime import date

import dagster as dg

from mlplatform.assets.metadata import table_metadata
from mlplatform.assets.partitions import daily_partitions
from mlplatform.assets.quality_checks import (
    TRANSACTION_CHECKS,
    check_results,
    check_specs,
    validate_partition,
)
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.curation import load_card_reference
from mlplatform.warehouse.ingestion import ingest_partition
from mlplatform.warehouse.tables import RAW_TRANSACTION_COLUMNS

OWNERS = ["team:data-platform"]


@dg.asset(
    group_name="ingestion",
    kinds={"duckdb", "csv"},
    owners=OWNERS,
    pool="warehouse",
    description="Card reference data (credit limit, income band) from the landing folder's "
    "reference file, card numbers pseudonymised: `raw.card_reference`. Empty when the source "
    "has no reference file.",
)
def card_reference(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    with warehouse.connection() as conn:
        result = load_card_reference(
            conn, landing.path, landing.contract.reference, get_settings().pseudonym_key
        )
        metadata = table_metadata(conn, "raw.card_reference")
    if result.file is None:
        context.log.warning("no reference file in %s: curation runs without it", landing.path)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "source_file": result.file or "(none)",
            "sha256": result.sha256 or "",
            "duplicate_cards_dropped": result.duplicate_cards,
            "invalid_credit_limits": result.invalid_credit_limits,
        }
    )


@dg.asset(
    group_name="ingestion",
    kinds={"duckdb", "csv"},
    owners=OWNERS,
    pool="warehouse",
    partitions_def=daily_partitions,
    check_specs=check_specs("raw_transactions", TRANSACTION_CHECKS, blocking=False),
    description="The partition's landing file(s) validated into `raw.transactions`: bad rows "
    "in `raw.quarantine` (file, line, rule, masked line), every file in `raw.ingestion_log` "
    "(rows read = loaded + quarantined), PII pseudonymised or dropped. A file that is not a "
    "CSV of the contract fails the partition and loads nothing.",
)
def raw_transactions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    partition_date = date.fromisoformat(context.partition_key)
    settings = get_settings()
    files = landing.files_for(partition_date)
    if not files:
        raise dg.Failure(f"no landing file for {partition_date} in {landing.path}")
    with warehouse.connection() as conn:
        result = ingest_partition(
            conn,
            files=files,
            partition_date=partition_date,
            contract=landing.contract,
            pii_key=settings.pseudonym_key,
            max_amount=settings.max_amount,
            max_line_bytes=settings.max_line_bytes,
            run_id=context.run_id,
        )
        metadata = table_metadata(conn, "raw.transactions", partition_date)
        report = validate_partition(
            conn,
            table="raw.transactions",
            columns=RAW_TRANSACTION_COLUMNS,
            partition_date=partition_date,
            contract=landing.contract,
            max_amount=settings.max_amount,
        )
    for outcome in result.files:
        context.log.info(
            "%s: read %d, loaded %d, quarantined %d",
            outcome.file,
            outcome.rows_read,
            outcome.rows_loaded,
            outcome.rows_quarantined,
        )
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "files": [f.file for f in result.files],
            "rows_read": result.rows_read,
            "rows_loaded": result.rows_loaded,
            "rows_quarantined": result.rows_quarantined,
            "quarantine_reasons": dg.MetadataValue.json(result.quarantine_reasons),
            "sha256": dg.MetadataValue.json({f.file: f.sha256 for f in result.files}),
        },
        check_results=check_results(report, "raw_transactions", TRANSACTION_CHECKS),
    )

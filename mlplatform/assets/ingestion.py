"""Ingestion stage: card reference data and the validated daily raw transactions."""

import warnings
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb

from mlplatform.assets.cost import WAREHOUSE_POOL, with_compute_cost
from mlplatform.assets.metadata import partitions_metadata, table_metadata
from mlplatform.assets.partitions import daily_partitions
from mlplatform.assets.quality_checks import (
    TRANSACTION_CHECKS,
    check_results,
    check_specs,
    validate_partitions,
)
from mlplatform.ingestion import IngestionResult, ingest_partitions, load_card_reference
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.tables import RAW_TRANSACTION_COLUMNS

OWNERS = ["team:data-platform"]

# `backfill_policy` (a backfill of the daily assets is one run over the range) is a beta
# parameter of @asset in Dagster 1.13: known and chosen, so not worth a warning on every import.
warnings.filterwarnings("ignore", r"Parameter `backfill_policy`", dg.BetaWarning)


@dg.asset(
    group_name="ingestion",
    kinds={"duckdb", "csv"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    description="Card reference data (credit limit, income band) from the landing folder's "
    "reference file, card numbers pseudonymised: `raw.card_reference`. Empty when the source "
    "has no reference file.",
)
@with_compute_cost
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


def partitions_result(
    context: dg.AssetExecutionContext,
    per_partition: dict[str, dict[str, object]],
    range_metadata: dict[str, object],
    check_results: list[dg.AssetCheckResult],
    range_table: dict[str, object] | None = None,
) -> dg.MaterializeResult:
    """The result of a run over one partition or a range of them.

    One partition: its metadata, as before ranges existed. A range: every partition's
    materialization carries that partition's own metadata plus ``range_metadata`` (the run's
    totals), the same on all of them; the range's last partition also ``range_table`` (a
    table of the partitions: on every partition, the run's events would grow as the square
    of its days, a 180 KB table on each of 6,000 days' materializations). The column schema,
    the same for every partition (4.4 KB of a raw day's 7.2 KB), is on the last one only:
    the asset's latest materialization, which the UI shows it from.
    """
    if len(per_partition) == 1:
        return dg.MaterializeResult(
            metadata=next(iter(per_partition.values())), check_results=check_results
        )
    last = max(per_partition)
    for key, metadata in per_partition.items():
        if key == last:
            metadata = {**metadata, **(range_table or {})}
        else:
            metadata = {k: v for k, v in metadata.items() if k != "dagster/column_schema"}
        context.add_asset_metadata(metadata, partition_key=key)
    return dg.MaterializeResult(metadata=range_metadata, check_results=check_results)


def markdown_table(header: list[str], rows: list[list[object]]) -> dg.MetadataValue:
    """A small markdown table: the first column text, the others counts."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for first, *counts in rows:
        lines.append("| " + " | ".join([str(first), *(f"{n:,}" for n in counts)]) + " |")
    return dg.MetadataValue.md("\n".join(lines) + "\n")


def range_label(keys: list[str]) -> str:
    return f"{keys[0]} .. {keys[-1]} ({len(keys)} partitions)"


@dg.asset(
    group_name="ingestion",
    kinds={"duckdb", "csv"},
    owners=OWNERS,
    pool=WAREHOUSE_POOL,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=check_specs("raw_transactions", TRANSACTION_CHECKS, blocking=False),
    description="The partition's landing file(s) validated into `raw.transactions`: bad rows "
    "in `raw.quarantine` (file, line, rule, masked line), every file in `raw.ingestion_log` "
    "(rows read = loaded + quarantined), PII pseudonymised or dropped. A file that is not a "
    "CSV of the contract fails the partition and loads nothing. A backfill is one run over "
    "the range, loaded as day after day in date order would be, consecutive days in batches "
    "of about 256 MB of files, each batch in one transaction; a rejected or missing file "
    "leaves its day as it was, the other days load, and the run fails at the end naming "
    "every such file.",
)
@with_compute_cost
def raw_transactions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    settings = get_settings()
    keys = list(context.partition_keys)
    with warehouse.connection() as conn:
        loaded, problems = _ingest_days(context, conn, landing, keys)
        per_partition = _partitions_metadata(conn, loaded)
        if problems:
            # What did load is in the warehouse: say so in Dagster too, then fail the run.
            for key, metadata in per_partition.items():
                context.log_event(
                    dg.AssetMaterialization(context.asset_key, partition=key, metadata=metadata)
                )
            raise dg.Failure(
                description=_failure_message(keys, problems),
                metadata={
                    "partitions_failed": dg.MetadataValue.json(problems),
                    "partitions_loaded": list(loaded),
                },
            )
        reports = validate_partitions(
            conn,
            table="raw.transactions",
            columns=RAW_TRANSACTION_COLUMNS,
            partition_dates=[result.partition_date for result in loaded.values()],
            contract=landing.contract,
            max_amount=settings.max_amount,
        )
    return partitions_result(
        context,
        per_partition,
        {
            "range": range_label(keys),
            "range_rows_read": sum(r.rows_read for r in loaded.values()),
            "range_rows_loaded": sum(r.rows_loaded for r in loaded.values()),
            "range_rows_quarantined": sum(r.rows_quarantined for r in loaded.values()),
        },
        check_results(
            {day.isoformat(): report for day, report in reports.items()},
            "raw_transactions",
            TRANSACTION_CHECKS,
        ),
        {
            "range_by_partition": markdown_table(
                ["partition", "files", "read", "loaded", "quarantined"],
                [
                    [key, len(r.files), r.rows_read, r.rows_loaded, r.rows_quarantined]
                    for key, r in loaded.items()
                ],
            ),
        },
    )


def _ingest_days(
    context: dg.AssetExecutionContext,
    conn: duckdb.DuckDBPyConnection,
    landing: LandingZoneResource,
    keys: list[str],
) -> tuple[dict[str, IngestionResult], dict[str, str]]:
    """Ingest the partitions with their landing files (see :func:`ingest_partitions`).

    Returns the loaded partitions and, for each partition whose file is missing or rejected,
    why (a rejected file leaves its partition as it was). Any other error stops the run.
    """
    settings = get_settings()
    problems: dict[str, str] = {}
    partitions: dict[date, list[Path]] = {}
    found = landing.files_by_day([date.fromisoformat(key) for key in keys])
    for partition_date, files in found.items():
        if files:
            partitions[partition_date] = files
        else:
            key = partition_date.isoformat()
            problems[key] = f"no landing file for {partition_date} in {landing.path}"
            context.log.error(problems[key])
    results, rejections = ingest_partitions(
        conn,
        partitions,
        contract=landing.contract,
        pii_key=settings.pseudonym_key,
        max_amount=settings.max_amount,
        max_line_bytes=settings.max_line_bytes,
        run_id=context.run_id,
    )
    for partition_date, rejected in rejections.items():
        key = partition_date.isoformat()
        problems[key] = f"rejected {rejected}"
        context.log.error("%s: %s", key, problems[key])
    loaded = {day.isoformat(): result for day, result in results.items()}
    # Each log line is an event in the run's log: one line for the run, plus one per file
    # with quarantined rows (every file's figures are in the materialization's metadata).
    outcomes = [outcome for result in loaded.values() for outcome in result.files]
    for outcome in outcomes:
        if outcome.rows_quarantined:
            context.log.info(
                "%s: read %d, loaded %d, quarantined %d",
                outcome.file,
                outcome.rows_read,
                outcome.rows_loaded,
                outcome.rows_quarantined,
            )
    context.log.info(
        "%d file(s) of %d partition(s): read %d, loaded %d, quarantined %d",
        len(outcomes),
        len(loaded),
        sum(o.rows_read for o in outcomes),
        sum(o.rows_loaded for o in outcomes),
        sum(o.rows_quarantined for o in outcomes),
    )
    return loaded, dict(sorted(problems.items()))


def _partitions_metadata(
    conn: duckdb.DuckDBPyConnection, loaded: dict[str, IngestionResult]
) -> dict[str, dict[str, object]]:
    if not loaded:
        return {}
    days = [result.partition_date for result in loaded.values()]
    tables = partitions_metadata(conn, "raw.transactions", days)
    return {
        key: {
            **tables[result.partition_date],
            "files": [f.file for f in result.files],
            "rows_read": result.rows_read,
            "rows_loaded": result.rows_loaded,
            "rows_quarantined": result.rows_quarantined,
            "quarantine_reasons": dg.MetadataValue.json(result.quarantine_reasons),
            "sha256": dg.MetadataValue.json({f.file: f.sha256 for f in result.files}),
        }
        for key, result in loaded.items()
    }


def _failure_message(keys: list[str], problems: dict[str, str]) -> str:
    if len(keys) == 1:
        return next(iter(problems.values()))
    lines = [f"{key}: {problem}" for key, problem in problems.items()]
    return (
        f"{len(problems)} of {len(keys)} partitions not loaded (they stay as they were; the "
        f"other {len(keys) - len(problems)} were loaded):\n" + "\n".join(lines)
    )

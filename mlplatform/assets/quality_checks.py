"""Great Expectations suites as Dagster asset checks: one check per rule group."""

from __future__ import annotations

from datetime import date

import dagster as dg
import duckdb

from mlplatform.contract import Contract
from mlplatform.warehouse.quality import ExpectationOutcome, QualityReport, validate_frame
from mlplatform.warehouse.quality import transaction_rules as build_rules

# check name -> what it guards (its description in the UI)
TRANSACTION_CHECKS = {
    "schema": "The table has exactly the platform's columns.",
    "required_not_null": "Required fields (id, time, card, amount) are never null.",
    "transaction_id_unique": "Transaction ids are unique within the partition.",
    "amount_range": "Amounts are > 0 and at most the configured maximum.",
    "event_time_in_partition": "Every event time falls inside the partition's day.",
    "category_known": "Categories belong to the contract's known set.",
}
CURATED_ONLY_CHECKS = {
    "card_in_reference": "Every card is in the reference data (when reference data exists).",
    "row_count_matches_raw": "Curated rows = raw rows - removed duplicate submissions.",
}


def check_specs(asset: str, checks: dict[str, str], *, blocking: bool) -> list[dg.AssetCheckSpec]:
    """One spec per check, attached to the asset that yields its result."""
    return [
        dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)
        for name, description in checks.items()
    ]


def _group(rule: str) -> str:
    if rule.endswith("_not_null"):
        return "required_not_null"
    return "row_count_matches_raw" if rule == "row_count" else rule


def _outcome_metadata(outcome: ExpectationOutcome) -> dict[str, object]:
    return {
        "expectation": outcome.expectation,
        "rows_checked": outcome.element_count,
        "rows_failing": outcome.unexpected_count,
        "examples": list(outcome.examples),
    }


def check_results(
    report: QualityReport, asset: str, checks: dict[str, str]
) -> list[dg.AssetCheckResult]:
    """The report's outcomes folded into one result per check (not applicable -> passed)."""
    results = []
    for name in checks:
        outcomes = [o for o in report.outcomes if _group(o.rule) == name]
        failed = [o for o in outcomes if not o.success]
        metadata: dict[str, object] = {"applicable": bool(outcomes)}
        if failed:
            metadata["failed_expectations"] = dg.MetadataValue.json(
                [_outcome_metadata(o) for o in failed]
            )
            metadata["rows_failing"] = sum(o.unexpected_count for o in failed)
        results.append(
            dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=metadata,
                description=(
                    "; ".join(f"{o.expectation}: {o.unexpected_count} rows" for o in failed) or None
                ),
            )
        )
    return results


def validate_partition(
    conn: duckdb.DuckDBPyConnection,
    *,
    table: str,
    columns: tuple[str, ...],
    partition_date: date,
    contract: Contract,
    max_amount: float,
    reference_card_ids: list[str] | None = None,
    expected_row_count: int | None = None,
) -> QualityReport:
    """Run the transaction suite on one partition of a warehouse table."""
    frame = conn.execute(f"SELECT * FROM {table} WHERE partition_date = ?", [partition_date]).df()
    rules = build_rules(
        columns=columns,
        required=("transaction_id", "event_time", "card_id", "amount"),
        partition_date=partition_date,
        known_categories=contract.categories if contract.has("category") else None,
        max_amount=max_amount,
        reference_card_ids=reference_card_ids,
        expected_row_count=expected_row_count,
    )
    return validate_frame(frame, f"{table}:{partition_date}", rules)

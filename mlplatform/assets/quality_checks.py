"""Great Expectations suites as Dagster asset checks: one check per rule group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import dagster as dg
import duckdb

from mlplatform.contract import Contract
from mlplatform.ingestion import ExpectationOutcome, QualityReport, Rule, validate_days
from mlplatform.ingestion import transaction_rules as build_rules

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


_MAX_DESCRIBED = 5  # failing expectations spelled out in a range result's description


def check_results(
    reports: Mapping[str, QualityReport], asset: str, checks: dict[str, str]
) -> list[dg.AssetCheckResult]:
    """The reports' outcomes folded into one result per check (not applicable -> passed).

    ``reports`` maps each partition key of the run to its report. A check passes only if it
    passes on every partition. For one partition the metadata is that partition's; for a range
    it also says how many partitions were checked and which failed, with counts and examples.
    """
    ranged = len(reports) > 1
    results = []
    for name in checks:
        applicable = False
        failed: list[tuple[str, ExpectationOutcome]] = []
        for key, report in reports.items():
            outcomes = [o for o in report.outcomes if _group(o.rule) == name]
            applicable = applicable or bool(outcomes)
            failed.extend((key, o) for o in outcomes if not o.success)
        metadata: dict[str, object] = {"applicable": applicable}
        if ranged:
            metadata["partitions_checked"] = len(reports)
            metadata["partitions_failing"] = len({key for key, _ in failed})
        if failed:
            metadata["failed_expectations"] = dg.MetadataValue.json(
                [
                    {"partition": key, **_outcome_metadata(o)} if ranged else _outcome_metadata(o)
                    for key, o in failed
                ]
            )
            metadata["rows_failing"] = sum(o.unexpected_count for _, o in failed)
            if ranged:
                metadata["failing_partitions"] = dg.MetadataValue.md(_failures_markdown(failed))
        described = [
            f"{key}: {o.expectation}: {o.unexpected_count} rows"
            if ranged
            else f"{o.expectation}: {o.unexpected_count} rows"
            for key, o in failed[:_MAX_DESCRIBED]
        ]
        if len(failed) > _MAX_DESCRIBED:
            described.append(f"and {len(failed) - _MAX_DESCRIBED} more")
        results.append(
            dg.AssetCheckResult(
                asset_key=asset,
                check_name=name,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=metadata,
                description="; ".join(described) or None,
            )
        )
    return results


def _failures_markdown(failed: list[tuple[str, ExpectationOutcome]]) -> str:
    lines = [
        "| partition | expectation | rows failing | examples |",
        "|---|---|---:|---|",
    ]
    for key, o in failed:
        examples = ", ".join(f"`{_md(e)}`" for e in o.examples)
        lines.append(f"| {key} | {_md(o.expectation)} | {o.unexpected_count} | {examples} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def validate_partitions(
    conn: duckdb.DuckDBPyConnection,
    *,
    table: str,
    columns: tuple[str, ...],
    partition_dates: Sequence[date],
    contract: Contract,
    max_amount: float,
    reference_card_ids: list[str] | None = None,
    expected_row_counts: Mapping[date, int] | None = None,
) -> dict[date, QualityReport]:
    """Run the transaction suite on each partition of a warehouse table (its rows read in one
    query, the suite run once over them: :func:`~mlplatform.ingestion.validate_days`)."""
    days = sorted(partition_dates)
    frame = conn.execute(
        f"SELECT * FROM {table} WHERE partition_date BETWEEN ? AND ?", [days[0], days[-1]]
    ).df()

    def rules_of_day(partition_date: date) -> list[Rule]:
        return build_rules(
            columns=columns,
            required=("transaction_id", "event_time", "card_id", "amount"),
            partition_date=partition_date,
            known_categories=contract.categories if contract.has("category") else None,
            max_amount=max_amount,
            reference_card_ids=reference_card_ids,
            expected_row_count=(
                None if expected_row_counts is None else expected_row_counts[partition_date]
            ),
            timezone=contract.timezone,
        )

    return validate_days(
        frame,
        table,
        days,
        rules_of_day,
        timezone=contract.timezone,
        expected_row_counts=expected_row_counts,
    )

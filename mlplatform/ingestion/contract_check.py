"""A dry run of a mapping on a sample of a source (``mlplatform contract check``).

The sample goes through the real path, in a temporary folder: split into daily files by
:func:`~mlplatform.ingestion.history_import.import_history`, then loaded by ingestion into a
throwaway warehouse. So the rows it reports as quarantined, and why, are exactly those the
platform would quarantine; nothing is re-implemented here, and nothing of the platform's own
landing folder or warehouse is touched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlplatform.contract import CANONICAL_COLUMNS, Contract
from mlplatform.features.declarations import FeatureRegistry
from mlplatform.ingestion.files import landing_files_by_day
from mlplatform.ingestion.history_import import import_history
from mlplatform.ingestion.loading import ingest_partitions
from mlplatform.warehouse.connection import connect

#: raw.transactions' column of a canonical column, where the names differ (PII reduced).
_RAW_NAMES = {"card_number": "card_id", "birth_date": "birth_year"}


@dataclass(frozen=True)
class MappedColumn:
    canonical: str
    source: str  # how the YAML maps it ('' when it does not)
    required: bool


@dataclass(frozen=True)
class ContractCheck:
    """What a mapping makes of a sample: the mapping, mapped rows, quarantined rows (lines
    of the sample), features turned off, and whether each target can be trained."""

    mapping: tuple[MappedColumn, ...]
    rows_read: int
    rows_loaded: int
    preview: pd.DataFrame
    quarantined: pd.DataFrame  # line, reason, column, detail, raw_line (PII masked)
    features_off: tuple[tuple[str, str], ...]  # (feature, why)
    targets: dict[str, str | None]  # target -> None when trainable, else why not
    chosen_target: str


def check_sample(
    sample: Path,
    contract: Contract,
    *,
    registry: FeatureRegistry,
    discretionary_categories: Sequence[str],
    pii_key: bytes,
    max_amount: float,
    max_line_bytes: int,
    preview_rows: int = 5,
) -> ContractCheck:
    """Dry-run ``contract`` on ``sample``; raises FileRejected when the sample is not a CSV
    of the contract (its header lacks a column the mapping reads, ...)."""
    with tempfile.TemporaryDirectory(prefix="mlplatform-check-") as folder:
        landing = Path(folder) / "landing"
        imported = import_history([sample], landing, contract, max_line_bytes=max_line_bytes)
        with connect(Path(folder) / "warehouse.duckdb") as conn:
            days = landing_files_by_day(landing, imported.days)
            loaded, _ = ingest_partitions(
                conn,
                days,
                contract=contract,
                pii_key=pii_key,
                max_amount=max_amount,
                max_line_bytes=max_line_bytes,
            )
            shown = [  # raw.transactions as loaded: pseudonyms and birth years only
                _RAW_NAMES.get(name, name)
                for name in contract.mapped
                if name not in ("first_name", "last_name", "street")
            ]
            preview = conn.execute(
                f"SELECT partition_date, source_line, {', '.join(shown)} FROM raw.transactions "
                "ORDER BY partition_date, source_line LIMIT ?",
                [preview_rows],
            ).df()
            quarantine = conn.execute(
                "SELECT partition_date, line, reason, column_name AS column, detail, raw_line "
                "FROM raw.quarantine"
            ).df()
            labels = dict(
                conn.execute(
                    "SELECT label, count(*) FROM raw.transactions WHERE label IS NOT NULL "
                    "GROUP BY 1"
                ).fetchall()
            )
            categories = {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT lower(category) FROM raw.transactions"
                ).fetchall()
            }
    preview["source_line"] = [
        imported.daily_to_source(day, line)
        for day, line in zip(preview.pop("partition_date"), preview["source_line"], strict=True)
    ]
    quarantine["line"] = [
        imported.daily_to_source(day, line)
        for day, line in zip(quarantine.pop("partition_date"), quarantine["line"], strict=True)
    ]
    not_dated = pd.DataFrame(
        [(r.line, *r.reason.split(": ", 1), "event_time", "") for r in imported.rejected],
        columns=["line", "reason", "detail", "column", "raw_line"],
    )
    quarantined = (
        pd.concat([quarantine, not_dated[quarantine.columns]], ignore_index=True)
        .sort_values("line", kind="stable")
        .reset_index(drop=True)
    )
    return ContractCheck(
        mapping=tuple(
            MappedColumn(name, contract.describe(name), required)
            for name, (required, _) in CANONICAL_COLUMNS.items()
        ),
        rows_read=imported.rows_read,
        rows_loaded=sum(r.rows_loaded for r in loaded.values()),
        preview=preview,
        quarantined=quarantined,
        features_off=tuple(
            (f.name, "needs " + ", ".join(registry.missing(f))) for f in registry.disabled
        ),
        targets={
            "label": _label_trainable(contract, labels),
            "revenge_spending": _revenge_trainable(contract, categories, discretionary_categories),
        },
        chosen_target=contract.target,
    )


def _label_trainable(contract: Contract, labels: dict[float, int]) -> str | None:
    if not contract.has("label"):
        return "no `label` column is mapped"
    missing = [name for value, name in ((0.0, "0"), (1.0, "1")) if not labels.get(value)]
    if missing:
        return f"no loaded row has label {' or '.join(missing)} (a label needs both classes)"
    return None


def _revenge_trainable(
    contract: Contract, categories: set[str | None], discretionary: Sequence[str]
) -> str | None:
    if not contract.has("category"):
        return "needs `category` (spending is discretionary by category)"
    if not categories & set(discretionary):
        return (
            "no loaded row is in a discretionary category (MLPLATFORM_DISCRETIONARY_CATEGORIES: "
            f"{', '.join(discretionary)})"
        )
    return None

"""The landing-file data contract: canonical columns and a source's mapping onto them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

# Canonical landing columns: name -> (required, PII handling). Order is the raw table's order.
CANONICAL_COLUMNS: dict[str, tuple[bool, str | None]] = {
    "transaction_id": (True, None),
    "event_time": (True, None),
    "card_number": (True, "pseudonymise"),
    "merchant": (False, None),
    "category": (False, None),
    "amount": (True, None),
    "first_name": (False, "drop"),
    "last_name": (False, "drop"),
    "street": (False, "drop"),
    "gender": (False, None),
    "city": (False, None),
    "state": (False, None),
    "zip": (False, None),
    "city_pop": (False, None),
    "job": (False, None),
    "birth_date": (False, "birth_year"),
    "home_lat": (False, None),
    "home_long": (False, None),
    "merchant_lat": (False, None),
    "merchant_long": (False, None),
    "label": (False, None),
}
REQUIRED_COLUMNS = tuple(name for name, (required, _) in CANONICAL_COLUMNS.items() if required)
PII_COLUMNS = tuple(name for name, (_, pii) in CANONICAL_COLUMNS.items() if pii)
REFERENCE_COLUMNS = ("card_number", "credit_limit", "income_band")
TARGETS = ("label", "revenge_spending")


class ContractError(ValueError):
    """A mapping YAML that does not describe a usable contract."""


@dataclass(frozen=True)
class ReferenceContract:
    """Where the card reference file lies (relative to the landing folder) and its columns."""

    file: str
    columns: dict[str, str]


@dataclass(frozen=True)
class Contract:
    """A source's mapping onto the canonical columns (see ARCHITECTURE.md, Data contract)."""

    name: str
    columns: dict[str, str]
    drop: tuple[str, ...] = ()
    target: Literal["label", "revenge_spending"] = "revenge_spending"
    categories: tuple[str, ...] | None = None
    event_time_format: str = "%Y-%m-%d %H:%M:%S"
    reference: ReferenceContract | None = None
    path: Path | None = field(default=None, compare=False)

    def has(self, canonical: str) -> bool:
        """Whether the source carries this canonical column."""
        return canonical in self.columns

    def source(self, canonical: str) -> str:
        return self.columns[canonical]


def load_contract(path: Path) -> Contract:
    """Read and check a mapping YAML; errors name the file and the offending key."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ContractError(f"{path}: cannot read the contract: {error}") from error
    if not isinstance(spec, dict) or not isinstance(spec.get("columns"), dict):
        raise ContractError(f"{path}: a contract needs a `columns:` mapping")
    columns = {str(k): str(v) for k, v in spec["columns"].items()}
    unknown = sorted(set(columns) - set(CANONICAL_COLUMNS))
    if unknown:
        raise ContractError(
            f"{path}: unknown canonical column(s) {unknown}; known: {list(CANONICAL_COLUMNS)}"
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise ContractError(f"{path}: required canonical column(s) not mapped: {missing}")
    sources = list(columns.values())
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        raise ContractError(f"{path}: source column(s) mapped twice: {repeated}")
    target = spec.get("target", "revenge_spending")
    if target not in TARGETS:
        raise ContractError(f"{path}: target must be one of {TARGETS}, not {target!r}")
    if target == "label" and "label" not in columns:
        raise ContractError(f"{path}: `target: label` needs a mapped `label` column")
    reference = None
    if spec.get("reference"):
        ref = spec["reference"]
        ref_columns = {str(k): str(v) for k, v in (ref.get("columns") or {}).items()}
        if "file" not in ref or "card_number" not in ref_columns:
            raise ContractError(f"{path}: `reference:` needs `file:` and a `card_number` column")
        bad = sorted(set(ref_columns) - set(REFERENCE_COLUMNS))
        if bad:
            raise ContractError(f"{path}: unknown reference column(s) {bad}")
        reference = ReferenceContract(file=str(ref["file"]), columns=ref_columns)
    categories = spec.get("categories")
    return Contract(
        name=str(spec.get("name", Path(path).stem)),
        columns=columns,
        drop=tuple(str(c) for c in spec.get("drop") or ()),
        target=target,
        categories=tuple(str(c).strip().lower() for c in categories) if categories else None,
        event_time_format=str(spec.get("event_time_format", "%Y-%m-%d %H:%M:%S")),
        reference=reference,
        path=Path(path),
    )

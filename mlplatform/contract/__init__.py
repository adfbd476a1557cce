"""The landing-file data contract: canonical columns and a source's mapping onto them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from mlplatform.contract.expressions import Expression, ExpressionError, parse_expression

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
#: The mapping value of a transaction id the platform derives from the row (see ingestion).
GENERATED = "generated"
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
    columns: dict[str, str]  # canonical -> source column, one to one
    drop: tuple[str, ...] = ()
    expressions: dict[str, Expression] = field(default_factory=dict)  # canonical -> {sql: ...}
    generated_id: bool = False  # `transaction_id: generated`
    timezone: str | None = None  # the zone of the source's local times (None: UTC)
    target: Literal["label", "revenge_spending"] = "revenge_spending"
    categories: tuple[str, ...] | None = None
    event_time_format: str = "%Y-%m-%d %H:%M:%S"
    reference: ReferenceContract | None = None
    path: Path | None = field(default=None, compare=False)

    def has(self, canonical: str) -> bool:
        """Whether the source carries (or the platform derives) this canonical column."""
        return (
            canonical in self.columns
            or canonical in self.expressions
            or (canonical == "transaction_id" and self.generated_id)
        )

    @property
    def mapped(self) -> tuple[str, ...]:
        """The canonical columns the contract maps, in canonical order."""
        return tuple(name for name in CANONICAL_COLUMNS if self.has(name))

    def sources(self, canonical: str) -> tuple[str, ...]:
        """The source columns a canonical column is read from (none when not mapped or
        generated)."""
        if canonical in self.columns:
            return (self.columns[canonical],)
        if canonical in self.expressions:
            return self.expressions[canonical].sources
        return ()

    def describe(self, canonical: str) -> str:
        """How a canonical column is mapped, as the YAML says it."""
        if canonical in self.columns:
            return self.columns[canonical]
        if canonical in self.expressions:
            return "{sql: " + self.expressions[canonical].sql + "}"
        return GENERATED if self.has(canonical) else ""

    def header_errors(self, header: list[str]) -> list[str]:
        """Errors of the mapping against a file's header: the source columns a required
        column or an expression reads that the header lacks, each naming its YAML key."""
        errors = []
        for name in CANONICAL_COLUMNS:
            needed = name in self.expressions or (
                name in self.columns and CANONICAL_COLUMNS[name][0]
            )
            missing = [s for s in self.sources(name) if s not in header] if needed else []
            if missing:
                kind = "the expression's" if name in self.expressions else "required"
                errors.append(
                    f"`columns.{name}`: {kind} column(s) {missing} missing from the header"
                )
        return errors


def load_contract(path: Path) -> Contract:
    """Read and check a mapping YAML; errors name the file and the offending key."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ContractError(f"{path}: cannot read the contract: {error}") from error
    if not isinstance(spec, dict) or not isinstance(spec.get("columns"), dict):
        raise ContractError(f"{path}: a contract needs a `columns:` mapping")
    unknown = sorted(set(map(str, spec["columns"])) - set(CANONICAL_COLUMNS))
    if unknown:
        raise ContractError(
            f"{path}: unknown canonical column(s) {unknown}; known: {list(CANONICAL_COLUMNS)}"
        )
    columns, expressions, generated_id = _mappings(path, spec["columns"])
    drop = tuple(str(c) for c in spec.get("drop") or ())
    missing = [
        name
        for name in REQUIRED_COLUMNS
        if name not in columns
        and name not in expressions
        and not (name == "transaction_id" and generated_id)
    ]
    if missing:
        raise ContractError(f"{path}: required canonical column(s) not mapped: {missing}")
    sources = list(columns.values())
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        raise ContractError(f"{path}: source column(s) mapped twice: {repeated}")
    _check_expression_sources(path, columns, expressions, drop)
    timezone = spec.get("timezone")
    if timezone is not None:
        try:
            ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ContractError(f"{path}: `timezone`: unknown time zone {timezone!r}") from error
    target = spec.get("target", "revenge_spending")
    if target not in TARGETS:
        raise ContractError(f"{path}: target must be one of {TARGETS}, not {target!r}")
    if target == "label" and "label" not in columns and "label" not in expressions:
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
        drop=drop,
        expressions=expressions,
        generated_id=generated_id,
        timezone=None if timezone is None else str(timezone),
        target=target,
        categories=tuple(str(c).strip().lower() for c in categories) if categories else None,
        event_time_format=str(spec.get("event_time_format", "%Y-%m-%d %H:%M:%S")),
        reference=reference,
        path=Path(path),
    )


def _mappings(
    path: Path, spec: dict[Any, Any]
) -> tuple[dict[str, str], dict[str, Expression], bool]:
    """The one-to-one mappings, the expressions and whether the transaction id is generated."""
    columns: dict[str, str] = {}
    expressions: dict[str, Expression] = {}
    generated_id = False
    for key, value in spec.items():
        name = str(key)
        if isinstance(value, dict):
            if set(value) != {"sql"} or not isinstance(value["sql"], str):
                raise ContractError(
                    f"{path}: `columns.{name}`: an expression is {{sql: EXPRESSION}}, not {value!r}"
                )
            try:
                expressions[name] = parse_expression(value["sql"])
            except ExpressionError as error:
                raise ContractError(f"{path}: `columns.{name}`: {error}") from error
        elif value == GENERATED:
            if name != "transaction_id":
                raise ContractError(
                    f"{path}: `columns.{name}`: only transaction_id can be {GENERATED}"
                )
            generated_id = True
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            columns[name] = str(value)
        else:
            raise ContractError(
                f"{path}: `columns.{name}`: expected a source column, {{sql: EXPRESSION}}"
                f"{' or generated' if name == 'transaction_id' else ''}, not {value!r}"
            )
    return columns, expressions, generated_id


def _check_expression_sources(
    path: Path, columns: dict[str, str], expressions: dict[str, Expression], drop: tuple[str, ...]
) -> None:
    """No expression reads a dropped column, and personal data stays in its own column: a
    source column of a PII column used by another column would leak into the warehouse."""
    personal = {}
    for name in PII_COLUMNS:
        for source in (columns[name],) if name in columns else ():
            personal[source] = name
        for source in expressions[name].sources if name in expressions else ():
            personal[source] = name
    for name in CANONICAL_COLUMNS:
        if name in expressions:
            used = expressions[name].sources
        elif name in columns:
            used = (columns[name],)
        else:
            continue
        for source in used:
            if source in drop:
                raise ContractError(
                    f"{path}: `columns.{name}`: reads {source!r}, which `drop:` lists "
                    "(dropped columns are never loaded)"
                )
            owner = personal.get(source)
            if owner is not None and owner != name and name not in PII_COLUMNS:
                raise ContractError(
                    f"{path}: `columns.{name}`: reads {source!r}, a source column of "
                    f"{owner} (personal data): it would leak into the warehouse"
                )

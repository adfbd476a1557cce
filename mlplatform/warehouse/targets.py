"""``ml.targets``: each curated transaction's target, NULL until its horizon has passed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb

from mlplatform.contract import Contract
from mlplatform.settings import Settings
from mlplatform.warehouse.connection import read_sql, sql_literal, transactions

REVENGE_RULE = (
    "CASE WHEN is_discretionary AND has_history AND recent_daily <= {ratio} * baseline_daily "
    "AND burst_spend >= greatest({multiple} * baseline_daily, min_burst) THEN 1 ELSE 0 END"
)


@dataclass(frozen=True)
class TargetResult:
    """``ml.targets`` as built: which target, as of when, and how many rows matured."""

    target: str
    as_of: datetime | None
    rows: int
    matured: int
    positives: int


def target_maturity(target: str, label_delay_days: int, horizon_hours: int) -> timedelta:
    """How long after a transaction its target is known: the label delay for a carried
    ``label``, the burst horizon for ``revenge_spending``."""
    if target == "label":
        return timedelta(days=label_delay_days)
    return timedelta(hours=horizon_hours)


def latest_matured_day(as_of: datetime, maturity: timedelta) -> date:
    """The latest day whose every target has matured at ``as_of`` (``ml.targets``'s as-of:
    the end of the latest curated day): its end plus ``maturity`` is at most ``as_of``."""
    return (as_of - maturity).date() - timedelta(days=1)


def targets_sql(settings: Settings, contract: Contract) -> str:
    """The CREATE of ``ml.targets`` for the contract's target and the settings' thresholds."""
    revenge = settings.revenge
    microsecond = timedelta(microseconds=1)

    def interval(span: timedelta) -> str:
        return f"{span // microsecond} microseconds"

    baseline, recent = timedelta(days=revenge.baseline_days), timedelta(days=revenge.recent_days)
    horizon = timedelta(hours=revenge.horizon_hours)
    maturity = target_maturity(contract.target, settings.label_delay_days, revenge.horizon_hours)
    if contract.target == "label":
        target = "label"
    else:
        target = REVENGE_RULE.format(
            ratio=float(revenge.restraint_ratio), multiple=float(revenge.burst_multiple)
        )
    discretionary = ", ".join(sql_literal(c) for c in settings.discretionary_categories)
    return read_sql("transaction_targets").format(
        discretionary=discretionary or "NULL",
        baseline=interval(baseline),
        baseline_open=interval(baseline - microsecond),
        recent=interval(recent),
        recent_open=interval(recent - microsecond),
        horizon_open=interval(horizon - microsecond),
        min_history=interval(timedelta(days=revenge.min_history_days)),
        recent_days=float(revenge.recent_days),
        burst_share=float(revenge.min_burst_credit_limit_share),
        burst_amount=float(revenge.min_burst_amount),
        maturity=interval(maturity),
        target=target,
    )


def build_targets(
    conn: duckdb.DuckDBPyConnection, settings: Settings, contract: Contract
) -> TargetResult:
    """Rebuild ``ml.targets`` from all of ``curated.transactions``, in one transaction.

    Targets are as of the end of the latest curated day: a target whose horizon (revenge) or
    label delay (label) ends later is NULL (immature), never 0.
    """
    (last_day,) = conn.execute("SELECT max(partition_date) FROM curated.transactions").fetchone()
    as_of = (
        datetime.combine(last_day + timedelta(days=1), datetime.min.time()) if last_day else None
    )
    for attempt in transactions(conn):
        with attempt:
            conn.execute(targets_sql(settings, contract), {"as_of": as_of or datetime.min})
    rows, matured, positives = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE matured), count(*) FILTER (WHERE target = 1) "
        "FROM ml.targets"
    ).fetchone()
    return TargetResult(contract.target, as_of, rows, matured, positives)

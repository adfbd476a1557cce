"""The feature registry: every feature of ``features.card_features`` declared once.

A declaration names the feature, its entity and window, its type, what it means and the
contract columns it needs; its SQL is one expression. The offline table, the online vector
(``mlplatform.warehouse.features``), ``mlplatform features`` and the Dagster metadata are all
generated from these declarations, so training and serving cannot disagree.

Point in time: every window ends at the transaction (peers at the same second included) or
earlier, never later. Merchant risk only counts labels at least ``label_delay_days`` old.

Framed window aggregates read only columns that stay exact when a run of days is collapsed
into one row (``mlplatform.warehouse.features.BLOCK_COLUMNS``): counts are
``sum(event_count)``, sums of ``amount_exact``, ``amount_squared`` or ``disc_amount``, the
``max(amount)``, the ``first_value(event_time)`` and the previous ``last_event``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import timedelta

from mlplatform.contract import Contract
from mlplatform.settings import Settings
from mlplatform.warehouse.connection import sql_literal

#: Columns the feature SQL reads (``curated.transactions`` has them all; so must online input).
INPUT_COLUMNS: dict[str, str] = {
    "transaction_id": "VARCHAR",
    "event_time": "TIMESTAMP",
    "partition_date": "DATE",
    "card_id": "VARCHAR",
    "merchant": "VARCHAR",
    "category": "VARCHAR",
    "amount": "DOUBLE",
    "gender": "VARCHAR",
    "city_pop": "BIGINT",
    "age": "INTEGER",
    "home_lat": "DOUBLE",
    "home_long": "DOUBLE",
    "merchant_lat": "DOUBLE",
    "merchant_long": "DOUBLE",
    "home_merchant_km": "DOUBLE",
    "label": "INTEGER",
    "credit_limit": "DOUBLE",
    "income_band": "VARCHAR",
    "hour": "TINYINT",
    "weekday": "TINYINT",
    "is_weekend": "BOOLEAN",
}
KEY_COLUMNS = ("transaction_id", "card_id", "event_time", "partition_date")
COORDINATES = ("home_lat", "home_long", "merchant_lat", "merchant_long")


@dataclass(frozen=True)
class Window:
    """Events of the same ``partition_by`` from ``T - span - end`` to ``T - end``.

    With ``end`` 0 the frame ends at the transaction, same-second events included. A
    ``daily`` window counts whole days instead: the ``span`` days that end ``end`` days
    before the transaction's day (additive aggregates only: ``count``, ``sum``); it is
    computed from one row per key and day, which is much cheaper than a per-event frame.
    """

    partition_by: tuple[str, ...]
    span: timedelta | None
    end: timedelta = timedelta(0)
    daily: bool = False

    @property
    def name(self) -> str:
        parts = ["w", *self.partition_by, _label(self.span) if self.span else "sequence"]
        if self.end:
            parts.append("to_" + _label(self.end))
        return "_".join(parts + (["daily"] if self.daily else []))

    @property
    def lookback(self) -> timedelta:
        """How far before a transaction this window reads (daily: back to a day's start)."""
        day = timedelta(days=1) if self.daily else timedelta(0)
        return (self.span or timedelta(0)) + self.end + day

    @property
    def boundary_days(self) -> frozenset[int]:
        """How many days before a transaction's day its frame can start or end (framed
        windows; a span of whole days starts exactly that many days before, same time)."""
        if self.daily or self.span is None:
            return frozenset()
        days = set()
        for distance in {self.span + self.end, self.end}:
            days.add(distance // timedelta(days=1))
            if distance % timedelta(days=1):
                days.add(distance // timedelta(days=1) + 1)
        return frozenset(days)

    @property
    def key(self) -> str:
        """The column of the partition's hash (``key_card_id``), computed once per event: a
        window sorts and carries one integer instead of the key's strings."""
        return "key_" + "_".join(self.partition_by)

    def key_sql(self) -> str:
        return "hash(" + ", ".join(self.partition_by) + ")"

    def sql(self) -> str:
        if self.daily:
            return (
                f"PARTITION BY {self.key_sql()} ORDER BY event_day RANGE BETWEEN "
                f"{self.span.days + self.end.days} PRECEDING AND {self.end.days + 1} PRECEDING"
            )
        # Ordered by the event time in integer microseconds (``event_us``): the same frames as
        # ordering by the timestamp, but the frame bounds are plain integer arithmetic.
        if self.span is None:
            return f"PARTITION BY {self.key} ORDER BY event_us, transaction_hash"
        end = f"{_micros(self.end)} PRECEDING" if self.end else "CURRENT ROW"
        return (
            f"PARTITION BY {self.key} ORDER BY event_us "
            f"RANGE BETWEEN {_micros(self.span + self.end)} PRECEDING AND {end}"
        )


@dataclass(frozen=True)
class Feature:
    """One feature: ``sql`` is an expression of the input columns (with ``over``: window
    functions written ``... OVER {over}``) or, without ``over``, of earlier features."""

    name: str
    sql: str
    dtype: str
    description: str
    entity: str = "card"
    window: str | None = None
    over: Window | None = None
    requires: tuple[str, ...] = ()
    #: A calendar feature (the weekday): one day's values differ from any multi-day
    #: distribution by design, so drift monitoring leaves it out.
    calendar: bool = False

    def expression(self) -> str:
        return self.sql.format(over=self.over.name) if self.over else self.sql


@dataclass(frozen=True)
class FeatureRegistry:
    """The declared features and, for a contract, which are on and which are off (and why)."""

    features: tuple[Feature, ...]
    available: frozenset[str]
    discretionary_categories: tuple[str, ...]

    @property
    def enabled(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if not self.missing(f))

    @property
    def disabled(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if self.missing(f))

    def missing(self, feature: Feature) -> tuple[str, ...]:
        """The contract columns a feature needs and the active contract lacks."""
        return tuple(c for c in feature.requires if c not in self.available)

    @property
    def windows(self) -> tuple[Window, ...]:
        return tuple(dict.fromkeys(f.over for f in self.enabled if f.over))

    @property
    def boundary_days(self) -> tuple[int, ...]:
        """The transaction's day and the days before it where a frame can start or end."""
        return tuple(sorted({0}.union(*(w.boundary_days for w in self.windows))))

    @property
    def lookback(self) -> timedelta:
        """How far back of the first transaction the enabled features read."""
        return max((w.lookback for w in self.windows), default=timedelta(0))

    def warm_up(self, name: str) -> timedelta:
        """How much history before a row its feature ``name`` reads (the lookback of its
        window, or the longest of the features its expression uses): a row with less data
        before it than this has a feature still filling up."""
        feature = self.by_name[name]
        if feature.over is not None:
            return feature.over.lookback
        used = set(re.findall(r"[a-z_][a-z0-9_]*", feature.sql)) & set(self.by_name) - {name}
        return max((self.warm_up(other) for other in used), default=timedelta(0))

    @functools.cached_property
    def by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    def describe(self) -> list[dict[str, str]]:
        """One row per declared feature, for the CLI and the Dagster UI."""
        return [
            {
                "feature": f.name,
                "entity": f.entity,
                "window": f.window or "",
                "type": f.dtype,
                "status": "off: needs " + ", ".join(self.missing(f)) if self.missing(f) else "on",
                "description": f.description,
            }
            for f in self.features
        ]


def available_columns(contract: Contract) -> frozenset[str]:
    """Canonical columns the contract maps, plus the reference data's columns."""
    reference = set(contract.reference.columns) if contract.reference else set()
    return frozenset(contract.mapped) | reference


def feature_registry(settings: Settings, contract: Contract) -> FeatureRegistry:
    """The declared features with the settings' label delay, categories and incomes."""
    return FeatureRegistry(
        features=_declarations(settings),
        available=available_columns(contract),
        discretionary_categories=settings.discretionary_categories,
    )


def _micros(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


def _label(span: timedelta) -> str:
    """``30d``, ``1h``, ``1us``: a span as a short name."""
    for unit, size in (("d", timedelta(days=1)), ("h", timedelta(hours=1)),
                       ("s", timedelta(seconds=1))):  # fmt: skip
        if span % size == timedelta(0):
            return f"{span // size}{unit}"
    return f"{span // timedelta(microseconds=1)}us"


def _declarations(settings: Settings) -> tuple[Feature, ...]:
    hour, day = timedelta(hours=1), timedelta(days=1)
    card_windows = {"1h": hour, "24h": day, "7d": 7 * day, "30d": 30 * day}
    card = {label: Window(("card_id",), span) for label, span in card_windows.items()}
    card_14d, card_90d = Window(("card_id",), 14 * day), Window(("card_id",), 90 * day)
    # The previous transaction: by time, then id (same-second events have an order); only
    # within 90 days, the least lookback of any build, so that every build agrees.
    sequence = Window(("card_id",), None)
    delay = timedelta(days=settings.label_delay_days)
    incomes = " ".join(
        f"WHEN {sql_literal(band)} THEN {float(income)!r}"
        for band, income in settings.income_band_monthly_income.items()
    )
    features: list[Feature] = [
        Feature("amount", "amount", "DOUBLE", "Transaction amount.", "transaction"),
        Feature("category", "category", "VARCHAR", "Merchant category.", "transaction",
                requires=("category",)),
        Feature("hour", "hour", "TINYINT", "Hour of the day (0-23).", "transaction"),
        Feature("weekday", "weekday", "TINYINT", "ISO weekday (Monday 1 .. Sunday 7).",
                "transaction", calendar=True),
        Feature("is_night", "hour < 6 OR hour >= 22", "BOOLEAN", "Between 22:00 and 06:00.",
                "transaction"),
        Feature("is_weekend", "is_weekend", "BOOLEAN", "Saturday or Sunday.", "transaction",
                calendar=True),
        Feature("gender", "gender", "VARCHAR", "Cardholder gender (F/M).", "card",
                requires=("gender",)),
        Feature("age", "age", "INTEGER", "Cardholder age in years.", "card",
                requires=("birth_date",)),
        Feature("city_pop", "city_pop", "BIGINT", "Population of the cardholder's city.", "card",
                requires=("city_pop",)),
        Feature("credit_limit", "credit_limit", "DOUBLE", "Credit limit (reference data).",
                "card", requires=("credit_limit",)),
        Feature("income_band", "income_band", "VARCHAR", "Income band (reference data).", "card",
                requires=("income_band",)),
        Feature("amount_to_credit_limit", "amount / nullif(credit_limit, 0)", "DOUBLE",
                "Amount as a share of the credit limit.", "transaction",
                requires=("credit_limit",)),
        Feature("home_merchant_km", "home_merchant_km", "DOUBLE",
                "Great-circle distance from the cardholder's home to the merchant (km).",
                "transaction", requires=COORDINATES),
    ]  # fmt: skip
    for label, window in card.items():
        features += [
            Feature(f"card_txn_count_{label}", "sum(event_count) OVER {over}", "BIGINT",
                    f"The card's transactions in the last {label}, this one included.",
                    window=label, over=window),
            Feature(f"card_amount_sum_{label}", "sum(amount_exact) OVER {over}", "DOUBLE",
                    f"The card's spend in the last {label}.", window=label, over=window),
            Feature(f"card_amount_mean_{label}",
                    f"card_amount_sum_{label} / card_txn_count_{label}", "DOUBLE",
                    f"The card's mean amount in the last {label}.", window=label),
            Feature(f"card_amount_max_{label}", "max(amount) OVER {over}", "DOUBLE",
                    f"The card's largest amount in the last {label}.", window=label, over=window),
        ]  # fmt: skip
    features += [
        # From exact decimal sums (window sums shared with the 30d count and sum), so that
        # offline and online values agree to the last bit.
        Feature("card_amount_std_30d",
                "sqrt(greatest(sum(amount_squared) OVER {over} / sum(event_count) OVER {over}"
                " - pow(sum(amount_exact) OVER {over} / sum(event_count) OVER {over}, 2), 0))",
                "DOUBLE", "Standard deviation of the card's amounts in the last 30d.",
                window="30d", over=card["30d"]),
        Feature("card_amount_ratio_30d", "amount / nullif(card_amount_mean_30d, 0)", "DOUBLE",
                "Amount relative to the card's 30-day mean amount.", window="30d"),
        Feature("card_amount_zscore_30d",
                "(amount - card_amount_mean_30d) / nullif(card_amount_std_30d, 0)", "DOUBLE",
                "Amount's z-score against the card's last 30 days.", window="30d"),
        Feature("card_history_days",
                "(epoch(event_time) - epoch(first_value(event_time) OVER {over})) / 86400",
                "DOUBLE", "Days since the card's first transaction (at most 90).", window="90d",
                over=card_90d),
        Feature("card_seconds_since_previous",
                "CASE WHEN (lag(last_event) OVER {over}).event_time >= event_time - INTERVAL 90 "
                "DAYS THEN epoch(event_time) - epoch((lag(last_event) OVER {over}).event_time) "
                "END", "DOUBLE",
                "Seconds since the card's previous transaction (NULL when none in 90 days).",
                window="90d", over=sequence),
        Feature("card_km_from_previous",
                "CASE WHEN (lag(last_event) OVER {over}).event_time >= event_time - INTERVAL 90 "
                "DAYS THEN haversine_km((lag(last_event) OVER {over}).merchant_lat, "
                "(lag(last_event) OVER {over}).merchant_long, merchant_lat, merchant_long) END",
                "DOUBLE", "Distance from the card's previous merchant (km).", window="90d",
                over=sequence, requires=("merchant_lat", "merchant_long")),
        Feature("card_speed_kmh_since_previous",
                "card_km_from_previous / greatest(card_seconds_since_previous, 60) * 3600",
                "DOUBLE", "Implied travel speed since the previous transaction (km/h, time "
                "floored at a minute).", requires=("merchant_lat", "merchant_long")),
        Feature("card_disc_spend_14d", "sum(disc_amount) OVER {over}", "DOUBLE",
                "The card's discretionary spend in the last 14 days.", window="14d",
                over=card_14d, requires=("category",)),
        Feature("card_spend_14d", "sum(amount_exact) OVER {over}", "DOUBLE",
                "The card's spend in the last 14 days.", window="14d", over=card_14d),
        Feature("card_disc_spend_90d", "sum(disc_amount) OVER {over}", "DOUBLE",
                "The card's discretionary spend in the last 90 days.", window="90d",
                over=card_90d, requires=("category",)),
        Feature("card_spend_90d", "sum(amount_exact) OVER {over}", "DOUBLE",
                "The card's spend in the last 90 days.", window="90d", over=card_90d),
        Feature("card_disc_share_14d", "card_disc_spend_14d / nullif(card_spend_14d, 0)",
                "DOUBLE", "Discretionary share of the card's spend, last 14 days.",
                window="14d", requires=("category",)),
        Feature("card_disc_share_90d", "card_disc_spend_90d / nullif(card_spend_90d, 0)",
                "DOUBLE", "Discretionary share of the card's spend, last 90 days (baseline).",
                window="90d", requires=("category",)),
        Feature("card_disc_share_ratio_14d_90d",
                "card_disc_share_14d / nullif(card_disc_share_90d, 0)", "DOUBLE",
                "Recent discretionary share over the 90-day baseline (restraint when low).",
                window="14d/90d", requires=("category",)),
        Feature("card_disc_daily_ratio_14d_90d",
                "(card_disc_spend_14d / least(14, greatest(card_history_days, 1))) / "
                "nullif(card_disc_spend_90d / least(90, greatest(card_history_days, 1)), 0)",
                "DOUBLE", "Recent daily discretionary spend over the 90-day daily baseline "
                "(over the days of history the card has).", window="14d/90d",
                requires=("category",)),
        Feature("card_spend_30d_to_credit_limit",
                "card_amount_sum_30d / nullif(credit_limit, 0)", "DOUBLE",
                "The card's 30-day spend as a share of its credit limit.", window="30d",
                requires=("credit_limit",)),
        Feature("card_spend_30d_to_income",
                f"card_amount_sum_30d / (CASE income_band {incomes} END)", "DOUBLE",
                "The card's 30-day spend over the nominal monthly income of its band "
                "(MLPLATFORM_INCOME_BAND_MONTHLY_INCOME).", window="30d",
                requires=("income_band",)),
        Feature("card_category_count_30d",
                "sum(event_count) OVER {over}", "BIGINT",
                "The card's transactions in this category in the last 30 days.",
                window="30d", over=Window(("card_id", "category"), 30 * day),
                requires=("category",)),
        Feature("card_category_share_30d",
                "card_category_count_30d / card_txn_count_30d", "DOUBLE",
                "Share of the card's last-30-day transactions in this category.", window="30d",
                requires=("category",)),
        Feature("card_merchant_visits_90d", "sum(event_count) OVER {over} - 1", "BIGINT",
                "The card's earlier transactions at this merchant in the last 90 days.",
                window="90d", over=Window(("card_id", "merchant"), 90 * day),
                requires=("merchant",)),
        Feature("card_merchant_is_new", "card_merchant_visits_90d = 0", "BOOLEAN",
                "First transaction of the card at this merchant in 90 days.", window="90d",
                requires=("merchant",)),
    ]  # fmt: skip
    for label, span in {"1d": day, "7d": 7 * day, "30d": 30 * day}.items():
        matured = Window(("merchant",), span, end=delay, daily=True)
        days = f"the {label} ending {settings.label_delay_days} days before this one's day"
        features += [
            Feature(f"merchant_labelled_count_{label}", "count(label)", "BIGINT",
                    f"Labelled transactions at the merchant on {days} (matured labels only).",
                    "merchant", label, matured, ("merchant", "label")),
            Feature(f"merchant_positive_count_{label}", "sum(label)", "BIGINT",
                    f"Labelled positives at the merchant on {days}.",
                    "merchant", label, matured, ("merchant", "label")),
            Feature(f"merchant_positive_rate_{label}",
                    f"merchant_positive_count_{label} / nullif(merchant_labelled_count_{label}, 0)",
                    "DOUBLE", f"Share of labelled positives at the merchant on {days}.",
                    "merchant", label, requires=("merchant", "label")),
        ]  # fmt: skip
    return tuple(features)

"""The feature registry: every feature of ``features.card_features`` declared once.

A declaration names the feature, its entity and window, its type, what it means and the
contract columns it needs. A window feature is an :class:`Aggregation` (function, event
column, window) from which both engines are generated: the offline SQL (window functions,
:mod:`mlplatform.features.offline`) and the online per-card state
(:mod:`mlplatform.features.online_state`). Any other feature is a :class:`Derived` function
(numpy, :mod:`mlplatform.features.derived`) of input columns and of other features
(internal aggregates among them: declared like the others, not written to the table),
which both engines run, or an input column as it is. The offline table, the online vector,
``mlplatform features`` and the Dagster metadata are all generated from these declarations,
so training and serving cannot disagree.

Point in time: every window ends at the transaction (peers at the same microsecond included)
or earlier, never later. Merchant risk only counts labels at least ``label_delay_days`` old.

Framed aggregations read only event columns that stay exact when a run of days is collapsed
into one row (``mlplatform.features.offline.BLOCK_COLUMNS``): counts of events, sums of
``amount_exact``, ``amount_squared`` or ``disc_amount``, the ``max(amount)``, the first
``event_time`` and the previous ``last_event``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mlplatform.contract import Contract
from mlplatform.features import derived
from mlplatform.features.derived import DERIVED_DTYPES
from mlplatform.settings import Settings

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
#: The event as the next one's previous event (the previous-transaction features).
LAST_EVENT = {"event_time": "TIMESTAMP", "merchant_lat": "DOUBLE", "merchant_long": "DOUBLE"}
#: The per-event columns the windows aggregate, with their SQL types
#: (:func:`mlplatform.features.offline.event_columns` computes them, and
#: :func:`~mlplatform.features.offline.event_values` is its Python twin).
EVENT_COLUMNS: dict[str, str] = {
    **INPUT_COLUMNS,
    "event_count": "INTEGER",
    "amount_exact": "DECIMAL(18,2)",
    "amount_squared": "DECIMAL(18,4)",
    "disc_amount": "DECIMAL(18,2)",
    "last_event": "STRUCT(" + ", ".join(f"{f} {t}" for f, t in LAST_EVENT.items()) + ")",
    "event_day": "INTEGER",
    "event_us": "BIGINT",
}
#: How a value of each SQL type reaches a derived feature's function.
_KINDS = {"DOUBLE": "number", "DECIMAL": "number", "BIGINT": "number", "HUGEINT": "number",
          "INTEGER": "number", "TINYINT": "number", "BOOLEAN": "number", "TIMESTAMP": "time",
          "VARCHAR": "text"}  # fmt: skip
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


class UnsupportedAggregation(ValueError):
    """A declared aggregation that one of the engines cannot run (refused at load)."""


#: Framed windows: the window call of each function (``count`` counts events; its column is
#: ``event_count``, which a collapsed block sums). Daily windows: the per-day partial, summed
#: over the window's days.
FRAMED_CALLS = {"count": "sum", "sum": "sum", "max": "max", "first": "first_value",
                "previous": "lag"}  # fmt: skip
DAILY_CALLS = {"count": "count", "sum": "sum"}


@dataclass(frozen=True)
class Aggregation:
    """``function`` of the event ``column`` over ``window``: ``count`` (events; daily: the
    rows whose column is not NULL), ``sum``, ``max``, ``first`` (the oldest event's value in
    the frame) or ``previous`` (the value of the event before, in a sequence window)."""

    function: str
    column: str
    window: Window

    def __post_init__(self) -> None:
        calls = DAILY_CALLS if self.window.daily else FRAMED_CALLS
        kind = "daily" if self.window.daily else "framed"
        if self.function not in calls:
            raise UnsupportedAggregation(
                f"{self.function}() over a {kind} window: supported are {', '.join(calls)}"
            )
        if (self.function == "previous") != (self.window.span is None and not self.window.daily):
            raise UnsupportedAggregation("previous() needs a sequence window (span None), and "
                                         "a sequence window takes previous() only")  # fmt: skip
        if self.window.daily == (self.window.partition_by[:1] == ("card_id",)):
            raise UnsupportedAggregation(
                "framed windows are per card (the online state is per card); daily windows are "
                f"per other key (merchant): {self.window.partition_by}"
            )
        if not self.window.daily and self.function == "count" and self.column != "event_count":
            raise UnsupportedAggregation("a framed count() counts events: column event_count")

    @property
    def call(self) -> str:
        """The SQL aggregate function: of the window (framed) or of a day's rows (daily)."""
        return (DAILY_CALLS if self.window.daily else FRAMED_CALLS)[self.function]

    def sql(self) -> str:
        """Framed: the window call over the window's name; daily: the per-day partial."""
        if self.window.daily:
            return f"{self.call}({self.column})"
        return f"{self.call}({self.column}) OVER {self.window.name}"


@dataclass(frozen=True)
class Derived:
    """A feature computed by ``function`` (numpy, :mod:`mlplatform.features.derived`) from
    ``inputs``: input columns, other features declared before it, or a field of a struct
    aggregate (``card_previous_event.event_time``). The same function runs offline and
    online."""

    function: Callable[..., Any]
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Feature:
    """One feature: an :class:`Aggregation`, a :class:`Derived` function, or neither: the
    input column of the same name, as it is. ``dtype`` None keeps the aggregation's own SQL
    type (an internal aggregate: exact decimals, a timestamp, the previous event's struct).
    ``output`` False: an internal aggregate that other features read, not a column of the
    table."""

    name: str
    derive: Derived | None
    dtype: str | None
    description: str
    entity: str = "card"
    window: str | None = None
    aggregation: Aggregation | None = None
    requires: tuple[str, ...] = ()
    #: A calendar feature (the weekday): one day's values differ from any multi-day
    #: distribution by design, so drift monitoring leaves it out.
    calendar: bool = False
    output: bool = True

    def __post_init__(self) -> None:
        if self.derive is not None and self.aggregation is not None:
            raise UnsupportedAggregation(f"{self.name}: declare a function or an aggregation")
        if self.derive is not None and not callable(self.derive.function):
            raise UnsupportedAggregation(f"{self.name}: a derived feature needs a function")
        if self.derive is not None and self.dtype not in DERIVED_DTYPES:
            raise UnsupportedAggregation(
                f"{self.name}: a derived feature is one of {', '.join(DERIVED_DTYPES)}"
            )
        passed_through = self.derive is None and self.aggregation is None
        if passed_through and INPUT_COLUMNS.get(self.name) != self.dtype:
            raise UnsupportedAggregation(
                f"{self.name}: without a function or an aggregation a feature is the input "
                "column of its name, with that column's type"
            )
        if self.output and self.dtype is None:
            raise UnsupportedAggregation(f"{self.name}: a table column needs a dtype")
        if not self.output and self.aggregation is None:
            raise UnsupportedAggregation(f"{self.name}: only an aggregation can be internal")

    @property
    def over(self) -> Window | None:
        return self.aggregation.window if self.aggregation else None

    def expression(self) -> str:
        """An aggregation's window call, typed to ``dtype`` (if any)."""
        sql = self.aggregation.sql()
        return sql if self.dtype is None else f"CAST({sql} AS {self.dtype})"


@dataclass(frozen=True)
class FeatureRegistry:
    """The declared features and, for a contract, which are on and which are off (and why)."""

    features: tuple[Feature, ...]
    available: frozenset[str]
    discretionary_categories: tuple[str, ...]

    def __post_init__(self) -> None:
        computed = {f.name for f in self.computed}
        before: set[str] = set()
        for feature in self.computed:
            if lacking := sorted(self.reads(feature) - computed):
                raise UnsupportedAggregation(
                    f"{feature.name} reads {', '.join(lacking)}, which this contract switches "
                    f"off: declare {feature.name} with their requirements too"
                )
            for name in feature.derive.inputs if feature.derive else ():
                self.input_kind(name, reader=feature.name)
            if later := sorted(n for n in self.reads(feature) - before
                               if self.by_name[n].derive):  # fmt: skip
                raise UnsupportedAggregation(
                    f"{feature.name} reads {', '.join(later)}: declare it after them"
                )
            before.add(feature.name)

    @property
    def enabled(self) -> tuple[Feature, ...]:
        """The table's features that the contract supports."""
        return tuple(f for f in self.features if f.output and not self.missing(f))

    @property
    def disabled(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.output and self.missing(f))

    @property
    def computed(self) -> tuple[Feature, ...]:
        """Every feature both engines compute, in declaration order: the enabled ones and
        the internal aggregates they read."""
        return tuple(f for f in self.features if not self.missing(f))

    @property
    def aggregations(self) -> tuple[Feature, ...]:
        """The computed features that are aggregations."""
        return tuple(f for f in self.computed if f.aggregation)

    def missing(self, feature: Feature) -> tuple[str, ...]:
        """The contract columns a feature needs and the active contract lacks."""
        return tuple(c for c in feature.requires if c not in self.available)

    @property
    def windows(self) -> tuple[Window, ...]:
        return tuple(dict.fromkeys(f.over for f in self.aggregations))

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
        window, or the longest of the features its function reads): a row with less data
        before it than this has a feature still filling up."""
        feature = self.by_name[name]
        if feature.over is not None:
            return feature.over.lookback
        return max((self.warm_up(other) for other in self.reads(feature)), default=timedelta(0))

    def reads(self, feature: Feature) -> set[str]:
        """The other features a derived feature reads."""
        inputs = feature.derive.inputs if feature.derive else ()
        return {name.split(".")[0] for name in inputs} & set(self.by_name) - {feature.name}

    def derived_inputs(self) -> dict[str, str]:
        """Input name -> kind (:meth:`input_kind`) of every value the enabled derived
        features read but another derived feature's function: what each engine computes for
        the functions (the same values in both)."""
        derived = {f.name for f in self.enabled if f.derive}
        return {
            name: self.input_kind(name, f.name)
            for f in self.enabled
            for name in (f.derive.inputs if f.derive else ())
            if name not in derived
        }

    def input_kind(self, name: str, reader: str) -> str:
        """How a derived feature's input reaches its function (:mod:`~mlplatform.features.
        derived`): ``number``, ``time`` (microseconds) or ``text``; refused, naming the
        ``reader``, when neither engine has such a value."""
        column, _, field = name.partition(".")
        feature = self.by_name.get(column)
        if feature is None:
            sql_type = INPUT_COLUMNS.get(column, "")
        elif feature.dtype is not None:
            sql_type = feature.dtype
        elif feature.aggregation.function in ("count", "sum"):  # an internal aggregate
            sql_type = "DECIMAL"  # counts and exact sums: numbers
        else:  # first, max, previous: of the event column's type
            sql_type = EVENT_COLUMNS[feature.aggregation.column]
        if field:
            fields = struct_fields(sql_type) if sql_type.startswith("STRUCT") else {}
            sql_type = fields.get(field, "")
        kind = _KINDS.get(sql_type.split("(")[0])
        if kind is None:
            raise UnsupportedAggregation(
                f"{reader} reads {name}: not an input column, a feature or a field of a struct "
                f"aggregate, of a type a derived function takes ({', '.join(_KINDS)})"
            )
        return kind

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
            if f.output
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


def struct_fields(sql_type: str) -> dict[str, str]:
    """``STRUCT(a TIMESTAMP, b DOUBLE)`` -> ``{"a": "TIMESTAMP", "b": "DOUBLE"}``."""
    inner = sql_type[sql_type.index("(") + 1 : -1]
    return dict(part.strip().split(" ", 1) for part in inner.split(","))


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
    incomes = {band: float(income) for band, income in settings.income_band_monthly_income.items()}
    features: list[Feature] = [
        Feature("amount", None, "DOUBLE", "Transaction amount.", "transaction"),
        Feature("category", None, "VARCHAR", "Merchant category.", "transaction",
                requires=("category",)),
        Feature("hour", None, "TINYINT", "Hour of the day (0-23).", "transaction"),
        Feature("weekday", None, "TINYINT", "ISO weekday (Monday 1 .. Sunday 7).",
                "transaction", calendar=True),
        Feature("is_night", Derived(derived.is_night, ("hour",)), "BOOLEAN",
                "Between 22:00 and 06:00.", "transaction"),
        Feature("is_weekend", None, "BOOLEAN", "Saturday or Sunday.", "transaction",
                calendar=True),
        Feature("gender", None, "VARCHAR", "Cardholder gender (F/M).", "card",
                requires=("gender",)),
        Feature("age", None, "INTEGER", "Cardholder age in years.", "card",
                requires=("birth_date",)),
        Feature("city_pop", None, "BIGINT", "Population of the cardholder's city.", "card",
                requires=("city_pop",)),
        Feature("credit_limit", None, "DOUBLE", "Credit limit (reference data).",
                "card", requires=("credit_limit",)),
        Feature("income_band", None, "VARCHAR", "Income band (reference data).", "card",
                requires=("income_band",)),
        Feature("amount_to_credit_limit", Derived(derived.ratio, ("amount", "credit_limit")),
                "DOUBLE", "Amount as a share of the credit limit.", "transaction",
                requires=("credit_limit",)),
        Feature("home_merchant_km", None, "DOUBLE",
                "Great-circle distance from the cardholder's home to the merchant (km).",
                "transaction", requires=COORDINATES),
    ]  # fmt: skip
    for label, window in card.items():
        features += [
            Feature(f"card_txn_count_{label}", None, "BIGINT",
                    f"The card's transactions in the last {label}, this one included.",
                    window=label, aggregation=Aggregation("count", "event_count", window)),
            Feature(f"card_amount_sum_{label}", None, "DOUBLE",
                    f"The card's spend in the last {label}.", window=label,
                    aggregation=Aggregation("sum", "amount_exact", window)),
            Feature(f"card_amount_mean_{label}",
                    Derived(derived.ratio, (f"card_amount_sum_{label}",
                                            f"card_txn_count_{label}")), "DOUBLE",
                    f"The card's mean amount in the last {label}.", window=label),
            Feature(f"card_amount_max_{label}", None, "DOUBLE",
                    f"The card's largest amount in the last {label}.", window=label,
                    aggregation=Aggregation("max", "amount", window)),
        ]  # fmt: skip
    features += [
        # Internal aggregates: exact decimal sums, the first event's time, the previous event.
        Feature("card_amount_exact_sum_30d", None, None, "Exact sum of the card's amounts, "
                "last 30d.", window="30d", output=False,
                aggregation=Aggregation("sum", "amount_exact", card["30d"])),
        Feature("card_amount_squared_sum_30d", None, None, "Exact sum of the card's squared "
                "amounts, last 30d.", window="30d", output=False,
                aggregation=Aggregation("sum", "amount_squared", card["30d"])),
        Feature("card_first_event_time_90d", None, None, "The card's first transaction time "
                "within 90d.", window="90d", output=False,
                aggregation=Aggregation("first", "event_time", card_90d)),
        Feature("card_previous_event", None, None, "The card's previous transaction (time "
                "and merchant coordinates).", window="90d", output=False,
                aggregation=Aggregation("previous", "last_event", sequence)),
        Feature("card_merchant_count_90d", None, None, "The card's transactions at this "
                "merchant in the last 90 days, this one included.", window="90d", output=False,
                aggregation=Aggregation("count", "event_count",
                                        Window(("card_id", "merchant"), 90 * day)),
                requires=("merchant",)),
        # From the exact decimal sums, so that offline and online values agree to the last bit.
        Feature("card_amount_std_30d",
                Derived(derived.std_from_sums, ("card_amount_squared_sum_30d",
                                                "card_amount_exact_sum_30d", "card_txn_count_30d")),
                "DOUBLE", "Standard deviation of the card's amounts in the last 30d.",
                window="30d"),
        Feature("card_amount_ratio_30d",
                Derived(derived.ratio, ("amount", "card_amount_mean_30d")), "DOUBLE",
                "Amount relative to the card's 30-day mean amount.", window="30d"),
        Feature("card_amount_zscore_30d",
                Derived(derived.zscore, ("amount", "card_amount_mean_30d",
                                         "card_amount_std_30d")), "DOUBLE",
                "Amount's z-score against the card's last 30 days.", window="30d"),
        Feature("card_history_days",
                Derived(derived.days_between, ("event_time", "card_first_event_time_90d")),
                "DOUBLE", "Days since the card's first transaction (at most 90).", window="90d"),
        Feature("card_seconds_since_previous",
                Derived(derived.seconds_since_previous,
                        ("event_time", "card_previous_event.event_time")), "DOUBLE",
                "Seconds since the card's previous transaction (NULL when none in 90 days).",
                window="90d"),
        Feature("card_km_from_previous",
                Derived(derived.km_from_previous,
                        ("event_time", "card_previous_event.event_time",
                         "card_previous_event.merchant_lat", "card_previous_event.merchant_long",
                         "merchant_lat", "merchant_long")),
                "DOUBLE", "Distance from the card's previous merchant (km).", window="90d",
                requires=("merchant_lat", "merchant_long")),
        Feature("card_speed_kmh_since_previous",
                Derived(derived.speed_kmh,
                        ("card_km_from_previous", "card_seconds_since_previous")),
                "DOUBLE", "Implied travel speed since the previous transaction (km/h, time "
                "floored at a minute).", requires=("merchant_lat", "merchant_long")),
        Feature("card_disc_spend_14d", None, "DOUBLE",
                "The card's discretionary spend in the last 14 days.", window="14d",
                aggregation=Aggregation("sum", "disc_amount", card_14d), requires=("category",)),
        Feature("card_spend_14d", None, "DOUBLE",
                "The card's spend in the last 14 days.", window="14d",
                aggregation=Aggregation("sum", "amount_exact", card_14d)),
        Feature("card_disc_spend_90d", None, "DOUBLE",
                "The card's discretionary spend in the last 90 days.", window="90d",
                aggregation=Aggregation("sum", "disc_amount", card_90d), requires=("category",)),
        Feature("card_spend_90d", None, "DOUBLE",
                "The card's spend in the last 90 days.", window="90d",
                aggregation=Aggregation("sum", "amount_exact", card_90d)),
        Feature("card_disc_share_14d",
                Derived(derived.ratio, ("card_disc_spend_14d", "card_spend_14d")), "DOUBLE",
                "Discretionary share of the card's spend, last 14 days.",
                window="14d", requires=("category",)),
        Feature("card_disc_share_90d",
                Derived(derived.ratio, ("card_disc_spend_90d", "card_spend_90d")), "DOUBLE",
                "Discretionary share of the card's spend, last 90 days (baseline).",
                window="90d", requires=("category",)),
        Feature("card_disc_share_ratio_14d_90d",
                Derived(derived.ratio, ("card_disc_share_14d", "card_disc_share_90d")), "DOUBLE",
                "Recent discretionary share over the 90-day baseline (restraint when low).",
                window="14d/90d", requires=("category",)),
        Feature("card_disc_daily_ratio_14d_90d",
                Derived(derived.daily_ratio, ("card_disc_spend_14d", "card_disc_spend_90d",
                                              "card_history_days")),
                "DOUBLE", "Recent daily discretionary spend over the 90-day daily baseline "
                "(over the days of history the card has).", window="14d/90d",
                requires=("category",)),
        Feature("card_spend_30d_to_credit_limit",
                Derived(derived.ratio, ("card_amount_sum_30d", "credit_limit")), "DOUBLE",
                "The card's 30-day spend as a share of its credit limit.", window="30d",
                requires=("credit_limit",)),
        Feature("card_spend_30d_to_income",
                Derived(derived.spend_to_income(incomes), ("card_amount_sum_30d", "income_band")),
                "DOUBLE",
                "The card's 30-day spend over the nominal monthly income of its band "
                "(MLPLATFORM_INCOME_BAND_MONTHLY_INCOME).", window="30d",
                requires=("income_band",)),
        Feature("card_category_count_30d", None, "BIGINT",
                "The card's transactions in this category in the last 30 days.", window="30d",
                aggregation=Aggregation("count", "event_count",
                                        Window(("card_id", "category"), 30 * day)),
                requires=("category",)),
        Feature("card_category_share_30d",
                Derived(derived.ratio, ("card_category_count_30d", "card_txn_count_30d")),
                "DOUBLE",
                "Share of the card's last-30-day transactions in this category.", window="30d",
                requires=("category",)),
        Feature("card_merchant_visits_90d",
                Derived(derived.minus_one, ("card_merchant_count_90d",)), "BIGINT",
                "The card's earlier transactions at this merchant in the last 90 days.",
                window="90d", requires=("merchant",)),
        Feature("card_merchant_is_new",
                Derived(derived.is_zero, ("card_merchant_visits_90d",)), "BOOLEAN",
                "First transaction of the card at this merchant in 90 days.", window="90d",
                requires=("merchant",)),
    ]  # fmt: skip
    for label, span in {"1d": day, "7d": 7 * day, "30d": 30 * day}.items():
        matured = Window(("merchant",), span, end=delay, daily=True)
        days = f"the {label} ending {settings.label_delay_days} days before this one's day"
        features += [
            Feature(f"merchant_labelled_count_{label}", None, "BIGINT",
                    f"Labelled transactions at the merchant on {days} (matured labels only).",
                    "merchant", label, Aggregation("count", "label", matured),
                    ("merchant", "label")),
            Feature(f"merchant_positive_count_{label}", None, "BIGINT",
                    f"Labelled positives at the merchant on {days}.",
                    "merchant", label, Aggregation("sum", "label", matured),
                    ("merchant", "label")),
            Feature(f"merchant_positive_rate_{label}",
                    Derived(derived.ratio, (f"merchant_positive_count_{label}",
                                            f"merchant_labelled_count_{label}")),
                    "DOUBLE", f"Share of labelled positives at the merchant on {days}.",
                    "merchant", label, requires=("merchant", "label")),
        ]  # fmt: skip
    return tuple(features)

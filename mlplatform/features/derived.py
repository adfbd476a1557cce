"""The derived features' functions: numpy over arrays, the same code offline and online.

A derived feature (:class:`~mlplatform.features.declarations.Derived`) is one of these
functions of its inputs (input columns, aggregates, other derived features). Offline it runs
over the feature build's columns, a batch of rows at a time; online over a request's rows
(usually one). Both engines give it the same input values, so they agree to the bit.

The convention at the edges (:func:`derive`): every input arrives as a float64 array with
NaN for NULL (timestamps as microseconds since 1970-01-01, decimals and integers as the
nearest double, booleans as 0/1) or, for text, an object array with None for NULL. A NULL
input gives a NULL feature; a function returns NaN where its value is undefined (a zero
denominator), which is NULL too. ±inf are values. The result is then typed to the feature's
dtype (integers rounded half to even, booleans: non-zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlplatform.features.declarations import Feature

MICROS_PER_SECOND = 1_000_000.0
MICROS_PER_DAY = 86_400 * MICROS_PER_SECOND
EARTH_RADIUS_KM = 6371.0088
#: The previous transaction counts only within 90 days (the least lookback of any build).
PREVIOUS_WITHIN_US = 90 * MICROS_PER_DAY

Array = np.ndarray


def ratio(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``; NaN (NULL) where the denominator is 0."""
    return np.where(denominator == 0, np.nan, numerator / denominator)


def is_night(hour: Array) -> Array:
    """Between 22:00 and 06:00 (``hour`` 0-23)."""
    return (hour < 6) | (hour >= 22)


def std_from_sums(squares: Array, total: Array, count: Array) -> Array:
    """Population standard deviation from the sum of squares, the sum and the count (a
    negative variance from rounding is 0)."""
    mean = ratio(total, count)
    return np.sqrt(np.maximum(ratio(squares, count) - mean * mean, 0.0))


def zscore(value: Array, mean: Array, std: Array) -> Array:
    """``(value - mean) / std``; NaN where ``std`` is 0."""
    return ratio(value - mean, std)


def days_between(later_us: Array, earlier_us: Array) -> Array:
    """Days from ``earlier_us`` to ``later_us`` (microseconds; the difference is exact)."""
    return (later_us - earlier_us) / MICROS_PER_DAY


def seconds_since_previous(event_us: Array, previous_us: Array) -> Array:
    """Seconds since the previous event, NaN when it is more than 90 days before."""
    recent = previous_us >= event_us - PREVIOUS_WITHIN_US
    return np.where(recent, (event_us - previous_us) / MICROS_PER_SECOND, np.nan)


def haversine_km(lat1: Array, long1: Array, lat2: Array, long2: Array) -> Array:
    """Great-circle distance between two points in degrees (km, mean Earth radius)."""
    half_lat = np.sin(np.radians(lat2 - lat1) / 2)
    half_long = np.sin(np.radians(long2 - long1) / 2)
    a = half_lat * half_lat + np.cos(np.radians(lat1)) * np.cos(np.radians(lat2)) * (
        half_long * half_long
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def km_from_previous(
    event_us: Array, previous_us: Array, previous_lat: Array, previous_long: Array,
    lat: Array, long: Array,
) -> Array:  # fmt: skip
    """Distance from the previous event's merchant (km), NaN when it is more than 90 days
    before."""
    recent = previous_us >= event_us - PREVIOUS_WITHIN_US
    return np.where(recent, haversine_km(previous_lat, previous_long, lat, long), np.nan)


def speed_kmh(km: Array, seconds: Array) -> Array:
    """Travel speed (km/h), the time floored at a minute."""
    return km / np.maximum(seconds, 60.0) * 3600.0


def daily_ratio(recent: Array, baseline: Array, history_days: Array) -> Array:
    """Recent (14 days) daily spend over the baseline's (90 days), each window counted over
    the days of history the card has (at least one)."""
    days = np.maximum(history_days, 1.0)
    return ratio(recent / np.minimum(days, 14.0), baseline / np.minimum(days, 90.0))


def spend_to_income(incomes: Mapping[str, float]) -> Callable[[Array, Array], Array]:
    """The spend over the nominal monthly income of its band (NaN for an unknown band)."""

    def spend_over_income(spend: Array, band: Array) -> Array:
        income = np.fromiter((incomes.get(b, np.nan) for b in band), float, len(band))
        return spend / income

    return spend_over_income


def minus_one(count: Array) -> Array:
    return count - 1


def is_zero(value: Array) -> Array:
    return value == 0


# -- the edges ---------------------------------------------------------------------------

#: The dtypes a derived feature can have (its function's float result, typed).
DERIVED_DTYPES = ("DOUBLE", "BIGINT", "INTEGER", "BOOLEAN")


def missing(values: Array) -> Array:
    """Where ``values`` (float: NaN; text: None) are NULL."""
    if values.dtype == object:
        return np.equal(values, None)
    return np.isnan(values)


def derive(
    function: Callable[..., Array], inputs: Sequence[Array], dtype: str
) -> tuple[Array, Array]:
    """``function`` over ``inputs`` with the convention above: ``(values, nulls)``, values
    of the dtype's numpy type (float64, int64 or bool; anything where ``nulls``)."""
    with np.errstate(all="ignore"):  # NaN and inf are values here, not warnings
        return _derive(function, inputs, [missing(values) for values in inputs], dtype)


def _derive(
    function: Callable[..., Array], inputs: Sequence[Array], input_nulls: Sequence[Array],
    dtype: str,
) -> tuple[Array, Array]:  # fmt: skip
    result = np.asarray(function(*inputs), dtype=float)
    nulls = np.isnan(result)
    for missing_input in input_nulls:
        nulls |= missing_input
    if dtype == "DOUBLE":
        return result, nulls
    cleaned = np.where(nulls, 0.0, result)
    if dtype == "BOOLEAN":
        return cleaned != 0, nulls
    if not np.isfinite(cleaned).all():
        raise _infinite(function, dtype)
    return np.rint(cleaned).astype(np.int64), nulls


def derive_all(
    features: Sequence[Feature], columns: Mapping[str, Array]
) -> dict[str, tuple[Array, Array]]:
    """``(values, nulls)`` of each derived feature of ``features`` (in order: a feature can
    read the ones before it) from ``columns``, the arrays of their other inputs by input
    name (:attr:`~mlplatform.features.declarations.Derived.inputs`)."""
    known = dict(columns)
    known_nulls = {name: missing(values) for name, values in columns.items()}
    read = {name for f in features if f.derive for name in f.derive.inputs}
    result = {}
    with np.errstate(all="ignore"):  # NaN and inf are values here, not warnings
        for feature in features:
            if feature.derive is None:
                continue
            inputs = feature.derive.inputs
            values, nulls = _derive(feature.derive.function, [known[n] for n in inputs],
                                    [known_nulls[n] for n in inputs], feature.dtype)  # fmt: skip
            result[feature.name] = values, nulls
            if feature.name in read:  # as an input: a float, NaN for NULL
                plain = feature.dtype == "DOUBLE" and not nulls.any()
                known[feature.name] = values if plain else np.where(nulls, np.nan, values * 1.0)
                known_nulls[feature.name] = nulls
    return result


def derive_row(features: Sequence[Feature], row: Mapping[str, float | str | None]) -> dict:
    """The derived features of ``features`` for one row, as :func:`derive_all` gives them
    for a row among many, as Python values (None: NULL). ``row``: the other inputs by name,
    as :func:`derive_all`'s columns hold them (a float, NaN for NULL; text or None).

    The same functions run on numpy float64 scalars (text: one-element arrays), which take
    numpy's scalar paths (~3x cheaper than one-element arrays, the same IEEE results); only
    the edges (which inputs are NULL, the result typed) are plain Python here: a numpy
    operation per input and feature would cost more than the functions (a request's
    features are one row)."""
    known = {name: np.array([value], dtype=object) if value is None or isinstance(value, str)
             else np.float64(value) for name, value in row.items()}  # fmt: skip
    known_null = {name: value is None or value != value for name, value in row.items()}
    result: dict[str, Any] = {}
    with np.errstate(all="ignore"):  # NaN and inf are values here, not warnings
        for feature in features:
            if feature.derive is None:
                continue
            inputs = feature.derive.inputs
            computed = feature.derive.function(*[known[n] for n in inputs])
            value = float(np.asarray(computed, dtype=float).item())
            null = value != value or any(known_null[n] for n in inputs)
            typed = result[feature.name] = None if null else _typed_value(feature, value)
            known[feature.name] = np.float64(math.nan if typed is None else typed)
            known_null[feature.name] = null
    return result


def _typed_value(feature: Feature, value: float) -> float | int | bool:
    """A non-NULL result typed to the feature's dtype (as :func:`_derive` types an array)."""
    if feature.dtype == "DOUBLE":
        return value
    if feature.dtype == "BOOLEAN":
        return value != 0
    if not math.isfinite(value):
        raise _infinite(feature.derive.function, feature.dtype)
    return round(value)  # half to even, as numpy's rint


def _infinite(function: Callable[..., Array], dtype: str) -> ValueError:
    return ValueError(f"{function.__name__}: an infinite value for a {dtype} feature")

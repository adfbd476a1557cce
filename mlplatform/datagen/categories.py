"""Merchant categories and the spending habits attached to them.

Amounts are in USD, shares are fractions of a card's transactions, hour profiles are relative
weights per hour of the day (0-23, local time of the transaction).
"""

from __future__ import annotations

import numpy as np

from mlplatform.settings import DISCRETIONARY_CATEGORIES

#: The merchant categories of the public Kaggle card-transaction data set, in a fixed order.
CATEGORIES: tuple[str, ...] = (
    "entertainment",
    "food_dining",
    "gas_transport",
    "grocery_net",
    "grocery_pos",
    "health_fitness",
    "home",
    "kids_pets",
    "misc_net",
    "misc_pos",
    "personal_care",
    "shopping_net",
    "shopping_pos",
    "travel",
)

#: Card-not-present categories; their share doubles under drift.
ONLINE_CATEGORIES: tuple[str, ...] = ("grocery_net", "misc_net", "shopping_net")

N_CATEGORIES = len(CATEGORIES)
DISCRETIONARY_IDX = np.array([CATEGORIES.index(c) for c in DISCRETIONARY_CATEGORIES])
ONLINE_IDX = np.array([CATEGORIES.index(c) for c in ONLINE_CATEGORIES])
IS_DISCRETIONARY = np.isin(np.arange(N_CATEGORIES), DISCRETIONARY_IDX)
IS_ONLINE = np.isin(np.arange(N_CATEGORIES), ONLINE_IDX)

# Mean share of a card's transactions per category (close to the Kaggle data set).
CATEGORY_SHARE = np.array(
    [
        0.072,
        0.070,
        0.100,
        0.035,
        0.095,
        0.066,
        0.095,
        0.087,
        0.049,
        0.061,
        0.070,
        0.075,
        0.090,
        0.031,
    ]
)
CATEGORY_SHARE = CATEGORY_SHARE / CATEGORY_SHARE.sum()

# Median amount (USD) of a middle-income card per category, and the log-space spread of single
# transactions around a card's own median.
AMOUNT_MEDIAN_USD = np.array(
    [45.0, 35.0, 55.0, 50.0, 85.0, 45.0, 55.0, 45.0, 45.0, 40.0, 30.0, 60.0, 55.0, 110.0]
)
AMOUNT_LOG_SIGMA = np.array([0.8, 0.6, 0.5, 0.6, 0.6, 0.7, 0.9, 0.8, 0.9, 0.9, 0.7, 0.9, 0.9, 1.1])
#: Expected amount / median amount of a lognormal transaction amount, per category.
AMOUNT_MEAN_FACTOR = np.exp(AMOUNT_LOG_SIGMA**2 / 2)

# Weekly seasonality: activity multiplier per weekday (Monday first), and the extra weight of
# discretionary categories on Saturday and Sunday.
WEEKDAY_ACTIVITY = np.array([0.94, 0.95, 0.97, 1.00, 1.08, 1.10, 0.96])
WEEKEND_DISCRETIONARY_BOOST = 1.5

# Daily seasonality: relative weight per hour of the day for four profiles.
_STORE = [0.3, 0.2, 0.1, 0.1, 0.1, 0.3, 0.7, 1.3, 2.0, 2.6, 3.0, 3.4]
_STORE += [4.2, 3.9, 3.2, 3.1, 3.6, 4.6, 5.0, 4.4, 3.4, 2.3, 1.3, 0.7]
_ONLINE = [1.0, 0.7, 0.5, 0.4, 0.4, 0.5, 0.8, 1.2, 1.6, 2.0, 2.2, 2.4]
_ONLINE += [2.7, 2.6, 2.4, 2.4, 2.6, 3.0, 3.4, 3.8, 3.9, 3.5, 2.6, 1.7]
_DINING = [0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.8, 1.6, 1.5, 1.0, 1.2, 3.5]
_DINING += [6.0, 4.5, 1.5, 1.2, 1.6, 3.5, 6.0, 5.5, 3.5, 2.0, 1.0, 0.6]
_NIGHT = [6.0, 6.0, 5.5, 5.0, 3.0, 1.5, 0.8, 0.6, 0.6, 0.6, 0.6, 0.6]
_NIGHT += [0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.8, 1.0, 1.5, 2.5, 4.5, 5.5]
HOUR_PROFILES = np.array([_STORE, _ONLINE, _DINING, _NIGHT])
PROFILE_STORE, PROFILE_ONLINE, PROFILE_DINING, PROFILE_NIGHT = range(4)
#: Hour profile per category.
CATEGORY_PROFILE = np.where(IS_ONLINE, PROFILE_ONLINE, PROFILE_STORE)
CATEGORY_PROFILE[CATEGORIES.index("food_dining")] = PROFILE_DINING

# Revenge bursts: which discretionary categories a burst goes to.
BURST_CATEGORY_WEIGHT = np.zeros(N_CATEGORIES)
for _name, _w in {
    "entertainment": 0.18,
    "food_dining": 0.14,
    "misc_net": 0.05,
    "misc_pos": 0.08,
    "shopping_net": 0.22,
    "shopping_pos": 0.23,
    "travel": 0.10,
}.items():
    BURST_CATEGORY_WEIGHT[CATEGORIES.index(_name)] = _w

# Fraud on a compromised card: category mix and median amount (USD). gas_transport carries the
# small "card testing" transactions.
FRAUD_CATEGORY_WEIGHT = np.zeros(N_CATEGORIES)
FRAUD_AMOUNT_MEDIAN_USD = np.full(N_CATEGORIES, 300.0)
for _name, (_w, _amt) in {
    "shopping_net": (0.26, 950.0),
    "grocery_pos": (0.20, 310.0),
    "misc_net": (0.15, 780.0),
    "shopping_pos": (0.17, 860.0),
    "gas_transport": (0.10, 12.0),
    "misc_pos": (0.06, 240.0),
    "travel": (0.06, 650.0),
}.items():
    FRAUD_CATEGORY_WEIGHT[CATEGORIES.index(_name)] = _w
    FRAUD_AMOUNT_MEDIAN_USD[CATEGORIES.index(_name)] = _amt


def sample_hours(rng: np.random.Generator, profile: np.ndarray) -> np.ndarray:
    """Draw one hour of the day (0-23) per element of ``profile`` (indices into HOUR_PROFILES)."""
    u = rng.random(len(profile)) + profile
    pos = np.searchsorted(_PROFILE_CDF_FLAT, u, side="right")
    return np.minimum(pos - profile * 24, 23)


def _profile_cdf_flat() -> np.ndarray:
    # Profile k's CDF shifted by k, so one searchsorted serves rows with different profiles.
    cdf = np.cumsum(HOUR_PROFILES / HOUR_PROFILES.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return (cdf + np.arange(len(HOUR_PROFILES))[:, None]).ravel()


_PROFILE_CDF_FLAT = _profile_cdf_flat()

"""Cardholders (cards) and merchants of the simulation, and how cards choose merchants.

Everything here is drawn once per simulation, from ``numpy`` generators seeded by the
simulation seed. Money is in USD, coordinates in degrees, days are day indices since the
simulation's first day unless a name says otherwise.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform.datagen import names
from mlplatform.datagen.categories import (
    AMOUNT_MEAN_FACTOR,
    AMOUNT_MEDIAN_USD,
    CATEGORIES,
    CATEGORY_SHARE,
    N_CATEGORIES,
)
from mlplatform.datagen.csv_text import csv_field, decimal_text, join_fields, mix64
from mlplatform.datagen.places import (
    CITIES,
    CITY_DISTANCE_KM,
    CITY_LAT,
    CITY_LONG,
    CITY_WEIGHT,
)

INCOME_BANDS: tuple[str, ...] = ("low", "middle", "high", "very_high")
_INCOME_SHARE = np.array([0.30, 0.40, 0.22, 0.08])
_CREDIT_LIMIT_MEDIAN_USD = np.array([2_500.0, 7_000.0, 15_000.0, 30_000.0])
_CREDIT_LIMIT_X_MONTHLY_SPEND = 1.5
_SPEND_MULTIPLIER = np.array([0.70, 1.00, 1.35, 1.80])

#: Mean number of transactions per card and day (lognormal over cards).
MEAN_DAILY_TRANSACTIONS = 3.0
_RATE_LOG_SIGMA = 0.5
#: Concentration of a card's category preferences around CATEGORY_SHARE (higher: more alike).
_PREFERENCE_CONCENTRATION = 25.0
#: Favourite merchants per card and category, and how often each favourite is picked.
FAVOURITES = 4
FAVOURITE_CDF = np.cumsum([0.45, 0.30, 0.15, 0.10])
#: Cards prefer merchants based in their region (within REGION_KM of home) this many times.
REGIONAL_PREFERENCE = 5.0
REGION_KM = 500.0
#: Fraud on a compromised card happens in cities at least this far from home; homes and
#: branches lie within _MAX_JITTER_DEG per axis (< 50 km) of their city centre, so every such
#: purchase is more than 500 km from home.
FAR_FROM_HOME_KM = 600.0

_HOME_JITTER_DEG = 0.05
_SHOP_JITTER_DEG = 0.08
_MAX_JITTER_DEG = 0.3


@dataclass(frozen=True)
class Cards:
    """One row per card (and cardholder). Arrays have length ``n``; text is CSV-ready."""

    cc_num: np.ndarray  # int64, 16-digit Luhn-valid card numbers
    city: np.ndarray  # int64 index into CITIES
    lat: np.ndarray  # float64 degrees, home
    long: np.ndarray
    credit_limit: np.ndarray  # int64 USD
    income_band: np.ndarray  # int64 index into INCOME_BANDS
    open_date: np.ndarray  # datetime64[D]
    rate: np.ndarray  # float64 expected transactions per day on an average day
    category_rate: np.ndarray  # float64 (n, N_CATEGORIES) expected purchases per average day
    amount_median: np.ndarray  # float32 (n, N_CATEGORIES) USD, median amount of one purchase
    favourites: np.ndarray  # int32 (n, N_CATEGORIES, FAVOURITES) merchant indices
    cc_text: pa.StringArray  # cc_num as text
    # "first,last,gender,street,city,state,zip,lat,long,city_pop,job,dob"
    holder_text: pa.StringArray

    @property
    def n(self) -> int:
        return len(self.cc_num)


@dataclass(frozen=True)
class Merchants:
    """One row per merchant. New merchants (drift) come after the base ones.

    A merchant is a chain with a branch near every city centre; a purchase happens at the
    branch of the city it is made in (the cardholder's home city unless the card travels or is
    abused elsewhere). Cards prefer popular merchants and merchants based in their region.
    """

    name: tuple[str, ...]
    category: np.ndarray  # int64 index into CATEGORIES
    home_city: np.ndarray  # int64 index into CITIES: where the merchant is based
    popularity: np.ndarray  # float64 relative weight when cards choose merchants
    n_base: int  # merchants [0, n_base) exist from day 0, the rest from the drift day on
    text: pa.StringArray  # "merchant,category"
    branch_key: np.uint64  # keys the fixed position of every branch (see branch_location)

    @property
    def n(self) -> int:
        return len(self.name)

    def branch_location(
        self, merchant: np.ndarray, city: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latitude and longitude (degrees) of the branches of ``merchant`` in ``city``.

        A fixed offset around the city centre (normal, sd _SHOP_JITTER_DEG, clipped), derived
        from a hash of (merchant, city), so no per-branch table is stored.
        """
        code = np.asarray(merchant, dtype=np.uint64) * np.uint64(len(CITIES)) + np.asarray(
            city, dtype=np.uint64
        )
        bits = mix64(code ^ self.branch_key)
        u1 = ((bits >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32
        u2 = ((bits & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2.0**32
        radius = np.sqrt(-2.0 * np.log(u1)) * _SHOP_JITTER_DEG  # Box-Muller
        jitter_lat = np.clip(radius * np.cos(2 * np.pi * u2), -_MAX_JITTER_DEG, _MAX_JITTER_DEG)
        jitter_long = np.clip(radius * np.sin(2 * np.pi * u2), -_MAX_JITTER_DEG, _MAX_JITTER_DEG)
        return CITY_LAT[city] + jitter_lat, CITY_LONG[city] + jitter_long


@dataclass(frozen=True)
class ChoiceIndex:
    """Weighted lists keyed by an integer key (compressed rows with per-key CDFs)."""

    offsets: np.ndarray  # int64, length n_keys + 1
    members: np.ndarray  # int32
    cdf: np.ndarray  # float64: key + cumulative share within the key's list (last = key + 1)

    def pick(self, keys: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One member per key, drawn with the list's weights; ``u`` uniform in [0, 1)."""
        needle = keys + u
        # Sorted needles make the binary searches cache-friendly: much faster on big indices.
        order = np.argsort(needle)
        pos = np.empty(len(needle), dtype=np.int64)
        pos[order] = np.searchsorted(self.cdf, needle[order], side="right")
        pos = np.clip(pos, self.offsets[keys], self.offsets[keys + 1] - 1)
        return self.members[pos]


def choice_index(lists: list[tuple[np.ndarray, np.ndarray]]) -> ChoiceIndex:
    """A ChoiceIndex of ``(members, weights)`` per key; every list must be non-empty."""
    sizes = np.array([len(m) for m, _ in lists], dtype=np.int64)
    if (sizes == 0).any():
        raise ValueError("every key needs at least one member")
    cdfs = []
    for key, (_, weight) in enumerate(lists):
        cum = np.cumsum(weight, dtype=np.float64)
        cum = cum / cum[-1]
        cum[-1] = 1.0
        cdfs.append(key + cum)
    return ChoiceIndex(
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        members=np.concatenate([m for m, _ in lists]).astype(np.int32),
        cdf=np.concatenate(cdfs),
    )


def card_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct 16-digit Luhn-valid card numbers (Visa/Mastercard-like prefixes)."""
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        k = n - len(out)
        payload = rng.integers(0, 10, size=(k, 15))
        payload[:, 0] = rng.choice([4, 5], size=k)
        doubled = payload.copy()
        doubled[:, 0::2] *= 2  # every second digit from the right of the final number
        doubled[doubled > 9] -= 9
        check = (10 - doubled.sum(axis=1) % 10) % 10
        digits = np.concatenate([payload, check[:, None]], axis=1)
        numbers = digits @ (10 ** np.arange(15, -1, -1, dtype=np.int64))
        out = np.concatenate([out, numbers])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]
    return out


def _quoted(values: tuple[str, ...] | list[str]) -> pa.StringArray:
    return pa.array([csv_field(v) for v in values], type=pa.string())


def build_cards(rng: np.random.Generator, n: int, start_date: date) -> Cards:
    """Draw ``n`` cardholders (without favourites: see :func:`with_favourites`)."""
    female = rng.random(n) < 0.5
    n_female = len(names.FEMALE_FIRST_NAMES)
    first = np.where(
        female,
        rng.integers(0, n_female, n),
        n_female + rng.integers(0, len(names.MALE_FIRST_NAMES), n),
    )
    last = rng.integers(0, len(names.LAST_NAMES), n)
    house = rng.integers(1, 9999, n)
    street = rng.integers(0, len(names.STREET_NAMES), n)
    suffix = rng.integers(0, len(names.STREET_SUFFIXES), n)
    city = rng.choice(len(CITIES), size=n, p=CITY_WEIGHT)
    jitter = np.clip(rng.normal(0.0, _HOME_JITTER_DEG, (2, n)), -_MAX_JITTER_DEG, _MAX_JITTER_DEG)
    lat, long = CITY_LAT[city] + jitter[0], CITY_LONG[city] + jitter[1]
    age_days = (np.clip(rng.normal(46.0, 16.0, n), 18.0, 92.0) * 365.25).astype(np.int64)
    start = np.datetime64(start_date, "D")
    dob = start - age_days.astype("timedelta64[D]")
    job = rng.integers(0, len(names.JOBS), n)
    band = rng.choice(len(INCOME_BANDS), size=n, p=_INCOME_SHARE)
    limit = _CREDIT_LIMIT_MEDIAN_USD[band] * rng.lognormal(0.0, 0.35, n)
    open_date = start - rng.integers(90, 15 * 365, n).astype("timedelta64[D]")
    rate = MEAN_DAILY_TRANSACTIONS * rng.lognormal(-(_RATE_LOG_SIGMA**2) / 2, _RATE_LOG_SIGMA, n)
    share = rng.dirichlet(_PREFERENCE_CONCENTRATION * CATEGORY_SHARE, size=n)
    amount_median = (
        AMOUNT_MEDIAN_USD[None, :]
        * _SPEND_MULTIPLIER[band][:, None]
        * rng.lognormal(0.0, 0.35, (n, N_CATEGORIES))
    ).astype(np.float32)
    # Nobody gets a limit below what they normally spend in a month and a half.
    monthly_spend = 30.0 * (rate[:, None] * share * amount_median * AMOUNT_MEAN_FACTOR).sum(axis=1)
    limit = np.maximum(limit, _CREDIT_LIMIT_X_MONTHLY_SPEND * monthly_spend)
    credit_limit = (np.ceil(limit / 100.0) * 100.0).astype(np.int64)
    cc_num = card_numbers(rng, n)

    first_names = _quoted(names.FEMALE_FIRST_NAMES + names.MALE_FIRST_NAMES)
    street_text = pc.binary_join_element_wise(
        pc.cast(pa.array(house), pa.string()),
        pa.array(names.STREET_NAMES).take(pa.array(street)),
        pa.array(names.STREET_SUFFIXES).take(pa.array(suffix)),
        " ",
    )
    holder_text = join_fields(
        [
            first_names.take(pa.array(first)),
            _quoted(names.LAST_NAMES).take(pa.array(last)),
            pa.array(np.where(female, "F", "M")),
            street_text,  # house number, street name and suffix: never needs quotes
            _quoted([c.name for c in CITIES]).take(pa.array(city)),
            _quoted([c.state for c in CITIES]).take(pa.array(city)),
            _quoted([c.zip for c in CITIES]).take(pa.array(city)),
            decimal_text(np.round(lat * 1e6).astype(np.int64), 6),
            decimal_text(np.round(long * 1e6).astype(np.int64), 6),
            pc.cast(pa.array([c.population for c in CITIES]).take(pa.array(city)), pa.string()),
            _quoted(names.JOBS).take(pa.array(job)),
            pc.cast(pa.array(dob), pa.string()),
        ]
    )
    return Cards(
        cc_num=cc_num,
        city=city,
        lat=lat,
        long=long,
        credit_limit=credit_limit,
        income_band=band,
        open_date=open_date,
        rate=rate,
        category_rate=rate[:, None] * share,
        amount_median=amount_median,
        favourites=np.empty((n, N_CATEGORIES, 0), dtype=np.int32),
        cc_text=pc.cast(pa.array(cc_num), pa.string()),
        holder_text=holder_text,
    )


def with_favourites(rng: np.random.Generator, cards: Cards, choice: ChoiceIndex) -> Cards:
    """``cards`` with FAVOURITES favourite merchants per category (see merchant_choice).

    The categories' draws come from ``rng`` in category order; their picks (sorts and binary
    searches, which release the GIL) run on a thread per core.
    """
    favourites = np.empty((cards.n, N_CATEGORIES, FAVOURITES), dtype=np.int32)
    draws = rng.random((N_CATEGORIES, cards.n * FAVOURITES))  # = one rng.random() per category

    def pick(k: int) -> None:
        keys = np.repeat(cards.city * N_CATEGORIES + k, FAVOURITES)
        favourites[:, k, :] = choice.pick(keys, draws[k]).reshape(cards.n, -1)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(pick, range(N_CATEGORIES)))
    return Cards(**{**cards.__dict__, "favourites": favourites})


def _merchant_names(rng: np.random.Generator, n: int, taken: set[int]) -> list[str]:
    """``n`` distinct merchant names; ``taken`` holds codes of names in use and is updated."""
    last, patterns = names.LAST_NAMES, names.MERCHANT_NAME_PATTERNS
    flat = [p for group in patterns for p in group]
    first_of_size = np.cumsum([0] + [len(group) for group in patterns])
    n_last = len(last)
    out: list[str] = []
    while len(out) < n:
        batch = 2 * (n - len(out)) + 16
        size = rng.choice(len(patterns), size=batch, p=names.MERCHANT_NAME_SIZE_SHARE)
        group_len = first_of_size[size + 1] - first_of_size[size]
        pattern = first_of_size[size] + (rng.random(batch) * group_len).astype(np.int64)
        a, b, c = rng.integers(0, n_last, (3, batch))
        b = np.where(size >= 1, b, 0)
        c = np.where(size >= 2, c, 0)
        ok = (size == 0) | (a != b)
        code = ((pattern * n_last + a) * n_last + b) * n_last + c
        for i in np.flatnonzero(ok):
            if len(out) == n:
                break
            if int(code[i]) in taken:
                continue
            taken.add(int(code[i]))
            out.append(flat[pattern[i]].format(a=last[a[i]], b=last[b[i]], c=last[c[i]]))
    return out


def _merchant_categories(rng: np.random.Generator, n: int) -> np.ndarray:
    # Every category gets a few merchants, the rest follow the transaction shares.
    guaranteed = min(n, 3 * N_CATEGORIES)
    cyclic = np.arange(guaranteed) % N_CATEGORIES
    rest = rng.choice(N_CATEGORIES, size=n - guaranteed, p=CATEGORY_SHARE)
    return np.concatenate([cyclic, rest]).astype(np.int64)


def build_merchants(
    rng: np.random.Generator, n_base: int, new_rng: np.random.Generator, n_new: int
) -> Merchants:
    """``n_base`` merchants that exist from the start and ``n_new`` that open at the drift.

    New merchants are drawn from ``new_rng`` so that adding them changes nothing about the
    base population.
    """
    taken: set[int] = set()
    name: list[str] = []
    category, home, popularity = [], [], []
    branch_key = rng.integers(0, np.iinfo(np.uint64).max, dtype=np.uint64, endpoint=True)
    for r, k in ((rng, n_base), (new_rng, n_new)):
        if k == 0:
            continue
        name += _merchant_names(r, k, taken)
        category.append(_merchant_categories(r, k))
        home.append(r.choice(len(CITIES), size=k, p=CITY_WEIGHT))
        popularity.append(r.lognormal(0.0, 1.0, k))
    category_a = np.concatenate(category)
    text = join_fields([_quoted(name), _quoted(CATEGORIES).take(pa.array(category_a))])
    return Merchants(
        name=tuple(name),
        category=category_a,
        home_city=np.concatenate(home),
        popularity=np.concatenate(popularity),
        n_base=n_base,
        text=text,
        branch_key=branch_key,
    )


def merchant_choice(merchants: Merchants, which: np.ndarray) -> ChoiceIndex:
    """For every ``city * N_CATEGORIES + category``: merchants among ``which`` of that category.

    Weighted by popularity, and REGIONAL_PREFERENCE times more for merchants based within
    REGION_KM of the city.
    """
    lists = []
    for city in range(len(CITIES)):
        regional = CITY_DISTANCE_KM[city, merchants.home_city[which]] <= REGION_KM
        weight = merchants.popularity[which] * np.where(regional, REGIONAL_PREFERENCE, 1.0)
        for k in range(N_CATEGORIES):
            in_category = merchants.category[which] == k
            lists.append((which[in_category], weight[in_category]))
    return choice_index(lists)


def far_city_choice() -> ChoiceIndex:
    """For every city: the cities more than FAR_FROM_HOME_KM away, equally likely."""
    lists = []
    for city in range(len(CITIES)):
        far = np.flatnonzero(CITY_DISTANCE_KM[city] > FAR_FROM_HOME_KM)
        lists.append((far, np.ones(len(far))))
    return choice_index(lists)

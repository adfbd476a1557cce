"""Deterministic simulator of daily card-transaction landing files.

``simulate(config, out_dir)`` writes one ``transactions_YYYY-MM-DD.csv`` per day plus
``cards.csv`` (reference data). The data carries daily and weekly seasonality, per-card habits
and favourite merchants, revenge-spending episodes, fraud (``is_fraud=1``), optional drift and
optional malformed rows. Money is USD, coordinates are degrees, times are naive local times.

Everything is drawn from ``numpy`` generators keyed by ``(config.seed, stream, index)``: the
population and the episode plan once, then one generator per day, so the same configuration
writes byte-identical files, and days before ``drift_start`` do not depend on the drift.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlplatform.datagen.categories import (
    AMOUNT_LOG_SIGMA,
    AMOUNT_MEAN_FACTOR,
    BURST_CATEGORY_WEIGHT,
    CATEGORIES,
    CATEGORY_PROFILE,
    DISCRETIONARY_IDX,
    FRAUD_AMOUNT_MEDIAN_USD,
    FRAUD_CATEGORY_WEIGHT,
    IS_DISCRETIONARY,
    IS_ONLINE,
    N_CATEGORIES,
    PROFILE_NIGHT,
    PROFILE_ONLINE,
    WEEKDAY_ACTIVITY,
    WEEKEND_DISCRETIONARY_BOOST,
    sample_hours,
)
from mlplatform.datagen.csv_text import (
    decimal_text,
    join_fields,
    line_bytes,
    timestamp_text,
    transaction_ids,
)
from mlplatform.datagen.episodes import (
    COMPROMISED_MERCHANT_WINDOW_DAYS,
    FRAUD_WINDOW_DAYS,
    RevengeEpisode,
    RevengePlan,
    Windows,
    plan_revenge,
    plan_windows,
)
from mlplatform.datagen.malformed import MALFORMED_KINDS, malformed_line, parse_line
from mlplatform.datagen.population import (
    FAVOURITE_CDF,
    FAVOURITES,
    INCOME_BANDS,
    Cards,
    ChoiceIndex,
    Merchants,
    build_cards,
    build_merchants,
    far_city_choice,
    merchant_choice,
    with_favourites,
)

#: Columns of a daily transaction file, in order.
TRANSACTION_COLUMNS: tuple[str, ...] = (
    "trans_date_trans_time", "cc_num", "merchant", "category", "amt", "first", "last",
    "gender", "street", "city", "state", "zip", "lat", "long", "city_pop", "job", "dob",
    "trans_num", "merch_lat", "merch_long", "is_fraud",
)  # fmt: skip
#: Columns of the reference file ``cards.csv``.
CARD_COLUMNS: tuple[str, ...] = ("cc_num", "credit_limit", "income_band", "open_date")
REFERENCE_FILE_NAME = "cards.csv"

# Merchant choice: share of purchases at a merchant that is not a favourite, before and after
# the drift; after the drift half of those go to merchants that opened at the drift.
_EXPLORE = 0.12
_EXPLORE_DRIFTED = 0.25
_NEW_MERCHANT_SHARE_OF_EXPLORE = 0.5
_BURST_EXPLORE = 0.4
# During restraint a discretionary purchase is at most this multiple of the card's median.
_RESTRAINT_MAX_AMOUNT_X_MEDIAN = 1.5
# Share of travel purchases made in a far city (legitimately far from home).
_TRAVEL_AWAY_SHARE = 0.15
_TRAVEL = CATEGORIES.index("travel")
_BURST_TRANSACTIONS_PER_DAY = (3, 8)
# Compromised cards: transactions per day (inclusive range), share at night, amount spread.
_FRAUD_TRANSACTIONS_PER_DAY = (6, 20)
_FRAUD_NIGHT_SHARE = 0.6
_FRAUD_AMOUNT_LOG_SIGMA = 0.35
# Compromised merchants: share of their transactions that are fraud, and the amount factor.
_COMPROMISED_MERCHANT_FRAUD_SHARE = 0.5
_COMPROMISED_MERCHANT_AMOUNT_FACTOR = (2.0, 5.0)
# Drift: the rate of online categories doubles, the card's total rate stays the same.
_DRIFT_CATEGORY_FACTOR = np.where(IS_ONLINE, 2.0, 1.0)
_MIN_AMOUNT_CENTS = 100
# Rows formatted at once: bounds memory on very large days.
_SLICE_ROWS = 100_000
# Random streams: (seed, stream, index).
_POPULATION, _PLAN, _DAY, _MALFORMED = range(4)
_CARDS, _MERCHANTS, _NEW_MERCHANTS, _FAVOURITES = range(4)
_FRAUD_TEXT = pa.array(["0\n", "1\n"])


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate.

    Shares are fractions in [0, 1]; ``drift_amount_inflation`` multiplies every amount from
    ``drift_start`` on; ``malformed_rate`` adds ``round(rate x good rows)`` malformed rows to
    each file.
    """

    n_cards: int = 2000
    days: int = 31
    start_date: date = date(2025, 1, 1)
    seed: int = 42
    revenge_share: float = 0.10  # share of cards that get a revenge-spending episode
    fraud_card_share: float = 0.01  # share of cards that get compromised
    compromised_merchant_share: float = 0.01
    drift_start: date | None = None  # from this date on: drift
    drift_amount_inflation: float = 1.3
    malformed_rate: float = 0.0  # share of extra malformed rows injected per file

    def __post_init__(self) -> None:
        problems = []
        if self.n_cards < 1:
            problems.append(f"n_cards must be >= 1, got {self.n_cards}")
        if self.days < 1:
            problems.append(f"days must be >= 1, got {self.days}")
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        for name in ("revenge_share", "fraud_card_share", "compromised_merchant_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.drift_amount_inflation <= 0:
            problems.append(
                f"drift_amount_inflation must be > 0, got {self.drift_amount_inflation}"
            )
        if self.malformed_rate < 0:
            problems.append(f"malformed_rate must be >= 0, got {self.malformed_rate}")
        if problems:
            raise ValueError("invalid SimulationConfig: " + "; ".join(problems))

    @property
    def drift_day(self) -> int | None:
        """Day index from which drift applies, or None when there is none in the simulation."""
        if self.drift_start is None:
            return None
        day = max((self.drift_start - self.start_date).days, 0)
        return day if day < self.days else None


@dataclass(frozen=True)
class SimulationSummary:
    """What ``simulate`` wrote."""

    files: tuple[Path, ...]  # the daily transaction files written, in date order
    reference_file: Path  # cards.csv
    rows: int  # data rows written over all files (good + malformed)
    malformed: dict[str, int]  # injected malformed rows by kind (MALFORMED_KINDS)
    fraud_rows: int  # good rows with is_fraud=1
    revenge_episodes: tuple[RevengeEpisode, ...]
    seconds: float  # wall time of the simulation


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


@dataclass(frozen=True)
class _World:
    """Everything drawn before the first day."""

    config: SimulationConfig
    cards: Cards
    merchants: Merchants
    choice_base: ChoiceIndex  # merchants by (city, category), before the drift
    choice_new: ChoiceIndex | None  # merchants that open at the drift, by (city, category)
    far_city: ChoiceIndex  # cities far from each city
    base_rate: np.ndarray  # (n_cards, N_CATEGORIES) expected transactions per average day
    drift_norm: np.ndarray  # (n_cards,) keeps a card's total rate under the drift's mix shift
    revenge: RevengePlan
    fraud_cards: Windows
    compromised: Windows
    id_key: np.uint64


@dataclass
class _DayRows:
    """A day's good rows, sorted by time."""

    card: np.ndarray
    merchant: np.ndarray
    city: np.ndarray  # city of the purchase (the merchant's branch there)
    cents: np.ndarray  # amount in cents
    seconds: np.ndarray  # seconds since midnight
    fraud: np.ndarray  # bool
    high_ids: np.ndarray = field(repr=False)  # uint64 random high half of each id


def _build_world(config: SimulationConfig) -> _World:
    seed, drift_day = config.seed, config.drift_day
    cards = build_cards(_rng(seed, _POPULATION, _CARDS), config.n_cards, config.start_date)
    n_base = max(100, config.n_cards // 5)
    n_new = max(2 * N_CATEGORIES, n_base // 5) if drift_day is not None else 0
    merchants = build_merchants(
        _rng(seed, _POPULATION, _MERCHANTS), n_base, _rng(seed, _POPULATION, _NEW_MERCHANTS), n_new
    )
    choice_base = merchant_choice(merchants, np.arange(n_base))
    choice_new = merchant_choice(merchants, np.arange(n_base, merchants.n)) if n_new else None
    cards = with_favourites(_rng(seed, _POPULATION, _FAVOURITES), cards, choice_base)

    base_rate = cards.category_rate
    drift_norm = cards.rate / (base_rate @ _DRIFT_CATEGORY_FACTOR)

    # The mean over a week of the day factors that apply to discretionary categories.
    weekend = np.arange(7) >= 5
    discretionary_week = np.mean(
        WEEKDAY_ACTIVITY * np.where(weekend, WEEKEND_DISCRETIONARY_BOOST, 1)
    )
    mean_amount = cards.amount_median * AMOUNT_MEAN_FACTOR[None, :]

    def baseline_daily_spend(card: np.ndarray, burst_start: np.ndarray) -> np.ndarray:
        rate = base_rate[card]
        if drift_day is not None:
            drifted = burst_start >= drift_day
            drift_mix = _DRIFT_CATEGORY_FACTOR[None, :] * drift_norm[card][:, None]
            rate = np.where(drifted[:, None], rate * drift_mix, rate)
        spend = rate[:, IS_DISCRETIONARY] * mean_amount[card][:, IS_DISCRETIONARY]
        return spend.sum(axis=1) * discretionary_week

    plan = _rng(seed, _PLAN, 0)
    order = plan.permutation(config.n_cards)
    n_revenge = _round_half_up(config.revenge_share * config.n_cards)
    n_fraud = _round_half_up(config.fraud_card_share * config.n_cards)
    revenge = plan_revenge(
        plan, np.sort(order[:n_revenge]), config.days, cards.credit_limit, baseline_daily_spend
    )
    # Fraud cards are disjoint from revenge cards whenever there are enough cards.
    fraud_cards = plan_windows(
        plan, np.sort(np.roll(order, -n_revenge)[:n_fraud]), config.days, FRAUD_WINDOW_DAYS
    )
    share = config.compromised_merchant_share
    n_compromised = max(1, _round_half_up(share * n_base)) if share > 0 else 0
    compromised = plan_windows(
        plan,
        np.sort(plan.choice(n_base, size=n_compromised, replace=False)),
        config.days,
        COMPROMISED_MERCHANT_WINDOW_DAYS,
    )
    id_key = plan.integers(0, np.iinfo(np.uint64).max, dtype=np.uint64, endpoint=True)
    return _World(
        config=config,
        cards=cards,
        merchants=merchants,
        choice_base=choice_base,
        choice_new=choice_new,
        far_city=far_city_choice(),
        base_rate=base_rate,
        drift_norm=drift_norm,
        revenge=revenge,
        fraud_cards=fraud_cards,
        compromised=compromised,
        id_key=id_key,
    )


def _pick_merchants(
    world: _World,
    rng: np.random.Generator,
    card: np.ndarray,
    category: np.ndarray,
    explore: float,
    drifted: bool,
) -> np.ndarray:
    """A merchant per purchase: mostly a favourite, sometimes another one."""
    u_explore, u_slot, u_pick, u_new = rng.random((4, len(card)))
    slot = np.minimum(np.searchsorted(FAVOURITE_CDF, u_slot, side="right"), FAVOURITES - 1)
    merchant = world.cards.favourites[card, category, slot].astype(np.int64)
    other = np.flatnonzero(u_explore < explore)
    keys = world.cards.city[card[other]] * N_CATEGORIES + category[other]
    picked = world.choice_base.pick(keys, u_pick[other])
    if drifted and world.choice_new is not None:
        new = u_new[other] < _NEW_MERCHANT_SHARE_OF_EXPLORE
        picked[new] = world.choice_new.pick(keys[new], u_pick[other][new])
    merchant[other] = picked
    return merchant


def _draw_day(world: _World, day: int) -> _DayRows:
    """All good rows of day ``day`` (index since the start), sorted by time."""
    config, cards = world.config, world.cards
    rng = _rng(config.seed, _DAY, day)
    weekday = (config.start_date + timedelta(days=day)).weekday()
    drifted = config.drift_day is not None and day >= config.drift_day

    # Everyday purchases: Poisson counts per card and category.
    rate = world.base_rate * WEEKDAY_ACTIVITY[weekday]
    if weekday >= 5:
        rate[:, IS_DISCRETIONARY] *= WEEKEND_DISCRETIONARY_BOOST
    if drifted:
        rate *= _DRIFT_CATEGORY_FACTOR[None, :]
        rate *= world.drift_norm[:, None]
    restrained, keep = world.revenge.restrained(day)
    rate[np.ix_(restrained, DISCRETIONARY_IDX)] *= keep[:, None]
    flat = np.repeat(np.arange(rate.size, dtype=np.int32), rng.poisson(rate).ravel())
    card, category = flat // N_CATEGORIES, flat % N_CATEGORIES
    amount = cards.amount_median[card, category] * np.exp(
        rng.standard_normal(len(card)) * AMOUNT_LOG_SIGMA[category]
    )
    # Restraint also means no big-ticket discretionary purchases.
    frugal = np.isin(card, restrained) & IS_DISCRETIONARY[category]
    amount[frugal] = np.minimum(
        amount[frugal], _RESTRAINT_MAX_AMOUNT_X_MEDIAN * cards.amount_median[card, category][frugal]
    )
    hour = sample_hours(rng, CATEGORY_PROFILE[category])
    explore = _EXPLORE_DRIFTED if drifted else _EXPLORE
    merchant = _pick_merchants(world, rng, card, category, explore, drifted)
    # Some travel purchases happen away from home.
    city = cards.city[card]
    away = (category == _TRAVEL) & (rng.random(len(card)) < _TRAVEL_AWAY_SHARE)
    city[away] = world.far_city.pick(city[away], rng.random(int(away.sum())))
    fraud = np.isin(merchant, world.compromised.active(day)) & (
        rng.random(len(card)) < _COMPROMISED_MERCHANT_FRAUD_SHARE
    )
    amount[fraud] *= rng.uniform(*_COMPROMISED_MERCHANT_AMOUNT_FACTOR, int(fraud.sum()))

    # Revenge bursts: the day's burst total split over a few discretionary purchases.
    burst_cards, burst_total = world.revenge.bursting(day)
    per_card = rng.integers(
        _BURST_TRANSACTIONS_PER_DAY[0], _BURST_TRANSACTIONS_PER_DAY[1] + 1, len(burst_cards)
    )
    group = np.repeat(np.arange(len(burst_cards)), per_card)
    b_card = burst_cards[group]
    b_category = rng.choice(N_CATEGORIES, size=len(group), p=BURST_CATEGORY_WEIGHT)
    weight = rng.gamma(2.0, 1.0, len(group))
    b_amount = burst_total[group] * weight / np.bincount(group, weight, len(burst_cards))[group]
    b_hour = sample_hours(rng, CATEGORY_PROFILE[b_category])
    b_merchant = _pick_merchants(world, rng, b_card, b_category, _BURST_EXPLORE, drifted)

    # Compromised cards: high amounts far from home, often at night.
    fraud_cards = world.fraud_cards.active(day)
    per_card = rng.integers(
        _FRAUD_TRANSACTIONS_PER_DAY[0], _FRAUD_TRANSACTIONS_PER_DAY[1] + 1, len(fraud_cards)
    )
    f_card = np.repeat(fraud_cards, per_card)
    f_category = rng.choice(N_CATEGORIES, size=len(f_card), p=FRAUD_CATEGORY_WEIGHT)
    f_city = world.far_city.pick(cards.city[f_card], rng.random(len(f_card)))
    f_merchant = world.choice_base.pick(
        f_city * N_CATEGORIES + f_category, rng.random(len(f_card))
    ).astype(np.int64)
    f_amount = FRAUD_AMOUNT_MEDIAN_USD[f_category] * rng.lognormal(
        0.0, _FRAUD_AMOUNT_LOG_SIGMA, len(f_card)
    )
    night = rng.random(len(f_card)) < _FRAUD_NIGHT_SHARE
    f_hour = np.where(
        night,
        sample_hours(rng, np.full(len(f_card), PROFILE_NIGHT)),
        sample_hours(rng, np.full(len(f_card), PROFILE_ONLINE)),
    )

    card = np.concatenate([card, b_card, f_card])
    merchant = np.concatenate([merchant, b_merchant, f_merchant])
    city = np.concatenate([city, cards.city[b_card], f_city])
    amount = np.concatenate([amount, b_amount, f_amount])
    fraud = np.concatenate([fraud, np.zeros(len(b_card), bool), np.ones(len(f_card), bool)])
    seconds = np.concatenate([hour, b_hour, f_hour]) * 3600 + rng.integers(0, 3600, len(card))
    if drifted:
        amount *= config.drift_amount_inflation
    cents = np.maximum(np.rint(amount * 100.0), _MIN_AMOUNT_CENTS).astype(np.int64)
    high_ids = rng.integers(0, np.iinfo(np.uint64).max, len(card), dtype=np.uint64, endpoint=True)
    order = np.argsort(seconds, kind="stable")
    return _DayRows(
        card=card[order],
        merchant=merchant[order],
        city=city[order],
        cents=cents[order],
        seconds=seconds[order],
        fraud=fraud[order],
        high_ids=high_ids,
    )


def _lines(world: _World, day: int, rows: _DayRows, index: np.ndarray) -> pa.StringArray:
    """CSV lines (each ending in a newline) of the good rows ``index`` of a day."""
    day_start = int(
        (np.datetime64(world.config.start_date + timedelta(days=day), "s")).astype(np.int64)
    )
    card, merchant = pa.array(rows.card[index]), pa.array(rows.merchant[index])
    merch_lat, merch_long = world.merchants.branch_location(rows.merchant[index], rows.city[index])
    return join_fields(
        [
            timestamp_text(day_start + rows.seconds[index]),
            world.cards.cc_text.take(card),
            world.merchants.text.take(merchant),
            decimal_text(rows.cents[index], 2),
            world.cards.holder_text.take(card),
            transaction_ids(day, index, world.id_key, rows.high_ids[index]),
            decimal_text(np.round(merch_lat * 1e6).astype(np.int64), 6),
            decimal_text(np.round(merch_long * 1e6).astype(np.int64), 6),
            _FRAUD_TEXT.take(pa.array(rows.fraud[index].astype(np.int8))),
        ]
    )


def _malformed(
    world: _World, day: int, rows: _DayRows
) -> tuple[np.ndarray, list[bytes], dict[str, int]]:
    """Malformed rows of a day: insertion positions (before good row p), lines, counts."""
    n = len(rows.card)
    count = _round_half_up(world.config.malformed_rate * n) if n else 0
    counts = dict.fromkeys(MALFORMED_KINDS, 0)
    if count == 0:
        return np.empty(0, np.int64), [], counts
    rng = _rng(world.config.seed, _MALFORMED, day)
    kinds = rng.integers(0, len(MALFORMED_KINDS), count)
    template = rng.integers(0, n, count)
    position = rng.integers(0, n + 1, count)
    is_duplicate = kinds == MALFORMED_KINDS.index("duplicate_id")
    position[is_duplicate] = template[is_duplicate] + 1  # right after the row it copies
    fresh_ids = transaction_ids(
        day,
        np.arange(n, n + count),
        world.id_key,
        rng.integers(0, np.iinfo(np.uint64).max, count, dtype=np.uint64, endpoint=True),
    ).to_pylist()
    templates = _lines(world, day, rows, template).to_pylist()
    neighbours = _lines(world, day, rows, np.maximum(position - 1, 0)).to_pylist()
    the_day = world.config.start_date + timedelta(days=day)
    lines = []
    for j in range(count):
        kind = MALFORMED_KINDS[kinds[j]]
        counts[kind] += 1
        neighbour_time = neighbours[j].split(",", 1)[0]
        fields = parse_line(templates[j].rstrip("\n"))
        lines.append(malformed_line(kind, fields, the_day, neighbour_time, fresh_ids[j], rng))
    order = np.argsort(position, kind="stable")
    return position[order], [lines[j] for j in order], counts


def _write_day(path: Path, world: _World, day: int, rows: _DayRows) -> dict[str, int]:
    """Write a day's file; returns the malformed rows injected, by kind."""
    n = len(rows.card)
    position, bad_lines, counts = _malformed(world, day, rows)
    k = 0
    # A slice is written on another thread while the next one is formatted (both release
    # the GIL); one write at a time in flight bounds memory.
    with path.open("wb") as out, ThreadPoolExecutor(max_workers=1) as writer:
        pending = writer.submit(out.write, (",".join(TRANSACTION_COLUMNS) + "\n").encode())
        for start in range(0, n, _SLICE_ROWS):
            stop = min(start + _SLICE_ROWS, n)
            data, offsets = line_bytes(_lines(world, day, rows, np.arange(start, stop)))
            pieces: list[bytes | memoryview] = []
            cursor = start
            while k < len(position) and position[k] <= stop:
                p = int(position[k])
                pieces += [data[offsets[cursor - start] : offsets[p - start]], bad_lines[k]]
                cursor, k = p, k + 1
            pieces.append(data[offsets[cursor - start] : offsets[stop - start]])
            pending.result()
            pending = writer.submit(out.writelines, pieces)
        pending.result()
    return counts


def _write_cards(path: Path, cards: Cards) -> None:
    """Write the reference file: one line per card."""
    open_date = pa.array(cards.open_date).cast(pa.string())
    lines = join_fields(
        [
            cards.cc_text,
            pa.array(cards.credit_limit).cast(pa.string()),
            pa.array(INCOME_BANDS).take(pa.array(cards.income_band)),
            pc.binary_join_element_wise(open_date, pa.scalar("\n"), ""),
        ]
    )
    data, offsets = line_bytes(lines)
    with path.open("wb") as out:
        out.write((",".join(CARD_COLUMNS) + "\n").encode())
        out.write(data[offsets[0] : offsets[-1]])


def _episodes(world: _World) -> tuple[RevengeEpisode, ...]:
    plan, start = world.revenge, world.config.start_date
    episodes = [
        RevengeEpisode(
            card_number=str(world.cards.cc_num[c]),
            restraint_start=start + timedelta(days=int(r)),
            burst_start=start + timedelta(days=int(b)),
            burst_days=int(d),
        )
        for c, r, b, d in zip(
            plan.card, plan.restraint_start, plan.burst_start, plan.burst_days, strict=True
        )
    ]
    return tuple(sorted(episodes, key=lambda e: (e.burst_start, e.card_number)))


def transaction_file_name(day: date) -> str:
    """File name of the landing file of ``day``."""
    return f"transactions_{day.isoformat()}.csv"


def simulate(config: SimulationConfig, out_dir: Path, progress: bool = False) -> SimulationSummary:
    """Write ``config.days`` daily transaction files and ``cards.csv`` into ``out_dir``.

    Existing files of the same names are overwritten; other files are left alone. With
    ``progress`` a ``rich`` progress bar runs over the days.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = _build_world(config)
    reference_file = out_dir / REFERENCE_FILE_NAME
    _write_cards(reference_file, world.cards)

    files: list[Path] = []
    malformed = dict.fromkeys(MALFORMED_KINDS, 0)
    rows = fraud_rows = 0
    bar = (
        Progress(
            TextColumn("[bold]simulating[/] {task.fields[day]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TimeElapsedColumn(),
        )
        if progress
        else nullcontext()
    )
    with bar:
        task = bar.add_task("days", total=config.days, day="", rows=0) if progress else None
        for day in range(config.days):
            the_day = config.start_date + timedelta(days=day)
            day_rows = _draw_day(world, day)
            path = out_dir / transaction_file_name(the_day)
            counts = _write_day(path, world, day, day_rows)
            files.append(path)
            for kind, c in counts.items():
                malformed[kind] += c
            rows += len(day_rows.card) + sum(counts.values())
            fraud_rows += int(day_rows.fraud.sum())
            del day_rows  # before the next day is drawn: one day in memory at a time
            pa.default_memory_pool().release_unused()
            if progress:
                bar.update(task, advance=1, day=the_day.isoformat(), rows=rows)
    return SimulationSummary(
        files=tuple(files),
        reference_file=reference_file,
        rows=rows,
        malformed=malformed,
        fraud_rows=fraud_rows,
        revenge_episodes=_episodes(world),
        seconds=time.perf_counter() - started,
    )

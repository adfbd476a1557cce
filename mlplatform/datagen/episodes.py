"""Card- and merchant-level episodes planned before the first day is drawn.

Revenge spending (restraint, then a burst of discretionary spending), compromised cards and
compromised merchants. Days are day indices since the simulation's first day; money is USD
before any drift inflation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

import numpy as np

#: Earliest day index of a burst when the simulation is long enough: the revenge-spending label
#: needs 30 days of history and a baseline window that ends 14 days before the burst.
EARLIEST_LABELLED_BURST_DAY = 35
#: Restraint length in days (inclusive range). Much shorter restraint cannot bring
#: the 14-day recent mean down to half the baseline, which the label asks for.
RESTRAINT_DAYS = (12, 21)
#: Share of a card's normal discretionary spending kept during restraint.
RESTRAINT_KEEP = (0.0, 0.3)
BURST_DAYS = (1, 3)
#: Burst total = factor x max(12 x baseline daily discretionary spend, 15% of credit limit);
#: the label asks for 9 x baseline and 10% of the limit within 72 hours.
BURST_FACTOR = (1.2, 2.5)
BURST_BASELINE_MULTIPLE = 12.0
BURST_CREDIT_LIMIT_SHARE = 0.15
FRAUD_WINDOW_DAYS = (1, 5)
COMPROMISED_MERCHANT_WINDOW_DAYS = (3, 10)


class RevengeEpisode(NamedTuple):
    """One revenge-spending episode as written to the files.

    Restraint runs from ``restraint_start`` up to the day before ``burst_start``; the burst
    covers ``burst_days`` days from ``burst_start``.
    """

    card_number: str
    restraint_start: date
    burst_start: date
    burst_days: int

    @property
    def restraint_days(self) -> int:
        """Length of the restraint in days."""
        return (self.burst_start - self.restraint_start).days


@dataclass(frozen=True)
class RevengePlan:
    """Revenge episodes, one per listed card."""

    card: np.ndarray  # int64 card indices
    restraint_start: np.ndarray  # int64 day index
    burst_start: np.ndarray  # int64 day index
    burst_days: np.ndarray  # int64, 1-3
    keep: np.ndarray  # float64 share of normal discretionary spending kept in restraint
    burst_day_total: np.ndarray  # float64 (n_episodes, 3) USD per burst day

    def restrained(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Cards in restraint on ``day`` and the share of discretionary spending they keep."""
        on = (self.restraint_start <= day) & (day < self.burst_start)
        return self.card[on], self.keep[on]

    def bursting(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Cards in a burst on ``day`` and their burst spending that day (USD)."""
        offset = day - self.burst_start
        on = (offset >= 0) & (offset < self.burst_days)
        return self.card[on], self.burst_day_total[on, offset[on]]


@dataclass(frozen=True)
class Windows:
    """Time windows ``[start, end)`` in day indices, one per entity (card or merchant)."""

    entity: np.ndarray  # int64 indices
    start: np.ndarray  # int64 day index
    end: np.ndarray  # int64 day index, exclusive

    def active(self, day: int) -> np.ndarray:
        """Entities whose window contains ``day``."""
        return self.entity[(self.start <= day) & (day < self.end)]


def plan_revenge(
    rng: np.random.Generator,
    cards: np.ndarray,
    n_days: int,
    credit_limit: np.ndarray,
    baseline_daily_spend: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> RevengePlan:
    """Plan one episode for each of ``cards``.

    ``baseline_daily_spend(cards, burst_start)`` gives each card's expected discretionary
    spend per normal day (USD) under the conditions of its burst day.
    """
    n = len(cards)
    restraint_len = rng.integers(RESTRAINT_DAYS[0], RESTRAINT_DAYS[1] + 1, n)
    keep = rng.uniform(*RESTRAINT_KEEP, n)
    burst_days = np.minimum(rng.integers(BURST_DAYS[0], BURST_DAYS[1] + 1, n), n_days)
    factor = rng.uniform(*BURST_FACTOR, n)
    u = rng.random(n)
    split = rng.gamma(4.0, 1.0, (n, BURST_DAYS[1]))

    latest = np.maximum(n_days - burst_days, 0)
    earliest = np.where(
        latest >= EARLIEST_LABELLED_BURST_DAY,
        EARLIEST_LABELLED_BURST_DAY,
        np.minimum(restraint_len, latest),
    )
    burst_start = earliest + np.minimum(
        (u * (latest - earliest + 1)).astype(np.int64), latest - earliest
    )
    restraint_start = np.maximum(burst_start - restraint_len, 0)

    baseline = baseline_daily_spend(cards, burst_start)
    total = factor * np.maximum(
        BURST_BASELINE_MULTIPLE * baseline, BURST_CREDIT_LIMIT_SHARE * credit_limit[cards]
    )
    split[np.arange(BURST_DAYS[1])[None, :] >= burst_days[:, None]] = 0.0
    day_total = total[:, None] * split / split.sum(axis=1, keepdims=True)
    return RevengePlan(
        card=np.asarray(cards, dtype=np.int64),
        restraint_start=restraint_start,
        burst_start=burst_start,
        burst_days=burst_days,
        keep=keep,
        burst_day_total=day_total,
    )


def plan_windows(
    rng: np.random.Generator, entities: np.ndarray, n_days: int, length: tuple[int, int]
) -> Windows:
    """A window of ``length`` days (inclusive range) starting on a uniform day, per entity."""
    n = len(entities)
    start = rng.integers(0, n_days, n)
    end = np.minimum(start + rng.integers(length[0], length[1] + 1, n), n_days)
    return Windows(entity=np.asarray(entities, dtype=np.int64), start=start, end=end)

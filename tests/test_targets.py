"""The revenge-spending target at its boundaries, maturity, and the carried-label target."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from conftest import insert_curated

from mlplatform.contract import load_contract
from mlplatform.features.declarations import INPUT_COLUMNS
from mlplatform.settings import DEFAULT_CONTRACT, Settings
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.targets import build_targets

SETTINGS = Settings(home=Path("/nonexistent"))
DAY0 = datetime(2025, 1, 1, 12, 0, 0)
T = DAY0 + timedelta(days=74)  # baseline (T-90d, T-14d] holds 60 days of history
FILLER = T + timedelta(days=10)  # the last curated day: everything before it has matured


def _events(card: str, *, recent_total: float = 280.0, burst: list[float] = (950.0,),
            first_seen: datetime = DAY0, credit_limit: float | None = None,
            burst_category: str = "shopping_pos") -> list[dict]:  # fmt: skip
    """A card that spends 100 a day on discretionary days 1..60 after it is first seen
    (B = 100), ``recent_total``
    over the 13 days before T (R = recent_total / 14), then ``burst`` from T on (S)."""
    rows = [(first_seen, 20.0, "grocery_pos")]  # first seen: not discretionary
    rows += [
        (DAY0 + timedelta(days=d), 100.0, "entertainment")
        for d in range(1, 61)
        if DAY0 + timedelta(days=d) > first_seen
    ]
    rows += [(DAY0 + timedelta(days=d), 20.0, "travel") for d in range(61, 73)]
    rows += [(DAY0 + timedelta(days=73), recent_total - 12 * 20.0, "travel")]
    rows += [(T + timedelta(hours=h), amount, burst_category) for h, amount in enumerate(burst)]
    return [
        {**dict.fromkeys(INPUT_COLUMNS), "transaction_id": f"{card}-{n}", "card_id": card,
         "event_time": stamp, "partition_date": stamp.date(), "amount": round(amount, 2),
         "category": category, "credit_limit": credit_limit, "merchant": "m",
         "hour": stamp.hour, "weekday": stamp.isoweekday(), "is_weekend": False, "label": 0}
        for n, (stamp, amount, category) in enumerate(rows)
    ]  # fmt: skip


CASES = {
    # card: (events, expected target of the card's first transaction at T)
    "clear": (_events("clear"), 1),
    "recent_at_half": (_events("recent_at_half", recent_total=700.0), 1),  # R = 0.5 B
    "recent_over_half": (_events("recent_over_half", recent_total=700.14), 0),
    "burst_at_9b": (_events("burst_at_9b", burst=[500.0, 400.0]), 1),  # S = 900 = 9 B
    "burst_under_9b": (_events("burst_under_9b", burst=[500.0, 399.99]), 0),
    "burst_after_horizon": (
        _events("burst_after_horizon", burst=[500.0] + [0.01] * 71 + [400.0]), 0),
    "limit_raises_min_burst": (_events("limit_raises_min_burst", credit_limit=10_000.0), 0),
    "limit_met": (_events("limit_met", burst=[1000.0], credit_limit=10_000.0), 1),
    "history_30_days": (_events("history_30_days", first_seen=T - timedelta(days=30)), 1),
    "history_short": (
        _events("history_short", first_seen=T - timedelta(days=30, seconds=-1)), 0),
    "not_discretionary": (_events("not_discretionary", burst_category="grocery_pos"), 0),
}  # fmt: skip


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    rows = [row for events, _ in CASES.values() for row in events]
    rows += _events("immature", burst=[950.0])[:1]  # only its first-seen event...
    late = {**rows[-1], "transaction_id": "late", "card_id": "immature", "event_time": FILLER,
            "partition_date": FILLER.date(), "category": "travel"}  # fmt: skip
    path = tmp_path_factory.mktemp("targets") / "w.duckdb"
    with connect(path) as conn:
        insert_curated(conn, pd.DataFrame([*rows, late]))
        result = build_targets(conn, SETTINGS, load_contract(DEFAULT_CONTRACT))
        assert result.as_of == datetime.combine(
            FILLER.date() + timedelta(days=1), datetime.min.time()
        )
        return conn.execute("SELECT * FROM ml.targets").df().set_index("transaction_id")


@pytest.mark.parametrize("card", list(CASES))
def test_revenge_target_at_its_boundaries(targets: pd.DataFrame, card: str) -> None:
    events, expected = CASES[card]
    at_t = next(e["transaction_id"] for e in events if e["event_time"] == T)
    row = targets.loc[at_t]
    assert row.matured
    assert row.target == expected, row.to_dict()


def test_baseline_and_recent_spend_are_daily_means(targets: pd.DataFrame) -> None:
    row = targets.loc[next(e["transaction_id"] for e in CASES["clear"][0] if e["event_time"] == T)]
    assert row.baseline_daily == pytest.approx(100.0)
    assert row.recent_daily == pytest.approx(280.0 / 14, abs=0.01)
    assert row.burst_spend == pytest.approx(950.0)


def test_an_immature_target_is_null_never_zero(targets: pd.DataFrame) -> None:
    late = targets.loc["late"]  # 72 hours after it have not passed at the end of the data
    assert not late.matured and pd.isna(late.target)
    assert targets[targets.matured].target.notna().all()


def test_label_target_uses_the_label_after_its_delay(tmp_path: Path) -> None:
    contract = tmp_path / "c.yaml"
    contract.write_text(
        "columns: {transaction_id: id, event_time: t, card_number: c, amount: a, label: y}\n"
        "target: label\n"
    )
    stamps = [DAY0, DAY0 + timedelta(days=15), DAY0 + timedelta(days=25)]
    events = pd.DataFrame(
        [{**dict.fromkeys(INPUT_COLUMNS), "transaction_id": f"t{i}", "card_id": "c",
          "event_time": s, "partition_date": s.date(), "amount": 1.0, "label": i % 2,
          "hour": 12, "weekday": 1, "is_weekend": False} for i, s in enumerate(stamps)]
    )  # fmt: skip
    with connect(tmp_path / "w.duckdb") as conn:
        insert_curated(conn, events)
        build_targets(conn, SETTINGS, load_contract(contract))
        got = dict(conn.execute("SELECT transaction_id, target FROM ml.targets").fetchall())
    # As of day 26 00:00: t0 and t1 are older than the 7-day delay, t2 is not.
    assert got == {"t0": 0, "t1": 1, "t2": None}

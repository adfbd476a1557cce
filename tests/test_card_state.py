"""A card's online state against the offline SQL: frame edges, silence, first use, size, bytes.

Each case builds a card's history by hand (curated-shaped events, microsecond times where a
frame edge needs them), computes a new transaction's features from the per-card state
(:class:`~mlplatform.features.online_state.FeatureState`) and from the generated offline SQL
in DuckDB over the same events (:func:`~mlplatform.features.offline.online_features`), and
asks for the same values to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from mlplatform.contract import load_contract
from mlplatform.features.card_state import (
    DAY_US,
    HASH,
    CardState,
    StateFormatError,
    StateLayout,
)
from mlplatform.features.declarations import INPUT_COLUMNS, feature_registry
from mlplatform.features.offline import online_features
from mlplatform.features.online_state import (
    CompiledFeatures,
    FeatureState,
    as_records,
    events_table_ddl,
)
from mlplatform.settings import DEFAULT_CONTRACT, Settings
from mlplatform.warehouse.connection import read_sql

SETTINGS = Settings(home=Path("/nonexistent"))
REGISTRY = feature_registry(SETTINGS, load_contract(DEFAULT_CONTRACT))
NOW = datetime(2025, 6, 1, 12, 0, 0, 250_000)
US = timedelta(microseconds=1)


@pytest.fixture(scope="module")
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as connection:
        connection.execute(read_sql("create_schema"))
        connection.execute(read_sql("macros"))
        yield connection


@pytest.fixture(scope="module")
def compiled(conn: duckdb.DuckDBPyConnection) -> CompiledFeatures:
    return CompiledFeatures(REGISTRY, conn)


def _event(name: str, when: datetime, amount: float = 12.34, **change: Any) -> dict[str, Any]:
    """A curated-shaped event of card ``card-a`` (any column can be changed)."""
    merchant_lat = 40.0 + len(name) / 1000
    row = {
        "transaction_id": name, "event_time": when, "partition_date": when.date(),
        "card_id": "card-a", "merchant": "Caf\u00e9 Nguy\u1ec5n", "category": "shopping_net",
        "amount": amount, "gender": "F", "city_pop": 1200, "age": 41, "home_lat": 40.0,
        "home_long": -74.0, "merchant_lat": merchant_lat, "merchant_long": -74.2,
        "home_merchant_km": 12.5, "label": 0, "credit_limit": 5000.0,
        "income_band": next(iter(SETTINGS.income_band_monthly_income)), "hour": when.hour,
        "weekday": when.isoweekday(), "is_weekend": when.isoweekday() >= 6,
    }  # fmt: skip
    return {**row, **change}


def _state(
    conn: duckdb.DuckDBPyConnection, compiled: CompiledFeatures, history: list[dict]
) -> FeatureState:
    state = FeatureState(compiled)
    state.add(as_records(conn, compiled, history))
    return state


def _from_state(
    conn: duckdb.DuckDBPyConnection, compiled: CompiledFeatures, state: FeatureState, new: dict
) -> dict[str, Any]:
    records = as_records(conn, compiled, [new])
    (row,) = compiled.features([{c: new[c] for c in INPUT_COLUMNS}], state.aggregates(records))
    return {f.name: row[f.name] for f in REGISTRY.enabled}


def _from_sql(history: list[dict], new: dict) -> dict[str, Any]:
    frame = pd.DataFrame(history, columns=list(INPUT_COLUMNS))
    return online_features(REGISTRY, frame, new)


def _same(a: object, b: object) -> bool:
    """Equal to the last bit, missing equal to missing."""
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    return all(missing) if any(missing) else a == b


def _assert_parity(conn, compiled, history: list[dict], new: dict) -> dict[str, Any]:
    online = _from_state(conn, compiled, _state(conn, compiled, history), new)
    offline = _from_sql(history, new)
    different = {f: (online[f], offline[f]) for f in online if not _same(online[f], offline[f])}
    assert not different
    return online


def test_a_cards_first_transaction_has_only_itself(conn, compiled) -> None:
    other = _event("other-card", NOW - timedelta(hours=1), card_id="card-b")
    online = _assert_parity(conn, compiled, [other], _event("first", NOW))
    assert online["card_txn_count_30d"] == 1 and online["card_seconds_since_previous"] is None


def test_a_card_silent_longer_than_the_longest_window(conn, compiled) -> None:
    history = [
        _event("long-ago", NOW - timedelta(days=200), 80.0),
        _event("before-the-window", NOW - timedelta(days=91), 70.0),
        _event("a-microsecond-too-early", NOW - timedelta(days=90) - US, 60.0),
    ]
    online = _assert_parity(conn, compiled, history, _event("back", NOW, 5.0))
    assert online["card_txn_count_30d"] == 1 and online["card_spend_90d"] == 5.0
    # the window's first microsecond is in it
    edge = [*history, _event("on-the-edge", NOW - timedelta(days=90), 50.0)]
    assert _assert_parity(conn, compiled, edge, _event("back", NOW, 5.0))["card_spend_90d"] == 55.0


def test_same_microsecond_events_are_peers_in_every_frame(conn, compiled) -> None:
    history = [
        *(_event(f"peer-{i}", NOW, 10.0 + i) for i in range(4)),  # the new one's microsecond
        *(_event(f"start-{i}", NOW - timedelta(days=30), 3.0) for i in range(3)),
        _event("just-out", NOW - timedelta(days=30) - US, 1000.0),
        *(_event(f"hour-{i}", NOW - timedelta(hours=1), 2.5, category=None) for i in range(2)),
        *(_event(f"day-{i}", NOW - timedelta(days=1), 7.0, merchant=None) for i in range(2)),
    ]
    for name in ("new", "zz-new", "0-new"):  # the new id's hash orders it among the peers
        online = _assert_parity(conn, compiled, history, _event(name, NOW, 1.0))
        assert online["card_txn_count_1h"] == 7 and online["card_txn_count_30d"] == 12
        assert online["card_seconds_since_previous"] in (0.0, 3600.0)


def test_a_day_of_history_replayed_in_time_order_keeps_parity(conn, compiled) -> None:
    """Each transaction scored on the state of those before, then recorded, as serving does."""
    times = [NOW - timedelta(days=d, minutes=37 * d) for d in (95, 60, 31, 29, 14, 8, 2, 1)]
    times += [NOW - timedelta(minutes=m) for m in (61, 60, 30, 0)] + [NOW]
    history = [_event(f"r{i}", t, 5.0 + i * 1.25, label=i % 2) for i, t in enumerate(times)]
    state = FeatureState(compiled)
    for i, event in enumerate(history):
        online = _from_state(conn, compiled, state, event)
        offline = _from_sql(history[:i], event)
        assert all(_same(online[f], offline[f]) for f in online), event["transaction_id"]
        state.add(as_records(conn, compiled, [event]))


def test_a_cards_state_stays_bounded_by_the_windows_as_its_events_grow(conn, compiled) -> None:
    state = FeatureState(compiled)
    start = NOW - timedelta(days=400)
    days_kept = math.ceil(compiled.layout.horizon_us / DAY_US) + 1
    largest = largest_tiles = 0
    for day in range(400):
        events = [_event(f"g{day}-{k}", start + timedelta(days=day, hours=3 * k)) for k in range(3)]
        state.add(as_records(conn, compiled, events))
        card = state.cards["card-a"]
        largest, largest_tiles = max(largest, len(card)), max(largest_tiles, len(card.tiles))
    assert len(state.cards["card-a"]) == largest <= 3 * days_kept < 1200
    assert largest_tiles <= days_kept
    # the merchant's daily partials keep the daily windows' days only
    reach = 30 + SETTINGS.label_delay_days + 3
    assert max(len(days) for days in state.partials.values()) <= reach
    everything = [_event(f"g{d}-{k}", start + timedelta(days=d, hours=3 * k))
                  for d in range(400) for k in range(3)]  # fmt: skip
    # it holds exactly the events kept: a dropped one is not held (a resend is new again)
    hashes = [record[1] for record in as_records(conn, compiled, everything)]
    kept = {event[HASH] for event in state.cards["card-a"].events()}
    assert [state.cards["card-a"].holds(h) for h in hashes] == [h in kept for h in hashes]
    assert not state.cards["card-a"].holds(hashes[0]) and state.cards["card-a"].holds(hashes[-1])
    # on time, and an hour late: its 90-day frame starts in the oldest day the state keeps
    for new in (_event("after", start + timedelta(days=399, hours=7)),
                _event("late", start + timedelta(days=399, hours=5))):  # fmt: skip
        online, offline = _from_state(conn, compiled, state, new), _from_sql(everything, new)
        assert all(_same(online[f], offline[f]) for f in online), new["transaction_id"]


def test_a_state_written_as_bytes_reads_back_equal_and_gives_the_same_features(
    conn, compiled
) -> None:
    history = [
        _event(f"b{i}", NOW - timedelta(hours=7 * i, microseconds=i), 3.5 * i + 0.01,
               category=None if i % 5 == 0 else "grocery_pos",
               merchant=f"\u674e {i % 4}" if i % 3 else None,
               merchant_lat=None if i % 7 == 0 else 40.5)
        for i in range(1, 200)
    ]  # fmt: skip
    state = _state(conn, compiled, history)
    card = state.cards["card-a"]
    data = card.to_bytes()
    again = CardState.from_bytes(data, compiled.layout)
    assert again == card and again.to_bytes() == data and len(again) == len(card)
    copy = FeatureState(compiled)
    copy.partials = state.partials
    copy.cards["card-a"] = again
    new = _event("new", NOW, 9.99)
    records = as_records(conn, compiled, [new])
    assert copy.aggregates(records) == state.aggregates(records)
    online, offline = _from_state(conn, compiled, copy, new), _from_sql(history, new)
    assert all(_same(online[f], offline[f]) for f in online)


def test_bytes_of_another_layout_or_format_are_refused(conn, compiled) -> None:
    data = _state(conn, compiled, [_event("x", NOW)]).cards["card-a"].to_bytes()
    layout = compiled.layout
    other = StateLayout(layout.columns[:-1], layout.kinds[:-1], (), layout.lookback_us)
    with pytest.raises(StateFormatError, match="other feature declarations"):
        CardState.from_bytes(data, other)
    with pytest.raises(StateFormatError, match="format"):
        CardState.from_bytes(b"JSON" + data[4:], layout)
    with pytest.raises(StateFormatError, match="shorter"):
        CardState.from_bytes(data[:5], layout)


def test_a_resent_transaction_is_the_new_event_not_history_too(conn, compiled) -> None:
    history = [_event(f"h{i}", NOW - timedelta(hours=5 * i), 4.0 + i) for i in range(1, 40)]
    new = _event("again", NOW - timedelta(hours=1), 250.0)
    state = _state(conn, compiled, [*history, new])  # already recorded once
    held = len(state.cards["card-a"])
    online, offline = _from_state(conn, compiled, state, new), _from_sql(history, new)
    assert all(_same(online[f], offline[f]) for f in online)
    assert len(state.cards["card-a"]) == held  # the held state is left as it was


def test_a_past_transaction_on_a_state_read_with_later_events_keeps_parity(conn, compiled) -> None:
    """As ``load_champion()`` scores a past day over a warehouse: the state is read from a
    table holding months after it, which a state that is read must keep (cards and merchant
    daily partials alike)."""
    history = [
        _event(f"w{d}-{k}", NOW - timedelta(days=d, hours=5 * k), 3.0 + d, label=(d + k) % 2)
        for d in range(0, 200, 2)
        for k in range(2)
    ]
    conn.execute(events_table_ddl("warehouse_events"))
    conn.executemany(
        f"INSERT INTO warehouse_events VALUES ({', '.join('?' for _ in INPUT_COLUMNS)})",
        [[row[c] for c in INPUT_COLUMNS] for row in history],
    )
    state = FeatureState(compiled)
    state.load(conn, "warehouse_events")
    state.load_partials(conn, "warehouse_events")
    for days_before in (120, 45):
        past = _event(f"past-{days_before}", NOW - timedelta(days=days_before, minutes=7), 9.0)
        online, offline = _from_state(conn, compiled, state, past), _from_sql(history, past)
        assert all(_same(online[f], offline[f]) for f in online), days_before
        assert online["merchant_labelled_count_30d"] > 0

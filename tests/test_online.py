"""The online feature source: landing rules online, parity with the offline table, fresh state.

One small simulated platform is built once: a store holding every day but the last (as the
`online_feature_store` of the evening before would), and a warehouse holding every day with
its offline feature table. Replaying the last day through the online path, in time order,
must give exactly the offline features of that day.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import START, load_warehouse
from redis_server import RedisServer

from mlplatform.contract import load_contract
from mlplatform.datagen import SimulationConfig, simulate
from mlplatform.features.declarations import FeatureRegistry, feature_registry
from mlplatform.features.offline import build_card_features
from mlplatform.serving.online import InvalidTransactions, OnlineFeatures
from mlplatform.settings import DEFAULT_CONTRACT, get_settings
from mlplatform.warehouse.connection import connect

DAYS = 21
KEY = b"test-pii-key"


@dataclass(frozen=True)
class Platform:
    store: Path
    warehouse: Path
    last_day: pd.DataFrame  # the last day's landing rows in canonical columns, in time order
    registry: FeatureRegistry


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("online")
    landing = root / "landing"
    simulate(SimulationConfig(n_cards=80, days=DAYS, start_date=START, seed=11), landing)
    last = START + timedelta(days=DAYS - 1)
    early = root / "early"
    early.mkdir()
    for path in landing.iterdir():
        if last.isoformat() not in path.name:
            (early / path.name).symlink_to(path)
    store, warehouse = root / "store.duckdb", root / "warehouse.duckdb"
    load_warehouse(early, store)
    load_warehouse(landing, warehouse)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLPLATFORM_HOME", str(root / "home"))
        registry = feature_registry(get_settings(), load_contract(DEFAULT_CONTRACT))
    with connect(warehouse) as conn:
        build_card_features(conn, registry, START, last)
    contract = load_contract(DEFAULT_CONTRACT)
    rows = pd.read_csv(landing / f"transactions_{last.isoformat()}.csv", dtype=str)
    canonical = rows.rename(columns={s: c for c, s in contract.columns.items()})
    canonical = canonical.sort_values("event_time", kind="stable").reset_index(drop=True)
    yield Platform(store, warehouse, canonical, registry)


def _transactions(frame: pd.DataFrame) -> list[dict]:
    rows = frame.to_dict("records")
    return [{k: v for k, v in row.items() if isinstance(v, str)} for row in rows]


def _offline(platform: Platform, ids: list[str]) -> pd.DataFrame:
    with duckdb.connect(str(platform.warehouse), read_only=True) as conn:
        return (
            conn.execute(
                "SELECT * FROM features.card_features WHERE list_contains($ids, transaction_id)",
                {"ids": ids},
            )
            .df()
            .set_index("transaction_id")
        )


def _assert_same_features(online: pd.DataFrame, offline: pd.DataFrame, registry) -> None:
    online = online.set_index("transaction_id").loc[offline.index]
    for feature in registry.enabled:
        a, b = online[feature.name], offline[feature.name]
        same = (a == b) | (a.isna() & b.isna())
        assert same.all(), (feature.name, list(zip(a[~same][:3], b[~same][:3], strict=True)))


def test_replaying_a_day_in_time_order_gives_exactly_its_offline_features(platform: Platform):
    source = OnlineFeatures(platform.store, platform.registry, KEY)
    frames = []
    for transaction in _transactions(platform.last_day):
        batch = source.compute([transaction])
        source.record(batch)
        frames.append(batch.frame)
    online = pd.DataFrame([row for frame in frames for row in frame.to_dict("records")])
    offline = _offline(platform, list(online.transaction_id))
    assert len(online) == len(platform.last_day) == len(offline) > 100
    _assert_same_features(online, offline, platform.registry)


def test_a_cards_second_purchase_within_the_hour_sees_the_first_once_recorded(
    platform: Platform,
):
    source = OnlineFeatures(platform.store, platform.registry, KEY)
    first = _transactions(platform.last_day.head(1))[0]
    later = str(pd.Timestamp(first["event_time"]) + pd.Timedelta(minutes=20))
    second = {**first, "transaction_id": "second", "event_time": later, "amount": "12.00"}

    unrecorded = source.compute([second]).frame.iloc[0]
    source.record(source.compute([first]))
    recorded = source.compute([second]).frame.iloc[0]

    assert recorded.card_txn_count_1h == unrecorded.card_txn_count_1h + 1
    assert recorded.card_seconds_since_previous == 20 * 60


def test_preloading_the_store_changes_no_feature(platform: Platform):
    lazy = OnlineFeatures(platform.store, platform.registry, KEY)
    eager = OnlineFeatures(platform.store, platform.registry, KEY, preload=True)
    with duckdb.connect(str(platform.store), read_only=True) as conn:
        events = conn.execute("SELECT count(*) FROM curated.transactions").fetchone()[0]
    assert sum(len(card) for card in eager.state.cards.values()) == events
    assert lazy.state.cards == {}
    day = _transactions(platform.last_day)[:40]
    pd.testing.assert_frame_equal(lazy.compute(day).frame, eager.compute(day).frame)
    assert eager.preload() == 0  # nothing left to read


def test_fresh_state_is_rebuilt_from_logged_events_after_a_restart(platform: Platform):
    day = _transactions(platform.last_day)
    half = len(day) // 2
    running = OnlineFeatures(platform.store, platform.registry, KEY)
    logged = []
    for transaction in day[:half]:
        batch = running.compute([transaction])
        running.record(batch)
        logged += batch.events
    expected = running.compute(day[half : half + 20]).frame

    restarted = OnlineFeatures(platform.store, platform.registry, KEY)
    assert restarted.restore(logged) == half
    pd.testing.assert_frame_equal(restarted.compute(day[half : half + 20]).frame, expected)


def test_compiled_rules_and_curation_give_what_ingestions_sql_gives(platform: Platform):
    compiled = OnlineFeatures(platform.store, platform.registry, KEY)
    reference = OnlineFeatures(platform.store, platform.registry, KEY, compiled_rows=False)
    day = _transactions(platform.last_day)
    odd = {**day[0], "transaction_id": "odd", "merchant": "  Caf\u00e9 \u00a0", "amount": "7.125"}
    accents = {
        "merchant": "Nguy\u1ec5n & \u674e  Caf\u00e9",
        "city": "San Jos\u00e9",
        "first_name": "Zo\u00eb",
        "last_name": "\uae40",
    }
    accented = [
        {**t, **accents, "transaction_id": f"accented-{i}"} for i, t in enumerate(day[150:160])
    ]
    assert not any(compiled.compute([t]).fallbacks for t in accented[:1])
    for transaction in [*day[:150], odd, *accented]:
        a, b = compiled.compute([transaction]), reference.compute([transaction])
        pd.testing.assert_frame_equal(a.frame, b.frame, check_dtype=False)
        assert a.events == b.events and a.records == b.records


@pytest.mark.parametrize("compiled_rows", [True, False], ids=["compiled", "sql"])
@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"amount": "-5.0"}, "amount", "non_positive_amount"),
        ({"amount": "99999999"}, "amount", "amount_above_maximum"),
        ({"amount": None}, "amount", "missing_required_field"),
        ({"amount": "twelve"}, "amount", "unparsable_amount"),
        ({"event_time": "2031-01-01 10:00:00"}, "event_time", "event_time_in_future"),
        ({"event_time": "01/02/2025 10:00"}, "event_time", "unparsable_timestamp"),
        ({"card_number": " "}, "card_number", "missing_required_field"),
        ({"merchant_lat": "123.0"}, "merchant_lat", "invalid_value"),
        ({"amount": " 1e6"}, "amount", "amount_above_maximum"),  # trimmed, an exponent
        ({"amount": 150000}, "amount", "amount_above_maximum"),  # a JSON number
        ({"event_time": "2025-13-01 10:00:00"}, "event_time", "unparsable_timestamp"),
    ],
)
def test_a_transaction_ingestion_would_quarantine_is_refused_with_the_same_rule(
    platform: Platform, change: dict, field: str, rule: str, compiled_rows: bool
):
    source = OnlineFeatures(platform.store, platform.registry, KEY, compiled_rows=compiled_rows)
    good, bad = _transactions(platform.last_day.head(2))
    bad = {**bad, **change}
    with pytest.raises(InvalidTransactions) as refused:
        source.compute([good, bad])
    assert [(e.index, e.field, e.rule) for e in refused.value.errors] == [(1, field, rule)]
    assert good["card_number"] not in str(refused.value)


def test_a_request_repeating_a_transaction_id_is_refused(platform: Platform):
    source = OnlineFeatures(platform.store, platform.registry, KEY)
    first = _transactions(platform.last_day.head(1))[0]
    again = {**first, "amount": "3.00"}
    with pytest.raises(InvalidTransactions) as refused:
        source.compute([first, again])
    assert [(e.index, e.rule) for e in refused.value.errors] == [(1, "duplicate_id")]


def test_a_replaced_store_drops_the_fresh_events_it_now_holds(platform: Platform, tmp_path):
    store = tmp_path / "store.duckdb"
    store.write_bytes(platform.store.read_bytes())
    source = OnlineFeatures(store, platform.registry, KEY)
    first = _transactions(platform.last_day.head(1))[0]
    source.record(source.compute([first]))
    before = source.compute([{**first, "transaction_id": "probe"}]).frame.iloc[0]

    replaced = tmp_path / "next.duckdb"
    replaced.write_bytes(platform.warehouse.read_bytes())  # now holds the whole last day
    replaced.replace(store)
    assert source.refresh()
    after = source.compute([{**first, "transaction_id": "probe"}]).frame.iloc[0]
    # the first purchase is counted once (now from the store), not twice (store and fresh)
    assert after.card_txn_count_1h == before.card_txn_count_1h >= 2


def test_a_store_replaced_mid_replay_is_read_beside_the_requests_and_keeps_parity(
    platform: Platform, tmp_path
):
    """The store of the evening before, then the store of noon (the day's first half): read
    while a request holds the lock the service's requests take (scoring five transactions
    meanwhile), swapped in, and every feature of the day still equals the offline table's."""
    day = _transactions(platform.last_day)
    half = len(day) // 2
    store = tmp_path / "store.duckdb"
    store.write_bytes(platform.store.read_bytes())
    source = OnlineFeatures(store, platform.registry, KEY, preload=True)
    lock, frames = threading.Lock(), []

    def score(transaction: dict) -> None:
        batch = source.compute([transaction])
        source.record(batch)
        frames.append(batch.frame)

    for transaction in day[:half]:
        with lock:
            score(transaction)
    noon = tmp_path / "noon.duckdb"
    noon.write_bytes(platform.warehouse.read_bytes())
    with duckdb.connect(str(noon)) as conn:
        conn.execute(
            "DELETE FROM curated.transactions WHERE event_time > ?",
            [pd.Timestamp(day[half - 1]["event_time"]).to_pydatetime()],
        )
    noon.replace(store)

    loading, loaded, waited = threading.Event(), threading.Event(), []

    def a_request_during_the_load() -> None:
        with lock:
            loading.set()
            for transaction in day[half : half + 5]:
                score(transaction)
            waited.append(loaded.wait(timeout=300))  # the lock is held until the load ends

    request = threading.Thread(target=a_request_during_the_load)
    request.start()
    assert loading.wait(timeout=60)
    replaced = source.load_store()  # no lock: the request above holds it throughout
    loaded.set()
    request.join()
    assert waited == [True] and replaced is not None
    with lock:
        retired = source.swap(replaced)
    retired.close()
    for transaction in day[half + 5 :]:
        with lock:
            score(transaction)

    online = pd.DataFrame([row for frame in frames for row in frame.to_dict("records")])
    assert len(online) == len(day)
    _assert_same_features(
        online, _offline(platform, list(online.transaction_id)), platform.registry
    )
    assert not source.refresh()  # the same file: nothing to read again


def test_each_route_to_duckdb_is_taken_only_where_stated_and_logged_without_the_value(
    platform: Platform, caplog: pytest.LogCaptureFixture
):
    day = _transactions(platform.last_day)
    source = OnlineFeatures(platform.store, platform.registry, KEY)
    reference = OnlineFeatures(platform.store, platform.registry, KEY, compiled_rows=False)

    with caplog.at_level(logging.INFO, logger="mlplatform.serving.online"):
        plain = source.compute(day[:40])
        accented = source.compute([{**day[40], "city": "Espa\u00f1ola", "first_name": "Zo\u00eb"}])
        spaced = source.compute(
            [{**day[41], "city": "Espa\u00f1ola\u00a0", "amount": " 12.5\u3000"}]
        )
        cased = source.compute([{**day[42], "job": "Ingenier\u00eda", "category": "Caf\u00e9"}])
        underscored = source.compute([{**day[43], "amount": "1_000"}])
        sql = reference.compute(day[:1])

    # Python's route throughout for plain rows, accented ones, text with Unicode spaces
    # around it and case mapping beyond ASCII (trim(), lower() and upper() are DuckDB's
    # exactly). DuckDB's route for the rows of a number in a form only DuckDB reads.
    assert plain.fallbacks == () and accented.fallbacks == ()
    assert spaced.fallbacks == () and cased.fallbacks == ()
    reason = "a number that is not plain decimal text (as DOUBLE)"
    assert underscored.fallbacks == (("rows", reason),)
    assert sql.fallbacks == (("rows", "rules and curation not compiled (compiled_rows=False)"),)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2, logged  # one line per fallback, none for Python's route
    assert f"1 transaction(s): rows on DuckDB's route ({reason})" in logged[0]
    assert not any("1_000" in line for line in logged)  # never the value


def _no_log(since: object) -> list[dict]:
    return []


def test_two_processes_sharing_redis_replay_a_day_with_exactly_its_offline_features(
    platform: Platform, redis_service: RedisServer
):
    """Two feature sources sharing one Redis (as two service processes do), taking the day's
    transactions alternately: each sees the other's, and every feature equals the offline
    table's, as with one process."""
    url = redis_service.url
    first = OnlineFeatures(platform.store, platform.registry, KEY, online_state=url)
    second = OnlineFeatures(platform.store, platform.registry, KEY, online_state=url)
    published = first.sync_shared(_no_log)
    with duckdb.connect(str(platform.store), read_only=True) as conn:
        cards = conn.execute("SELECT count(DISTINCT card_id) FROM curated.transactions")
        assert published is not None and published.cards == cards.fetchone()[0]
    assert second.sync_shared(_no_log) is None  # this store is in Redis already
    frames = []
    for i, transaction in enumerate(_transactions(platform.last_day)):
        source = (first, second)[i % 2]
        batch = source.compute([transaction])
        assert source.record(batch)
        frames.append(batch.frame)
    online = pd.DataFrame([row for frame in frames for row in frame.to_dict("records")])
    assert len(online) == len(platform.last_day) > 100
    _assert_same_features(
        online, _offline(platform, list(online.transaction_id)), platform.registry
    )


def test_a_card_changed_since_its_read_is_not_written_and_counted_once_when_computed_again(
    platform: Platform, redis_service: RedisServer
):
    url = redis_service.url
    a = OnlineFeatures(platform.store, platform.registry, KEY, online_state=url)
    b = OnlineFeatures(platform.store, platform.registry, KEY, online_state=url)
    a.sync_shared(_no_log)
    first = _transactions(platform.last_day.head(1))[0]
    later = str(pd.Timestamp(first["event_time"]) + pd.Timedelta(minutes=20))
    second = {**first, "transaction_id": "second", "event_time": later}
    read_by_a, read_by_b = a.compute([first]), b.compute([second])  # at the same moment
    assert a.record(read_by_a)
    assert not b.record(read_by_b)  # its read is stale: nothing of it written
    again = b.compute([second])
    assert b.record(again)
    assert again.frame.card_txn_count_1h[0] == read_by_b.frame.card_txn_count_1h[0] + 1
    probe = {**first, "transaction_id": "probe", "event_time": later}
    memory = OnlineFeatures(platform.store, platform.registry, KEY)
    for transaction in (first, second):
        memory.record(memory.compute([transaction]))
    pd.testing.assert_frame_equal(a.compute([probe]).frame, memory.compute([probe]).frame)


def test_a_store_published_while_requests_go_on_keeps_every_scored_transaction_once(
    platform: Platform, redis_service: RedisServer, tmp_path: Path
):
    """The evening store, then the day's warehouse as the next store, published while another
    process scores: the transactions the new store holds are not carried, the others are
    (those scored before the publish and those scored during it), and the old version's keys
    are deleted."""
    url = redis_service.url
    store = tmp_path / "store.duckdb"
    store.write_bytes(platform.store.read_bytes())
    publisher = OnlineFeatures(store, platform.registry, KEY, online_state=url)
    scorer = OnlineFeatures(platform.store, platform.registry, KEY, online_state=url)
    memory = OnlineFeatures(platform.warehouse, platform.registry, KEY)
    old = publisher.sync_shared(_no_log)
    day = _transactions(platform.last_day)
    end = pd.Timestamp(day[-1]["event_time"])
    # Purchases after the day's last one: no store holds them.
    extra = [
        {**t, "transaction_id": f"after-{i}", "event_time": str(end + pd.Timedelta(minutes=i + 1))}
        for i, t in enumerate(day[:30])
    ]
    for transaction in [*day[:20], *extra[:10]]:
        assert scorer.record(scorer.compute([transaction]))
    for transaction in extra:
        memory.record(memory.compute([transaction]))

    def score_during_the_publish() -> None:
        for transaction in extra[10:]:
            batch = scorer.compute([transaction])
            while not scorer.record(batch):
                batch = scorer.compute([transaction])

    thread = threading.Thread(target=score_during_the_publish)
    (tmp_path / "next.duckdb").write_bytes(platform.warehouse.read_bytes())
    (tmp_path / "next.duckdb").replace(store)
    assert publisher.refresh()
    thread.start()
    new = publisher.sync_shared(_no_log)
    thread.join()
    assert old is not None and new is not None and new.version != old.version
    assert 10 <= new.carried <= 30  # the extra ones scored before it, and some during it
    shared = publisher.shared
    assert shared.redis.keys(shared.key(old.version, "*")) == []
    assert shared.redis.get(shared.key(new.version, "meta")) is not None
    probes = [{**t, "transaction_id": f"probe-{i}"} for i, t in enumerate(extra)]
    for probe in probes:  # every extra purchase counted once: as one process counts them
        pd.testing.assert_frame_equal(scorer.compute([probe]).frame, memory.compute([probe]).frame)

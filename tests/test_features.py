"""The feature store: point in time, offline/online parity, the registry and a thin contract."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import START, insert_curated, load_warehouse

from mlplatform.contract import load_contract
from mlplatform.datagen import SimulationConfig, simulate
from mlplatform.features import derived
from mlplatform.features.declarations import (
    INPUT_COLUMNS,
    Aggregation,
    Derived,
    Feature,
    UnsupportedAggregation,
    Window,
    feature_registry,
)
from mlplatform.features.offline import (
    TABLE,
    build_card_features,
    collapsible_days,
    context_events,
    online_features,
)
from mlplatform.settings import DEFAULT_CONTRACT, Settings
from mlplatform.warehouse.connection import connect

DAYS = 50
SETTINGS = Settings(home=Path("/nonexistent"))
REGISTRY = feature_registry(SETTINGS, load_contract(DEFAULT_CONTRACT))
FEATURES = [f.name for f in REGISTRY.enabled]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 simulated days, curated, plus same-second twins; features built for all days."""
    root = tmp_path_factory.mktemp("features")
    config = SimulationConfig(n_cards=120, days=DAYS, start_date=START, seed=11)
    simulate(config, root / "landing")
    path = root / "warehouse.duckdb"
    load_warehouse(root / "landing", path)
    with connect(path) as conn:
        # Events at the same second as another of the card's (a split payment), which the
        # simulator does not produce: the previous-transaction order must still be fixed.
        conn.execute(
            """INSERT INTO curated.transactions
               SELECT * REPLACE (transaction_id || '-twin' AS transaction_id,
                                 round(amount / 3, 2) AS amount)
               FROM curated.transactions USING SAMPLE 40 ROWS (reservoir, 3)"""
        )
        build_card_features(conn, REGISTRY, START, START + timedelta(days=DAYS - 1))
    return path


def _offline(conn: duckdb.DuckDBPyConnection, ids: list[str]) -> pd.DataFrame:
    return (
        conn.execute(f"SELECT * FROM {TABLE} WHERE transaction_id IN ?", [ids])
        .df()
        .set_index("transaction_id")
    )


def _same(a: object, b: object) -> bool:
    """Equal to the last bit, missing equal to missing."""
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT for v in (a, b)]
    if any(missing):
        return all(missing)
    return a == b


def _sample_ids(conn: duckdb.DuckDBPyConnection, n: int) -> list[str]:
    """Random transactions plus each kind of edge: a card's first, a same-second twin and its
    original, the first and last second of a day."""
    edges = conn.execute(
        f"""SELECT transaction_id FROM (
                SELECT transaction_id FROM {TABLE} QUALIFY row_number() OVER (
                    PARTITION BY card_id ORDER BY event_time, transaction_id) = 1 LIMIT 3)
            UNION ALL SELECT * FROM (SELECT transaction_id FROM {TABLE}
                WHERE transaction_id LIKE '%-twin' LIMIT 3)
            UNION ALL SELECT * FROM (SELECT replace(transaction_id, '-twin', '') FROM {TABLE}
                WHERE transaction_id LIKE '%-twin' LIMIT 3)
            UNION ALL SELECT * FROM (SELECT transaction_id FROM {TABLE}
                ORDER BY event_time::TIME, transaction_id LIMIT 2)
            UNION ALL SELECT * FROM (SELECT transaction_id FROM {TABLE}
                ORDER BY event_time::TIME DESC, transaction_id LIMIT 2)"""
    ).fetchall()
    everything = [row[0] for row in conn.execute(
        f"SELECT transaction_id FROM {TABLE} WHERE partition_date >= ? ORDER BY 1",
        [START + timedelta(days=30)],
    ).fetchall()]  # fmt: skip
    return sorted({row[0] for row in edges} | set(random.Random(5).sample(everything, n)))


def test_one_row_per_curated_transaction_with_every_enabled_feature(warehouse: Path) -> None:
    with connect(warehouse) as conn:
        rows, distinct, curated = conn.execute(
            f"""SELECT count(*), count(DISTINCT transaction_id),
                       (SELECT count(*) FROM curated.transactions) FROM {TABLE}"""
        ).fetchone()
        columns = [d[0] for d in conn.execute(f"SELECT * FROM {TABLE} LIMIT 0").description]
    assert rows == distinct == curated
    assert columns[4:] == FEATURES
    assert REGISTRY.disabled == ()


def test_features_use_only_events_at_or_before_the_transaction(
    warehouse: Path, tmp_path: Path
) -> None:
    """Delete every later event, rebuild that day: the row is identical, to the last bit."""
    with connect(warehouse, read_only=True) as source:
        ids = _sample_ids(source, 12)
        expected = _offline(source, ids)
        curated = source.execute("SELECT * FROM curated.transactions").df()
    for transaction_id, row in expected.iterrows():
        path = tmp_path / f"{transaction_id}.duckdb"
        with connect(path) as conn:
            # Same second included: "at or before".
            conn.register("earlier", curated[curated.event_time <= row.event_time])
            conn.execute("INSERT INTO curated.transactions SELECT * FROM earlier")
            day = row.event_time.date()
            build_card_features(conn, REGISTRY, day, day)
            truncated = _offline(conn, [transaction_id]).iloc[0]
        different = [f for f in FEATURES if not _same(truncated[f], row[f])]
        assert not different, (transaction_id, {f: (truncated[f], row[f]) for f in different})
        path.unlink()


def test_a_later_event_never_changes_an_earlier_row(warehouse: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.duckdb"
    shutil.copy(warehouse, copy)
    last = START + timedelta(days=DAYS - 1)
    with connect(copy) as conn:
        before = conn.execute(f"SELECT * FROM {TABLE} ORDER BY transaction_id").df()
        # A big purchase of every card at its usual merchant, at the last day's first second.
        conn.execute(
            """INSERT INTO curated.transactions
               SELECT * REPLACE (transaction_id || '-late' AS transaction_id,
                   $t AS event_time, $day AS partition_date, amount * 50 AS amount,
                   1 AS label)
               FROM curated.transactions QUALIFY row_number() OVER (
                   PARTITION BY card_id ORDER BY event_time DESC) = 1""",
            {"t": pd.Timestamp(last), "day": last},
        )
        build_card_features(conn, REGISTRY, START, last)
        after = conn.execute(
            f"SELECT * FROM {TABLE} WHERE transaction_id NOT LIKE '%-late' ORDER BY transaction_id"
        ).df()
        late = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE transaction_id LIKE '%-late'")
        assert late.fetchone()[0] == 120
    earlier = before.event_time < pd.Timestamp(last)
    pd.testing.assert_frame_equal(before[earlier], after[earlier.to_numpy()])


def test_a_build_leaves_the_connections_settings_as_it_found_them(
    warehouse: Path, tmp_path: Path
) -> None:
    """The build inserts without preserving order (parallel writes), then restores the setting;
    rebuilding a day gives the same rows."""
    copy = tmp_path / "copy.duckdb"
    shutil.copy(warehouse, copy)
    day = START + timedelta(days=DAYS - 1)
    query = f"SELECT * FROM {TABLE} WHERE partition_date = ? ORDER BY transaction_id"
    with connect(copy) as conn:
        before = conn.execute(query, [day]).df()
        for preserve in (True, False):
            conn.execute(f"SET preserve_insertion_order = {preserve}")
            build_card_features(conn, REGISTRY, day, day)
            setting = conn.execute("SELECT current_setting('preserve_insertion_order')")
            assert setting.fetchone()[0] is preserve
        after = conn.execute(query, [day]).df()
    pd.testing.assert_frame_equal(before, after)


def test_a_daily_build_collapses_its_lookback_and_equals_the_full_build(
    warehouse: Path, tmp_path: Path
) -> None:
    """The last day alone: the days without its rows or a frame boundary of them become
    blocks (a few rows per card instead of every event); every row equals the full build's."""
    copy = tmp_path / "copy.duckdb"
    shutil.copy(warehouse, copy)
    last = START + timedelta(days=DAYS - 1)
    epoch = date(1970, 1, 1)
    with connect(copy) as conn:
        blocks = collapsible_days(
            conn, REGISTRY, "curated.transactions", "partition_date = $day", {"day": last}
        )
        kept = {(last - epoch).days - before for before in REGISTRY.boundary_days}
        data_days = {(START - epoch).days + offset for offset in range(DAYS)}
        assert set(blocks) == data_days - kept
        assert len(set(blocks.values())) == 4  # before day -30, then up to -14, -7 and -1
        everything = "partition_date BETWEEN $start AND $end"
        assert not collapsible_days(
            conn, REGISTRY, "curated.transactions", everything, {"start": START, "end": last}
        )
        query = f"SELECT * FROM {TABLE} WHERE partition_date = ? ORDER BY transaction_id"
        before = conn.execute(query, [last]).df()
        build_card_features(conn, REGISTRY, last, last)
        after = conn.execute(query, [last]).df()
    pd.testing.assert_frame_equal(before, after)


def test_online_features_equal_offline_exactly(warehouse: Path) -> None:
    with connect(warehouse, read_only=True) as conn:
        ids = _sample_ids(conn, 40)
        offline = _offline(conn, ids)
        rows = (
            conn.execute(
                f"SELECT {', '.join(INPUT_COLUMNS)} FROM curated.transactions "
                "WHERE transaction_id IN ?",
                [ids],
            )
            .df()
            .set_index("transaction_id", drop=False)
        )
        for transaction_id in ids:
            new = rows.loc[transaction_id].to_dict()
            history = context_events(
                conn, REGISTRY, new["card_id"], new["merchant"], new["event_time"],
                exclude_transaction_id=transaction_id,
            )  # fmt: skip
            online = online_features(REGISTRY, history, new)
            assert list(online) == FEATURES
            different = {
                f: (online[f], offline.at[transaction_id, f])
                for f in FEATURES
                if not _same(online[f], offline.at[transaction_id, f])
            }
            assert not different, (transaction_id, different)


def test_first_transaction_of_a_card_has_no_history(warehouse: Path) -> None:
    with connect(warehouse, read_only=True) as conn:
        first = (
            conn.execute(
                f"""SELECT * FROM {TABLE} QUALIFY row_number() OVER (
                    PARTITION BY card_id ORDER BY event_time, transaction_id) = 1 LIMIT 1"""
            )
            .df()
            .iloc[0]
        )
    assert first.card_txn_count_30d == 1 and first.card_amount_sum_30d == first.amount
    assert pd.isna(first.card_seconds_since_previous) and pd.isna(first.card_km_from_previous)
    assert first.card_history_days == 0 and first.card_merchant_is_new


def test_window_aggregates_match_a_brute_force_recount(warehouse: Path) -> None:
    """Count, sum, max over [T - w, T] recomputed row by row with plain Python."""
    with connect(warehouse, read_only=True) as conn:
        ids = _sample_ids(conn, 25)
        offline = _offline(conn, ids)
        events = conn.execute("SELECT card_id, event_time, amount FROM curated.transactions").df()
    for transaction_id, row in offline.iterrows():
        card = events[events.card_id == row.card_id]
        for label, span in {"1h": timedelta(hours=1), "7d": timedelta(days=7),
                            "30d": timedelta(days=30)}.items():  # fmt: skip
            window = card[(card.event_time >= row.event_time - span)
                          & (card.event_time <= row.event_time)]  # fmt: skip
            assert row[f"card_txn_count_{label}"] == len(window), transaction_id
            assert row[f"card_amount_sum_{label}"] == pytest.approx(window.amount.sum(), abs=1e-6)
            assert row[f"card_amount_max_{label}"] == window.amount.max()


def test_merchant_risk_never_uses_an_immature_label(tmp_path: Path) -> None:
    """A positive at a merchant counts only from the day after it is label_delay days old."""
    delay = SETTINGS.label_delay_days
    day0 = date(2025, 3, 1)
    rows = [("positive", pd.Timestamp(day0) + pd.Timedelta("23:59:59"), 1)]
    for offset in range(0, delay + 3):  # one probe transaction per day, at 00:00:01
        stamp = pd.Timestamp(day0 + timedelta(days=offset)) + pd.Timedelta(seconds=1)
        rows.append((f"probe-{offset}", stamp, 0))
    probes = pd.DataFrame(
        [{**dict.fromkeys(INPUT_COLUMNS), "transaction_id": i, "event_time": t, "label": y,
          "partition_date": t.date(), "card_id": i, "merchant": "m1", "amount": 10.0,
          "hour": t.hour, "weekday": t.isoweekday(), "is_weekend": t.isoweekday() >= 6}
         for i, t, y in rows]
    )  # fmt: skip
    with connect(tmp_path / "w.duckdb") as conn:
        insert_curated(conn, probes)
        build_card_features(conn, REGISTRY, day0, day0 + timedelta(days=delay + 2))
        counts = dict(
            conn.execute(
                f"SELECT transaction_id, merchant_positive_count_30d FROM {TABLE} "
                "WHERE transaction_id LIKE 'probe-%'"
            ).fetchall()
        )
    for offset in range(0, delay + 3):
        assert counts[f"probe-{offset}"] == (1 if offset >= delay + 1 else 0), offset


def test_a_thin_contract_switches_features_off_and_still_builds(tmp_path: Path) -> None:
    """Only id, time, card, merchant, amount and a 0/1 label: the rest is off, not a crash."""
    landing = tmp_path / "landing"
    simulate(SimulationConfig(n_cards=40, days=12, start_date=START, seed=3), tmp_path / "sim")
    landing.mkdir()
    for path in sorted((tmp_path / "sim").glob("transactions_*.csv")):
        frame = pd.read_csv(path, dtype=str)
        frame[["trans_num", "trans_date_trans_time", "cc_num", "merchant", "amt", "is_fraud"]]\
            .set_axis(["TX_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT",
                       "TX_FRAUD"], axis=1).to_csv(landing / path.name, index=False)  # fmt: skip
    contract_path = tmp_path / "thin.yaml"
    contract_path.write_text(
        "name: thin\ncolumns:\n  transaction_id: TX_ID\n  event_time: TX_DATETIME\n"
        "  card_number: CUSTOMER_ID\n  merchant: TERMINAL_ID\n  amount: TX_AMOUNT\n"
        "  label: TX_FRAUD\ntarget: label\n"
    )
    registry = feature_registry(SETTINGS, load_contract(contract_path))
    off = {f.name for f in registry.disabled}
    assert {
        "category",
        "gender",
        "age",
        "credit_limit",
        "home_merchant_km",
        "card_km_from_previous",
        "card_disc_share_14d",
        "card_category_share_30d",
    } <= off
    assert {"amount", "card_txn_count_24h", "card_merchant_is_new",
            "merchant_positive_rate_7d"} <= {f.name for f in registry.enabled}  # fmt: skip
    assert all(row["status"].startswith("off: needs") for row in registry.describe()
               if row["feature"] in off)  # fmt: skip
    path = tmp_path / "warehouse.duckdb"
    load_warehouse(landing, path, contract_path)
    with connect(path) as conn:
        result = build_card_features(conn, registry, START, START + timedelta(days=11))
        columns = [d[0] for d in conn.execute(f"SELECT * FROM {TABLE} LIMIT 0").description]
    assert result.rows == result.curated_rows > 0
    assert not off & set(columns)


def test_a_declaration_neither_engine_can_run_is_refused_naming_it() -> None:
    day = timedelta(days=1)
    card, merchant = Window(("card_id",), 7 * day), Window(("merchant",), day, daily=True)
    refused = {
        "median() over a framed window": lambda: Aggregation("median", "amount", card),
        "max() over a daily window": lambda: Aggregation("max", "label", merchant),
        "previous() needs a sequence window": lambda: Aggregation("previous", "amount", card),
        "a sequence window takes previous() only": lambda: Aggregation(
            "sum", "amount_exact", Window(("card_id",), None)
        ),
        "framed windows are per card": lambda: Aggregation(
            "sum", "amount_exact", Window(("merchant",), day)
        ),
        "a framed count() counts events": lambda: Aggregation("count", "label", card),
        "the input column of its name": lambda: Feature("x", None, "BIGINT", "?"),
        "with that column's type": lambda: Feature("amount", None, "BIGINT", "?"),
        "a derived feature needs a function": lambda: Feature(
            "x", Derived("levenshtein(category, 'food')", ("category",)), "BIGINT", "?"
        ),
        "a derived feature is one of DOUBLE": lambda: Feature(
            "x", Derived(derived.ratio, ("amount", "amount")), "VARCHAR", "?"
        ),
        "declare a function or an aggregation": lambda: Feature(
            "x",
            Derived(derived.ratio, ("amount", "amount")),
            "DOUBLE",
            "?",
            aggregation=Aggregation("max", "amount", card),
        ),
        "only an aggregation can be internal": lambda: Feature(
            "x", Derived(derived.ratio, ("amount", "amount")), "DOUBLE", "?", output=False
        ),
    }
    for message, declare in refused.items():
        with pytest.raises(UnsupportedAggregation, match=re.escape(message)):
            declare()
    # A feature reading an internal aggregate that the contract switches off.
    internal = Feature("card_merchant_count_7d", None, None, "?", output=False,
                       aggregation=Aggregation("count", "event_count",
                                               Window(("card_id", "merchant"), 7 * day)),
                       requires=("merchant",))  # fmt: skip
    repeat = Derived(derived.is_zero, ("card_merchant_count_7d",))
    reader = Feature("card_merchant_repeat_7d", repeat, "BOOLEAN", "?")
    with pytest.raises(UnsupportedAggregation, match="card_merchant_repeat_7d reads card_merch"):
        dataclasses.replace(REGISTRY, features=(internal, reader), available=frozenset())


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (("amount", "no_such_column"), "x reads no_such_column: not an input column"),
        (("card_previous_event",), "x reads card_previous_event: not an input column"),
        (("card_previous_event.no_field",), "x reads card_previous_event.no_field: not an"),
        (("partition_date",), "x reads partition_date: not an input column"),
        (("amount", "card_amount_zscore_30d"), "x reads card_amount_zscore_30d: declare it after"),
    ],
)
def test_a_derived_feature_reading_what_no_engine_has_is_refused_at_load(
    inputs: tuple[str, ...], message: str
) -> None:
    """The registry refuses, naming the feature, an input that is neither an input column,
    a feature declared before it nor a field of a struct aggregate (or of a type no derived
    function takes: a date, a whole struct)."""
    x = Feature("x", Derived(derived.ratio, inputs), "DOUBLE", "?")
    with pytest.raises(UnsupportedAggregation, match=re.escape(message)):
        dataclasses.replace(REGISTRY, features=(x, *REGISTRY.features))

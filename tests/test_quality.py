"""Tests for mlplatform.ingestion.quality, against real Great Expectations (no mocks)."""

from __future__ import annotations

import json
import threading
import time
import warnings
from datetime import date, datetime

import great_expectations as gx
import pandas as pd
import pytest

from mlplatform.ingestion import quality
from mlplatform.ingestion.quality import (
    ExpectationOutcome,
    QualityReport,
    Rule,
    transaction_rules,
    validate_frame,
)

DAY = date(2024, 3, 10)
CATEGORIES = ["food_dining", "gas_transport", "grocery_pos", "shopping_net"]
CARDS = ["a1b2c3d4", "e5f6a7b8", "c9d0e1f2"]
MAX_AMOUNT = 10_000.0
COLUMNS = [
    "transaction_id",
    "event_time",
    "partition_date",
    "card_id",
    "merchant",
    "category",
    "amount",
    "gender",
    "city",
    "state",
    "zip",
    "job",
    "city_pop",
    "birth_year",
    "home_lat",
    "home_long",
    "merchant_lat",
    "merchant_long",
    "label",
    "source_file",
    "source_line",
]
REQUIRED = ["transaction_id", "event_time", "card_id", "amount"]


def clean_frame(n: int = 6) -> pd.DataFrame:
    """A small frame shaped like the warehouse transactions table that passes every rule."""
    times = pd.date_range(f"{DAY} 00:00:00", periods=n, freq="3h")
    return pd.DataFrame(
        {
            "transaction_id": pd.Series([f"t{i:04d}" for i in range(n)], dtype=object),
            "event_time": pd.Series(times).astype("datetime64[us]"),
            "partition_date": [DAY] * n,
            "card_id": [CARDS[i % len(CARDS)] for i in range(n)],
            "merchant": [f"merchant_{i}" for i in range(n)],
            "category": [CATEGORIES[i % len(CATEGORIES)] for i in range(n)],
            "amount": pd.Series([12.5 + i for i in range(n)], dtype="float64"),
            "gender": ["F", "M"] * (n // 2) + ["F"] * (n % 2),
            "city": ["Springfield"] * n,
            "state": ["IL"] * n,
            "zip": ["62701"] * n,
            "job": ["Engineer"] * n,
            "city_pop": pd.array([116_250] * n, dtype="Int64"),
            "birth_year": pd.array([1980 + i for i in range(n)], dtype="Int64"),
            "home_lat": [39.78] * n,
            "home_long": [-89.65] * n,
            "merchant_lat": [39.8] * n,
            "merchant_long": [-89.6] * n,
            "label": pd.array([pd.NA] * n, dtype="Int64"),  # nullable, may be all-null
            "source_file": ["2024-03-10.csv"] * n,
            "source_line": pd.Series(range(2, n + 2), dtype="int64"),
        }
    )


def rules(**overrides: object) -> list[Rule]:
    kwargs: dict[str, object] = {
        "columns": COLUMNS,
        "required": REQUIRED,
        "partition_date": DAY,
        "known_categories": CATEGORIES,
        "max_amount": MAX_AMOUNT,
        "reference_card_ids": CARDS,
        "expected_row_count": 6,
    }
    kwargs.update(overrides)
    return transaction_rules(**kwargs)  # type: ignore[arg-type]


def only_failure(report: QualityReport) -> ExpectationOutcome:
    assert len(report.failures) == 1, report.to_markdown()
    return report.failures[0]


def test_clean_frame_passes_every_rule() -> None:
    report = validate_frame(clean_frame(), "transactions", rules())
    assert report.passed, report.to_markdown()
    assert report.failures == ()
    assert report.suite == "transactions"
    ids = [o.rule for o in report.outcomes]
    assert ids == [
        "schema",
        "transaction_id_not_null",
        "event_time_not_null",
        "card_id_not_null",
        "amount_not_null",
        "transaction_id_unique",
        "amount_range",
        "event_time_in_partition",
        "category_known",
        "card_in_reference",
        "row_count",
    ]
    for o in report.outcomes:
        assert o.element_count == 6
        assert o.unexpected_count == 0
        assert o.examples == ()
    unique = report.outcome("transaction_id_unique")
    assert unique.expectation == "expect_column_values_to_be_unique(column='transaction_id')"


def test_optional_rules_are_omitted() -> None:
    ids = [
        r.rule
        for r in rules(known_categories=None, reference_card_ids=None, expected_row_count=None)
    ]
    assert "category_known" not in ids
    assert "card_in_reference" not in ids
    assert "row_count" not in ids
    assert ids[0] == "schema"


def test_duplicate_ids_fail_uniqueness() -> None:
    df = clean_frame()
    df.loc[3, "transaction_id"] = "t0001"
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "transaction_id_unique"
    assert failure.unexpected_count == 2
    assert failure.examples == ("t0001",)


def test_event_time_upper_bound_is_exclusive() -> None:
    df = clean_frame()
    df.loc[1, "event_time"] = pd.Timestamp(f"{DAY} 23:59:59.999")
    df.loc[2, "event_time"] = pd.Timestamp(f"{DAY} 23:59:59.999999")
    df.loc[3, "event_time"] = pd.Timestamp(f"{DAY} 00:00:00")
    assert df["event_time"].dtype == "datetime64[us]"
    assert validate_frame(df, "t", rules()).passed

    df.loc[4, "event_time"] = pd.Timestamp("2024-03-11 00:00:00")
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "event_time_in_partition"
    assert failure.unexpected_count == 1
    assert failure.examples == ("2024-03-11T00:00:00",)


def test_event_time_before_partition_fails() -> None:
    df = clean_frame()
    df.loc[0, "event_time"] = pd.Timestamp(f"{DAY} 00:00:00") - pd.Timedelta(microseconds=1)
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "event_time_in_partition"
    assert failure.unexpected_count == 1


@pytest.mark.parametrize(
    ("amount", "passes"),
    [(0.0, False), (-5.0, False), (0.01, True), (MAX_AMOUNT, True), (MAX_AMOUNT + 0.01, False)],
)
def test_amount_range(amount: float, passes: bool) -> None:
    df = clean_frame()
    df.loc[2, "amount"] = amount
    report = validate_frame(df, "t", rules())
    if passes:
        assert report.passed, report.to_markdown()
    else:
        failure = only_failure(report)
        assert failure.rule == "amount_range"
        assert failure.unexpected_count == 1
        assert failure.examples == (str(amount),)


def test_unknown_category_fails() -> None:
    df = clean_frame()
    df.loc[[1, 4], "category"] = "crypto"
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "category_known"
    assert failure.unexpected_count == 2
    assert failure.examples == ("crypto",)


def test_card_not_in_reference_fails() -> None:
    df = clean_frame()
    df.loc[5, "card_id"] = "deadbeef"
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "card_in_reference"
    assert failure.unexpected_count == 1
    assert failure.examples == ("deadbeef",)


@pytest.mark.parametrize("expected", [5, 7])
def test_row_count_off_by_one_fails(expected: int) -> None:
    failure = only_failure(validate_frame(clean_frame(), "t", rules(expected_row_count=expected)))
    assert failure.rule == "row_count"
    assert failure.unexpected_count == 1
    assert failure.examples == ("observed: 6",)


def test_missing_column_fails_schema() -> None:
    df = clean_frame().drop(columns=["job"])
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "schema"
    assert failure.unexpected_count == 1
    assert failure.examples == ("missing: job",)


def test_extra_column_fails_schema() -> None:
    df = clean_frame().assign(extra=1)
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "schema"
    assert failure.unexpected_count == 1
    assert failure.examples == ("unexpected: extra",)


def test_column_order_does_not_matter_for_schema() -> None:
    df = clean_frame()
    assert validate_frame(df[list(reversed(df.columns))], "t", rules()).passed


def test_null_in_required_column_fails_not_null() -> None:
    df = clean_frame()
    df.loc[2, "card_id"] = None
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "card_id_not_null"
    assert failure.unexpected_count == 1
    assert failure.examples == ("null",)


def test_all_null_nullable_column() -> None:
    df = clean_frame()  # label is all-null Int64
    report = validate_frame(df, "t", rules(required=[*REQUIRED, "label"]))
    failure = only_failure(report)
    assert failure.rule == "label_not_null"
    assert failure.unexpected_count == 6
    assert failure.examples == ("null",)


def test_missing_column_used_by_a_rule_is_reported_not_raised() -> None:
    df = clean_frame().drop(columns=["category"])
    report = validate_frame(df, "t", rules())
    assert {o.rule for o in report.failures} == {"schema", "category_known"}
    category = report.outcome("category_known")
    assert category.examples[0].startswith("error: ")
    assert "category" in category.examples[0]


def test_empty_frame() -> None:
    df = clean_frame().iloc[0:0]
    report = validate_frame(df, "t", rules(expected_row_count=0))
    assert report.passed, report.to_markdown()
    assert all(o.element_count == 0 for o in report.outcomes)


def test_report_metadata_is_json_serialisable_and_markdown_lists_failures_first() -> None:
    df = clean_frame()
    df.loc[0, "amount"] = 0.0
    df.loc[1, "event_time"] = pd.Timestamp("2024-03-11 00:00:00")
    report = validate_frame(df, "raw_transactions", rules())
    meta = report.to_metadata()
    round_trip = json.loads(json.dumps(meta))
    assert round_trip["passed"] is False
    assert round_trip["suite"] == "raw_transactions"
    assert round_trip["failed_rules"] == ["amount_range", "event_time_in_partition"]
    assert len(round_trip["outcomes"]) == len(report.outcomes)
    assert set(round_trip["outcomes"][0]) == {
        "rule",
        "expectation",
        "success",
        "element_count",
        "unexpected_count",
        "examples",
    }
    table = report.to_markdown()
    print(table)
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert rows[0].startswith("| FAIL | `amount_range`")
    assert rows[1].startswith("| FAIL | `event_time_in_partition`")
    assert all(r.startswith("| PASS") for r in rows[2:])


def test_expectation_strings_are_readable() -> None:
    by_id = {r.rule: quality._describe(r.expectation) for r in rules()}
    # GX leaves kwargs at their default out of the configuration (exact_match defaults to True).
    assert by_id["schema"] == "expect_table_columns_to_match_set(column_set=<21 values>)"
    assert by_id["event_time_in_partition"] == (
        "expect_column_values_to_be_between(column='event_time', "
        "min_value='2024-03-10T00:00:00', max_value='2024-03-11T00:00:00', strict_max=True)"
    )
    assert by_id["card_in_reference"] == (
        "expect_column_values_to_be_in_set(column='card_id', "
        "value_set=['a1b2c3d4', 'e5f6a7b8', 'c9d0e1f2'])"
    )


def test_custom_rules_and_duplicate_ids() -> None:
    rule = Rule(
        "amount_mean", gx.expectations.ExpectColumnMeanToBeBetween(column="amount", max_value=1)
    )
    report = validate_frame(clean_frame(), "custom", [rule])
    failure = only_failure(report)
    assert failure.unexpected_count == 1
    assert failure.examples == ("observed: 15.0",)
    with pytest.raises(ValueError, match="duplicate rule ids"):
        validate_frame(clean_frame(), "custom", [rule, rule])
    assert validate_frame(clean_frame(), "empty", []).passed


def test_repeated_calls_reuse_the_context_and_rules() -> None:
    shared_rules = rules()
    validate_frame(clean_frame(), "first", shared_rules)
    runtime = quality._runtime()

    bad = clean_frame()
    bad.loc[0, "category"] = "crypto"
    start = time.perf_counter()
    second = validate_frame(bad, "second", shared_rules)
    elapsed = time.perf_counter() - start
    print(f"\nsecond validate_frame call on a 6-row frame: {elapsed * 1000:.1f} ms")

    assert quality._runtime() is runtime
    assert [o.rule for o in second.failures] == ["category_known"]
    # Same Rule objects again, with a clean frame: no stale state from the previous call.
    assert validate_frame(clean_frame(), "third", shared_rules).passed
    # The caller's expectations are not mutated (GX suites take ownership of what they get).
    assert all(r.expectation.id is None and not r.expectation.meta for r in shared_rules)


def test_concurrent_calls_do_not_mix_frames() -> None:
    shared_rules = rules()
    bad = clean_frame()
    bad.loc[0, "card_id"] = "deadbeef"
    results: dict[str, list[bool]] = {"good": [], "bad": []}

    def work(name: str, df: pd.DataFrame) -> None:
        for _ in range(3):
            results[name].append(validate_frame(df, name, shared_rules).passed)

    threads = [
        threading.Thread(target=work, args=("good", clean_frame())),
        threading.Thread(target=work, args=("bad", bad)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"good": [True] * 3, "bad": [False] * 3}


def test_caller_frame_is_not_modified() -> None:
    df = clean_frame()
    before = df.copy()
    validate_frame(df, "t", rules())
    assert df["event_time"].dtype == "datetime64[us]"
    pd.testing.assert_frame_equal(df, before)


def test_slice_of_a_frame_validates_without_pandas_warnings() -> None:
    df = clean_frame(12)
    part = df[df["amount"] < 18.5]  # rows 0..5, a filtered slice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_frame(part, "t", rules()).passed


def test_event_time_outside_the_nanosecond_range_still_fails_cleanly() -> None:
    df = clean_frame()
    df["event_time"] = df["event_time"].astype(object)
    df.loc[0, "event_time"] = datetime(3000, 1, 1)
    df["event_time"] = df["event_time"].astype("datetime64[us]")
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "event_time_in_partition"
    assert failure.examples == ("3000-01-01T00:00:00",)


def test_large_reference_set_is_checked_exactly_and_quickly() -> None:
    reference = [f"{i:016x}" for i in range(50_000)]
    df = clean_frame()
    df["card_id"] = [
        reference[7],
        reference[49_999],
        reference[7],
        "deadbeef",
        reference[0],
        "f00d",
    ]
    start = time.perf_counter()
    report = validate_frame(df, "t", rules(reference_card_ids=reference))
    print(f"\n50k reference cards, 6 rows: {(time.perf_counter() - start) * 1000:.0f} ms")
    failure = only_failure(report)
    assert failure.rule == "card_in_reference"
    assert failure.unexpected_count == 2
    assert failure.examples == ("deadbeef", "f00d")
    assert failure.expectation == (
        "expect_column_values_to_be_in_set(column='card_id', value_set=<50000 values>)"
    )

    df["card_id"] = "cafe"  # no card of the frame is in the reference at all
    failure = only_failure(validate_frame(df, "t", rules(reference_card_ids=reference)))
    assert failure.rule == "card_in_reference"
    assert failure.unexpected_count == 6
    assert failure.examples == ("cafe",)

    df["card_id"] = reference[:6]
    assert validate_frame(df, "t", rules(reference_card_ids=reference)).passed


def test_frame_read_back_from_duckdb() -> None:
    """The asset checks validate ``conn.execute(...).df()``: TIMESTAMP comes back as [us]."""
    import duckdb

    src = clean_frame()
    src.loc[5, "event_time"] = pd.Timestamp("2024-03-11 00:00:00")
    with duckdb.connect() as conn:
        conn.register("src", src)
        df = conn.execute("SELECT * FROM src").df()
    assert df["event_time"].dtype == "datetime64[us]"
    failure = only_failure(validate_frame(df, "t", rules()))
    assert failure.rule == "event_time_in_partition"
    assert failure.examples == ("2024-03-11T00:00:00",)


@pytest.mark.parametrize("timezone", [None, "America/New_York"])
def test_a_range_of_days_gets_each_day_s_own_report(tmp_path, timezone: str | None) -> None:
    """`validate_days` (the suite once over a range's rows) reports exactly what validating
    each day's rows on their own does: days with each kind of defect, an empty day, a
    transaction id on two days (unique within each), clean days around them, and a time
    zone whose midnights are not UTC's (its days' UTC-midnight rows are outside them)."""
    import duckdb

    from mlplatform.ingestion.quality import validate_days

    days = [date.fromordinal(DAY.toordinal() + n) for n in range(20)]
    frames = []
    for n, day in enumerate(days):
        if n == 7:  # no rows
            continue
        frame = clean_frame()
        frame["partition_date"] = day
        frame["event_time"] += pd.Timedelta(days=n)
        frame["transaction_id"] = [f"d{n}-{i}" for i in range(len(frame))]
        frames.append(frame)
    by_day = {f["partition_date"].iloc[0]: f for f in frames}
    by_day[days[1]].loc[1, "transaction_id"] = "d1-0"
    by_day[days[2]].loc[5, "event_time"] = pd.Timestamp(days[3])
    by_day[days[3]].loc[2, "card_id"] = None
    by_day[days[4]].loc[0, "amount"] = 0.0
    by_day[days[5]].loc[3, "category"] = "casino"
    by_day[days[6]].loc[4, "card_id"] = "not-a-card"
    by_day[days[9]].loc[0, "transaction_id"] = "d0-0"
    expected_counts = {day: 0 if day == days[7] else 6 for day in days}
    expected_counts[days[8]] = 7
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.register("src", pd.concat(frames, ignore_index=True))
        conn.execute("CREATE TABLE t AS SELECT * FROM src")
        conn.unregister("src")
        frame = conn.execute(
            "SELECT * FROM t WHERE partition_date BETWEEN ? AND ?", [days[0], days[-1]]
        ).df()
        alone = {
            day: conn.execute("SELECT * FROM t WHERE partition_date = ?", [day]).df()
            for day in days
        }

    def rules_of_day(day: date) -> list[Rule]:
        return rules(partition_date=day, expected_row_count=expected_counts[day], timezone=timezone)

    reports = validate_days(
        frame, "t", days, rules_of_day, timezone=timezone, expected_row_counts=expected_counts
    )
    assert reports == {
        day: validate_frame(alone[day], f"t:{day}", rules_of_day(day)) for day in days
    }
    failing = {day for day, report in reports.items() if not report.passed}
    if timezone is None:
        assert failing == set(days[1:7]) | {days[8]}
    else:  # every day with rows has some before the local midnight
        assert failing == set(days) - {days[7]}

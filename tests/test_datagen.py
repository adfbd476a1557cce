"""The synthetic card-transaction simulator: real files in a temporary folder, read back with
the standard library's csv module and checked against the data contract and the episodes."""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from mlplatform.datagen import (
    CATEGORIES,
    DISCRETIONARY_CATEGORIES,
    MALFORMED_KINDS,
    SimulationConfig,
    SimulationSummary,
    simulate,
)

COLUMNS = [
    "trans_date_trans_time", "cc_num", "merchant", "category", "amt", "first", "last", "gender",
    "street", "city", "state", "zip", "lat", "long", "city_pop", "job", "dob", "trans_num",
    "merch_lat", "merch_long", "is_fraud",
]  # fmt: skip
CARD_COLUMNS = ["cc_num", "credit_limit", "income_band", "open_date"]
COL = {name: i for i, name in enumerate(COLUMNS)}
START = date(2025, 1, 1)
DRIFT = START + timedelta(days=38)

CONFIG = SimulationConfig(
    n_cards=400,
    days=45,
    start_date=START,
    seed=7,
    fraud_card_share=0.02,
    drift_start=DRIFT,
    malformed_rate=0.01,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_day(path: Path) -> date:
    return date.fromisoformat(re.search(r"\d{4}-\d{2}-\d{2}", path.name).group())


def _violations(fields: list[str], day: date, seen_ids: set[str]) -> list[str]:
    """The ingestion rules a row breaks (all of them, to prove a row breaks only one)."""
    if len(fields) != len(COLUMNS):
        return ["too_few_fields"]
    broken = []
    if fields[COL["cc_num"]] == "":
        broken.append("missing_card_number")
    try:
        stamp = datetime.strptime(fields[COL["trans_date_trans_time"]], "%Y-%m-%d %H:%M:%S")
        if stamp.date() != day:
            broken.append("wrong_day")
    except ValueError:
        broken.append("bad_timestamp")
    try:
        if not float(fields[COL["amt"]]) > 0:
            broken.append("non_positive_amount")
    except ValueError:
        broken.append("bad_amount")
    if fields[COL["trans_num"]] in seen_ids:
        broken.append("duplicate_id")
    seen_ids.add(fields[COL["trans_num"]])
    return broken


class Landing:
    """The files of one simulation, parsed: good rows (with their day) and malformed ones."""

    def __init__(self, summary: SimulationSummary) -> None:
        self.summary = summary
        self.headers: list[list[str]] = []
        self.good: list[tuple[date, list[str]]] = []
        self.malformed: Counter[str] = Counter()
        self.broken_rules_per_row: list[int] = []
        seen_ids: set[str] = set()
        for path in summary.files:
            day = _file_day(path)
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                self.headers.append(next(reader))
                for fields in reader:
                    broken = _violations(fields, day, seen_ids)
                    self.broken_rules_per_row.append(len(broken))
                    if broken:
                        self.malformed[broken[0]] += 1
                    else:
                        self.good.append((day, fields))
        with summary.reference_file.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            self.card_header = next(reader)
            self.cards = {row[0]: row for row in reader}

    def column(self, name: str) -> list[str]:
        return [fields[COL[name]] for _, fields in self.good]


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Landing:
    return Landing(simulate(CONFIG, tmp_path_factory.mktemp("landing")))


def _luhn_ok(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def _km(lat1: float, long1: float, lat2: float, long2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(long2 - long1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def test_one_file_per_day_with_the_contract_header(landing: Landing) -> None:
    files = landing.summary.files
    assert [p.name for p in files] == [
        f"transactions_{START + timedelta(days=d)}.csv" for d in range(CONFIG.days)
    ]
    assert all(header == COLUMNS for header in landing.headers)
    assert landing.card_header == CARD_COLUMNS
    raw = files[0].read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    assert raw.startswith(",".join(COLUMNS).encode() + b"\n")


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    config = replace(CONFIG, n_cards=150, days=6, drift_start=START + timedelta(days=3))
    first = simulate(config, tmp_path / "a")
    again = simulate(config, tmp_path / "b")
    other = simulate(replace(config, seed=8), tmp_path / "c")
    paths = [*first.files, first.reference_file]
    assert [_sha256(p) for p in paths] == [_sha256(p) for p in (*again.files, again.reference_file)]
    assert first.malformed == again.malformed and first.revenge_episodes == again.revenge_episodes
    other_paths = [*other.files, other.reference_file]
    assert all(_sha256(a) != _sha256(b) for a, b in zip(paths, other_paths, strict=True))


def test_good_rows_follow_the_contract(landing: Landing) -> None:
    assert len(landing.good) > 40_000
    previous: dict[date, str] = {}
    for day, fields in landing.good:
        stamp = fields[COL["trans_date_trans_time"]]
        assert stamp[:10] == day.isoformat()
        assert stamp >= previous.get(day, ""), "rows are sorted by time within a file"
        previous[day] = stamp
    ids = landing.column("trans_num")
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"\d+\.\d\d", a) and float(a) > 0 for a in landing.column("amt"))
    cards = set(landing.column("cc_num"))
    assert all(re.fullmatch(r"\d{16}", c) and _luhn_ok(c) for c in cards)
    assert set(landing.column("gender")) == {"F", "M"}
    assert set(landing.column("category")) == set(CATEGORIES)
    assert set(landing.column("is_fraud")) == {"0", "1"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", d) for d in landing.column("dob"))
    assert all(re.fullmatch(r"\d{5}", z) for z in landing.column("zip"))
    assert all(p.isdigit() for p in landing.column("city_pop"))
    for name in ("lat", "long", "merch_lat", "merch_long"):
        assert all(re.fullmatch(r"-?\d+\.\d{6}", v) for v in landing.column(name))
    merchants = set(landing.column("merchant"))
    assert not any("fraud" in m.lower() for m in merchants)
    with_comma = [m for m in merchants if "," in m]
    assert with_comma, "some merchant names carry a comma"
    assert f'"{with_comma[0]}"'.encode() in b"".join(p.read_bytes() for p in landing.summary.files)


def test_malformed_rows_reported_are_the_malformed_rows_in_the_files(landing: Landing) -> None:
    summary = landing.summary
    assert set(summary.malformed) == set(MALFORMED_KINDS)
    assert all(count > 0 for count in summary.malformed.values()), summary.malformed
    assert dict(landing.malformed) == summary.malformed
    assert max(landing.broken_rules_per_row) == 1, "a malformed row breaks exactly one rule"
    assert summary.rows == len(landing.good) + sum(summary.malformed.values())
    # round(rate x good rows) per file, give or take the rounding of each file
    expected = CONFIG.malformed_rate * len(landing.good)
    assert abs(sum(summary.malformed.values()) - expected) <= CONFIG.days


def test_no_malformed_rows_by_default(tmp_path: Path) -> None:
    summary = simulate(replace(CONFIG, n_cards=100, days=3, malformed_rate=0.0), tmp_path)
    assert sum(summary.malformed.values()) == 0
    lines = sum(len(p.read_text().splitlines()) - 1 for p in summary.files)
    assert lines == summary.rows


def test_fraud_at_a_plausible_rate_far_from_home_and_expensive(landing: Landing) -> None:
    fraud = [f for _, f in landing.good if f[COL["is_fraud"]] == "1"]
    normal = [f for _, f in landing.good if f[COL["is_fraud"]] == "0"]
    assert len(fraud) == landing.summary.fraud_rows
    assert 0.003 <= len(fraud) / len(landing.good) <= 0.03

    def far(rows: list[list[str]]) -> float:
        return sum(
            _km(*(float(f[COL[c]]) for c in ("lat", "long", "merch_lat", "merch_long"))) > 500
            for f in rows
        ) / len(rows)

    assert far(fraud) > 0.5
    assert far(normal) < 0.02

    def mean_amount(rows: list[list[str]]) -> float:
        return sum(float(f[COL["amt"]]) for f in rows) / len(rows)

    assert mean_amount(fraud) > 3 * mean_amount(normal)


def _discretionary_spend_by_day(landing: Landing) -> dict[str, dict[date, float]]:
    spend: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for day, f in landing.good:
        if f[COL["category"]] in DISCRETIONARY_CATEGORIES:
            spend[f[COL["cc_num"]]][day] += float(f[COL["amt"]])
    return spend


def test_revenge_episodes_show_restraint_then_a_burst(landing: Landing) -> None:
    episodes = landing.summary.revenge_episodes
    assert len(episodes) == round(CONFIG.revenge_share * CONFIG.n_cards)
    spend = _discretionary_spend_by_day(landing)
    days = [START + timedelta(days=d) for d in range(CONFIG.days)]
    restrained_well = 0
    for e in episodes:
        assert 12 <= e.restraint_days <= 21 and 1 <= e.burst_days <= 3
        assert e.burst_start >= START + timedelta(days=35), "bursts come after 35 days of history"
        assert e.burst_start + timedelta(days=e.burst_days) <= days[-1] + timedelta(days=1)
        burst_end = e.burst_start + timedelta(days=e.burst_days)
        by_day = spend[e.card_number]
        normal_days = [d for d in days if d < e.restraint_start or d >= burst_end]
        normal = sum(by_day[d] for d in normal_days) / len(normal_days)
        restraint = sum(by_day[d] for d in days if e.restraint_start <= d < e.burst_start)
        burst = sum(by_day[d] for d in days if e.burst_start <= d < burst_end)
        restrained_well += restraint / e.restraint_days <= 0.4 * normal
        assert burst >= 9 * normal
    assert restrained_well >= 0.9 * len(episodes)


def test_revenge_bursts_meet_the_platform_label_rule(landing: Landing) -> None:
    """R <= 0.5 B and S >= max(9 B, 10% of the credit limit) at the burst's first purchase.

    B is the mean daily discretionary spend over (T-90d, T-14d] (over the days with data), R
    the same over (T-14d, T), S the discretionary spend over [T, T+72h).
    """
    times: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for _, f in landing.good:
        if f[COL["category"]] in DISCRETIONARY_CATEGORIES:
            stamp = datetime.fromisoformat(f[COL["trans_date_trans_time"]])
            times[f[COL["cc_num"]]].append((stamp, float(f[COL["amt"]])))
    first = datetime.combine(START, datetime.min.time())
    labelled = 0
    for e in landing.summary.revenge_episodes:
        rows = times[e.card_number]
        t = min(s for s, _ in rows if s.date() >= e.burst_start)
        b_days = min(90, (t - timedelta(days=14) - first).days)
        b = sum(a for s, a in rows if t - timedelta(days=90) < s <= t - timedelta(days=14)) / b_days
        r = sum(a for s, a in rows if t - timedelta(days=14) < s < t) / 14
        s_ = sum(a for s, a in rows if t <= s < t + timedelta(hours=72))
        limit = float(landing.cards[e.card_number][1])
        labelled += r <= 0.5 * b and s_ >= max(9 * b, 0.1 * limit)
    assert labelled >= 0.85 * len(landing.summary.revenge_episodes)


def test_drift_inflates_amounts_shifts_the_mix_and_brings_new_merchants(
    landing: Landing, tmp_path: Path
) -> None:
    before = [(d, f) for d, f in landing.good if d < DRIFT and f[COL["is_fraud"]] == "0"]
    after = [(d, f) for d, f in landing.good if d >= DRIFT and f[COL["is_fraud"]] == "0"]

    def mean_amount(rows: list[tuple[date, list[str]]]) -> float:
        return sum(float(f[COL["amt"]]) for _, f in rows) / len(rows)

    def online_share(rows: list[tuple[date, list[str]]]) -> float:
        return sum(f[COL["category"]].endswith("_net") for _, f in rows) / len(rows)

    assert mean_amount(after) > 1.15 * mean_amount(before)
    assert online_share(after) > 1.5 * online_share(before)
    merchants_before = {f[COL["merchant"]] for _, f in before}
    new = {f[COL["merchant"]] for _, f in after} - merchants_before
    assert len(new) >= 10
    # Days before the drift are the same as in a simulation without drift.
    config = replace(CONFIG, n_cards=150, days=6, drift_start=START + timedelta(days=4))
    drifted = simulate(config, tmp_path / "drift")
    plain = simulate(replace(config, drift_start=None), tmp_path / "plain")
    hashes = [(_sha256(a), _sha256(b)) for a, b in zip(drifted.files, plain.files, strict=True)]
    assert all(a == b for a, b in hashes[:4]) and all(a != b for a, b in hashes[4:])


def test_cards_reference_covers_every_card(landing: Landing) -> None:
    assert len(landing.cards) == CONFIG.n_cards
    assert set(landing.column("cc_num")) <= set(landing.cards)
    limits: dict[str, list[float]] = defaultdict(list)
    for _, limit, band, open_date in landing.cards.values():
        assert date.fromisoformat(open_date) < START
        limits[band].append(float(limit))
    assert set(limits) == {"low", "middle", "high", "very_high"}

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    medians = [median(limits[b]) for b in ("low", "middle", "high", "very_high")]
    assert medians == sorted(medians)


def test_short_simulations_still_place_and_report_episodes(tmp_path: Path) -> None:
    config = SimulationConfig(n_cards=60, days=4, seed=3, revenge_share=0.5)
    summary = simulate(config, tmp_path, progress=True)
    assert len(summary.files) == 4 and len(summary.revenge_episodes) == 30
    end = START + timedelta(days=4)
    for e in summary.revenge_episodes:
        assert START <= e.restraint_start <= e.burst_start
        assert e.burst_start + timedelta(days=e.burst_days) <= end


@pytest.mark.parametrize("bad", [{"n_cards": 0}, {"days": 0}, {"revenge_share": 1.5}, {"seed": -1}])
def test_invalid_configuration_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SimulationConfig(**bad)

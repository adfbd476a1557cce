"""Ingestion against a corpus of bad landing files, and the properties ingestion promises.

Every file in ``tests/corpus/`` (committed byte for byte; see its README) is ingested into a
fresh DuckDB warehouse and its exact outcome asserted: rejected whole with a reason naming the
problem, or loaded with exact counts, quarantine rules and physical line numbers. Then:
idempotency, replacement by a corrected file, a rejected file keeping the old rows, PII never
stored in clear anywhere in the warehouse, and the reconciliation of curation with raw.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pytest

from mlplatform.contract import Contract, load_contract
from mlplatform.ingestion import (
    FileRejected,
    IngestionResult,
    curate_partition,
    curation,
    expected_curated_rows,
    ingest_partition,
    ingest_partitions,
    landing_files,
    load_card_reference,
    loading,
    partition_date_of,
)
from mlplatform.settings import DEFAULT_CONTRACT
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.pii import MASK, card_pseudonym

CORPUS = Path(__file__).parent / "corpus"
DAY = date(2025, 1, 2)
PRIOR_DAY = date(2025, 1, 1)
PRIOR_FILE = CORPUS / "transactions_2025-01-01__prior_day.csv"
KEY = b"test-key"
MAX_AMOUNT = 100_000.0
MAX_LINE_BYTES = 1_000_000
LONG_CASES_MAX_LINE_BYTES = 100_000

# The personal data in the corpus (see tests/corpus/README.md).
CARDS = ("4539148803436467", "5425233430109903", "374245455400126", "6011000990139424")
FIRST_NAMES = ("Margaret", "Theodore", "Priyanka", "Bartholomew")
LAST_NAMES = ("Okonkwo", "Vasquez", "Raghunathan", "Lindqvist")
STREETS = (
    "742 Evergreen Terrace",
    "1600 Juniper Hollow Rd",
    "88 Wildflower Crescent",
    "19 Saltmarsh Quay",
)
BIRTH_DATES = ("1968-04-17", "1979-11-02", "1991-06-23", "2001-01-30", "30/01/2001")
BIRTH_YEARS = {1968, 1979, 1991, 2001}
BIRTH_DAYS = ("04-17", "11-02", "06-23", "01-30", "30/0")  # any part of a date but its year
NAMES_AND_STREETS = FIRST_NAMES + LAST_NAMES + STREETS

VALID_LINES = (2, 3, 4, 5, 6, 7)


def corpus_file(case: str, day: date = DAY) -> Path:
    return CORPUS / f"transactions_{day.isoformat()}__{case}.csv"


@dataclass(frozen=True)
class Loaded:
    """A loaded file: rows read/loaded, quarantined (line, rule, column), lines of loaded rows."""

    rows_read: int
    rows_loaded: int
    quarantined: tuple[tuple[int, str, str | None], ...] = ()
    lines: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Rejected:
    """A whole-file rejection whose reason contains all these words."""

    words: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    name: str
    expect: Loaded | Rejected | tuple[Loaded, ...]  # a tuple: one Loaded per file
    files: tuple[str, ...] = ()  # corpus cases of the same partition; default: (name,)
    max_line_bytes: int = MAX_LINE_BYTES
    prior_day: bool = False  # load the previous day's file first
    same_rows_as_valid: bool = False  # loads exactly the rows of `valid` (lines may differ)
    check: tuple[str, object] | None = None  # (SQL on the loaded partition, its single value)


def quarantined(line: int, rule: str, column: str | None = None) -> Loaded:
    """The base file with one row quarantined at `line`: five rows load."""
    return Loaded(6, 5, ((line, rule, column),), tuple(n for n in VALID_LINES if n != line))


CASES = [
    # ---- valid and harmless variants: everything loads -------------------------------------
    Case("valid", Loaded(6, 6, (), VALID_LINES), same_rows_as_valid=True),
    Case("crlf", Loaded(6, 6, (), VALID_LINES), same_rows_as_valid=True),
    Case("utf8_bom", Loaded(6, 6, (), VALID_LINES), same_rows_as_valid=True),
    Case("extra_columns", Loaded(6, 6, (), VALID_LINES), same_rows_as_valid=True),
    Case("reordered_columns", Loaded(6, 6, (), VALID_LINES), same_rows_as_valid=True),
    Case(
        "without_optional_columns",
        Loaded(6, 6, (), VALID_LINES),
        check=(
            "SELECT count(*) FROM raw.transactions WHERE label IS NULL AND birth_year IS NULL "
            "AND merchant_lat IS NULL AND merchant_long IS NULL AND job IS NULL",
            6,
        ),
    ),
    Case("header_only", Loaded(0, 0, (), ())),
    Case(
        "quoted_comma_merchant",
        Loaded(6, 6, (), VALID_LINES),
        check=(
            "SELECT merchant FROM raw.transactions WHERE amount = 48.75",
            "Shell Oil, Station 4471",
        ),
    ),
    Case(
        "quoted_quotes_merchant",
        Loaded(6, 6, (), VALID_LINES),
        check=(
            "SELECT merchant FROM raw.transactions WHERE amount = 31.5",
            'AMC "Dine-In" Theatres',
        ),
    ),
    Case(
        "quoted_newline",  # the record on lines 5-6 pushes the later rows down
        Loaded(6, 6, (), (2, 3, 4, 5, 7, 8)),
        check=(
            "SELECT merchant FROM raw.transactions WHERE amount = 249.99",
            "Amazon\nMarketplace",
        ),
    ),
    Case("blank_lines", Loaded(6, 6, (), (2, 4, 5, 6, 7, 8)), same_rows_as_valid=True),
    Case(
        "long_field_allowed",  # a 90 kB merchant under a 100 kB line limit
        Loaded(6, 6, (), VALID_LINES),
        max_line_bytes=LONG_CASES_MAX_LINE_BYTES,
        check=("SELECT max(length(merchant)) FROM raw.transactions", 90_019),
    ),
    # ---- whole-file rejections ---------------------------------------------------------------
    Case("missing_required_column", Rejected(("required column", "missing", "amt"))),
    Case("duplicate_column", Rejected(("named twice", "amt"))),
    Case("semicolon_delimiter", Rejected(("delimiter is ';'",))),
    Case("tab_delimiter", Rejected(("delimiter is '\\t'",))),
    Case("empty", Rejected(("empty file", "0 bytes"))),
    Case("binary_garbage", Rejected(("binary content", "NUL byte at offset 145"))),
    Case("binary_without_nul", Rejected(("line 1", "not UTF-8", "0x9f"))),
    Case("gzip_compressed", Rejected(("binary content", "NUL byte"))),
    Case("utf16", Rejected(("binary content", "NUL byte"))),
    Case("latin1", Rejected(("line 6", "not UTF-8"))),
    Case("mixed_line_endings", Rejected(("mixed line endings", "3 CRLF", "4 LF"))),
    # ---- rows that break a rule: quarantined, the rest loads ---------------------------------
    Case("bad_timestamp", quarantined(4, "unparsable_timestamp", "event_time")),
    Case("negative_amount", quarantined(3, "non_positive_amount", "amount")),
    Case("zero_amount", quarantined(3, "non_positive_amount", "amount")),
    Case("amount_decimal_comma", quarantined(3, "unparsable_amount", "amount")),
    Case("amount_not_finite", quarantined(3, "unparsable_amount", "amount")),
    Case("amount_above_maximum", quarantined(7, "amount_above_maximum", "amount")),
    Case("duplicate_id_in_file", quarantined(6, "duplicate_id", "transaction_id")),
    Case("row_from_next_day", quarantined(7, "outside_partition_day", "event_time")),
    Case("truncated_last_line", quarantined(7, "malformed_row")),
    Case("unquoted_comma_merchant", quarantined(4, "malformed_row")),
    Case(
        "line_too_long",  # a 150 kB merchant over a 100 kB line limit
        quarantined(4, "line_too_long"),
        max_line_bytes=LONG_CASES_MAX_LINE_BYTES,
    ),
    Case("missing_card_number", quarantined(4, "missing_required_field", "card_number")),
    Case("missing_transaction_id", quarantined(3, "missing_required_field", "transaction_id")),
    Case("latitude_out_of_range", quarantined(5, "invalid_value", "home_lat")),
    Case("birth_date_not_iso", quarantined(5, "invalid_value", "birth_date")),
    Case(
        "label_not_binary",  # `yes` on line 3, `2` on line 5
        Loaded(6, 4, ((3, "invalid_value", "label"), (5, "invalid_value", "label")), (2, 4, 6, 7)),
    ),
    Case(
        "whitespace_line",  # a line of blanks is a record with one field
        Loaded(7, 6, ((3, "malformed_row", None),), (2, 4, 5, 6, 7, 8)),
    ),
    Case(
        "unclosed_quote",  # the open quote swallows the rest of the file into one record
        Loaded(3, 2, ((4, "malformed_row", None),), (2, 3)),
    ),
    Case(
        "several_rules",  # each row is quarantined for the first rule it breaks
        Loaded(
            6,
            3,
            (
                (3, "outside_partition_day", "event_time"),
                (4, "unparsable_timestamp", "event_time"),
                (5, "unparsable_amount", "amount"),
            ),
            (2, 6, 7),
        ),
    ),
    Case(
        "quoted_newline_blank_lines_errors",  # lines 3-4 one record, 5, 8 and 9 blank
        Loaded(
            6, 4, ((7, "malformed_row", None), (10, "non_positive_amount", "amount")), (2, 3, 6, 11)
        ),
    ),
    Case(
        "crlf_quoted_newline_blank_lines_errors",
        Loaded(
            6, 4, ((7, "malformed_row", None), (10, "non_positive_amount", "amount")), (2, 3, 6, 11)
        ),
    ),
    Case(
        "duplicate_id_across_files",
        (
            Loaded(3, 3, (), (2, 3, 4)),
            Loaded(3, 2, ((3, "duplicate_id", "transaction_id"),), (2, 4)),
        ),
        files=("duplicate_id_across_files_a", "duplicate_id_across_files_b"),
    ),
    Case(
        "id_loaded_for_other_day",
        quarantined(4, "id_loaded_for_other_day", "transaction_id"),
        prior_day=True,
    ),
]


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(DEFAULT_CONTRACT)


def ingest(
    conn: duckdb.DuckDBPyConnection,
    files: list[Path],
    contract: Contract,
    *,
    day: date = DAY,
    key: bytes = KEY,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> IngestionResult:
    return ingest_partition(
        conn,
        files=files,
        partition_date=day,
        contract=contract,
        pii_key=key,
        max_amount=MAX_AMOUNT,
        max_line_bytes=max_line_bytes,
    )


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, *params: object) -> object:
    # fetchall, not fetchone: DuckDB refuses `register` on a connection whose last result
    # is not fetched to the end, and ingestion registers frames.
    ((value,),) = conn.execute(sql, list(params)).fetchall()
    return value


def partition_counts(conn: duckdb.DuckDBPyConnection, day: date = DAY) -> tuple[int, int]:
    return (
        scalar(conn, "SELECT count(*) FROM raw.transactions WHERE partition_date = ?", day),
        scalar(conn, "SELECT count(*) FROM raw.quarantine WHERE partition_date = ?", day),
    )


CONTENT = (
    "transaction_id, event_time, partition_date, card_id, merchant, category, amount, gender, "
    "city, state, zip, city_pop, job, birth_year, home_lat, home_long, merchant_lat, "
    "merchant_long, label"
)


def content_rows(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute(
        f"SELECT {CONTENT} FROM raw.transactions ORDER BY transaction_id"
    ).fetchall()


def test_corpus_is_complete_and_named_for_its_partition() -> None:
    names = {p.name for p in CORPUS.glob("*.csv")}
    used = {corpus_file(n).name for case in CASES for n in (case.files or (case.name,))}
    assert used | {PRIOR_FILE.name} == names
    assert len(CASES) >= 22
    for name in names - {PRIOR_FILE.name}:
        assert partition_date_of(Path(name)) == DAY
    assert partition_date_of(PRIOR_FILE) == PRIOR_DAY
    assert landing_files(CORPUS, PRIOR_DAY) == [PRIOR_FILE]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_corpus_case(case: Case, tmp_path: Path, contract: Contract) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    if case.prior_day:
        ingest(conn, [PRIOR_FILE], contract, day=PRIOR_DAY)
    files = [corpus_file(name) for name in case.files or (case.name,)]

    if isinstance(case.expect, Rejected):
        with pytest.raises(FileRejected) as caught:
            ingest(conn, files, contract, max_line_bytes=case.max_line_bytes)
        error = caught.value
        assert error.file == files[0]
        assert str(error).startswith(f"{files[0]}: ")
        for word in case.expect.words:
            assert word in error.reason
        data = files[0].read_bytes()
        log = conn.execute(
            "SELECT file, status, error, rows_read, rows_loaded, rows_quarantined, sha256, "
            "size_bytes FROM raw.ingestion_log WHERE partition_date = ?",
            [DAY],
        ).fetchall()
        sha = hashlib.sha256(data).hexdigest()
        assert log == [(files[0].name, "rejected", error.reason, 0, 0, 0, sha, len(data))]
        assert partition_counts(conn) == (0, 0)
        return

    expects = case.expect if isinstance(case.expect, tuple) else (case.expect,)
    result = ingest(conn, files, contract, max_line_bytes=case.max_line_bytes)
    assert result.partition_date == DAY
    assert len(result.files) == len(files)
    expected_reasons: Counter[str] = Counter()
    for path, outcome, expect in zip(files, result.files, expects, strict=True):
        data = path.read_bytes()
        assert outcome.file == path.name
        assert outcome.status == "loaded"
        assert outcome.error is None
        assert (outcome.sha256, outcome.size_bytes) == (hashlib.sha256(data).hexdigest(), len(data))
        assert (outcome.rows_read, outcome.rows_loaded, outcome.rows_quarantined) == (
            expect.rows_read,
            expect.rows_loaded,
            len(expect.quarantined),
        )
        assert outcome.rows_read == outcome.rows_loaded + outcome.rows_quarantined
        expected_reasons.update(reason for _, reason, _ in expect.quarantined)

        log = conn.execute(
            "SELECT rows_read, rows_loaded, rows_quarantined, status, sha256, size_bytes "
            "FROM raw.ingestion_log WHERE file = ?",
            [path.name],
        ).fetchall()
        assert log == [
            (
                outcome.rows_read,
                outcome.rows_loaded,
                outcome.rows_quarantined,
                "loaded",
                outcome.sha256,
                outcome.size_bytes,
            )
        ]
        rows = conn.execute(
            "SELECT line, reason, column_name, detail, raw_line FROM raw.quarantine "
            "WHERE file = ? AND partition_date = ? ORDER BY line",
            [path.name, DAY],
        ).fetchall()
        assert [row[:3] for row in rows] == sorted(expect.quarantined)
        for *_, detail, raw_line in rows:
            assert detail and raw_line
            for secret in (*CARDS, *NAMES_AND_STREETS, *BIRTH_DATES, *BIRTH_DAYS):
                assert secret not in raw_line and secret not in detail

        loaded = conn.execute(
            "SELECT source_line, transaction_id, coalesce(merchant, '') FROM raw.transactions "
            "WHERE source_file = ? ORDER BY source_line",
            [path.name],
        ).fetchall()
        assert len(loaded) == outcome.rows_loaded
        if expect.lines is not None:
            assert tuple(line for line, *_ in loaded) == expect.lines
        # Each loaded row's id is in the record that begins on its source line.
        physical = data.decode("utf-8-sig").split("\n")
        for line, transaction_id, merchant in loaded:
            record = "\n".join(physical[line - 1 : line + merchant.count("\n")])
            assert transaction_id in record

    assert result.quarantine_reasons == dict(expected_reasons)
    assert partition_counts(conn) == (result.rows_loaded, result.rows_quarantined)
    assert result.rows_read == result.rows_loaded + result.rows_quarantined

    if case.same_rows_as_valid:
        reference = connect(tmp_path / "reference.duckdb")
        ingest(reference, [corpus_file("valid")], contract)
        assert content_rows(conn) == content_rows(reference)
    if case.check is not None:
        sql, expected = case.check
        assert scalar(conn, sql) == expected


# ---- properties --------------------------------------------------------------------------------


def snapshot(conn: duckdb.DuckDBPyConnection) -> tuple[list[tuple], list[tuple]]:
    """Full raw tables in a fixed order, without the time of loading."""
    return (
        conn.execute(
            "SELECT * EXCLUDE (ingested_at) FROM raw.transactions ORDER BY ALL"
        ).fetchall(),
        conn.execute(
            "SELECT * EXCLUDE (quarantined_at) FROM raw.quarantine ORDER BY ALL"
        ).fetchall(),
    )


def land(landing: Path, case: str, name: str | None = None) -> Path:
    """Copy a corpus file into a landing folder (under `name` when given)."""
    landing.mkdir(parents=True, exist_ok=True)
    source = PRIOR_FILE if case == "prior_day" else corpus_file(case)
    return Path(shutil.copyfile(source, landing / (name or source.name)))


def test_ingesting_a_partition_again_changes_nothing(tmp_path: Path, contract: Contract) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    landing = tmp_path / "landing"
    land(landing, "prior_day")
    for case in (
        "several_rules",
        "quoted_newline_blank_lines_errors",
        "id_loaded_for_other_day",
        "unquoted_comma_merchant",
    ):
        land(landing, case)
    ingest(conn, landing_files(landing, PRIOR_DAY), contract, day=PRIOR_DAY)
    files = landing_files(landing, DAY)
    assert len(files) == 4

    snapshots, results = [], []
    for _ in range(3):
        results.append(ingest(conn, files, contract))
        snapshots.append(snapshot(conn))
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert results[0].files == results[1].files == results[2].files
    assert results[0].quarantine_reasons == results[2].quarantine_reasons
    transactions, quarantine = snapshots[0]
    assert len(transactions) == results[0].rows_loaded + 2  # and the prior day's two rows
    assert len(quarantine) == results[0].rows_quarantined > 0
    ids = [row[0] for row in transactions]
    assert len(ids) == len(set(ids))  # never duplicated
    # The first file's rows count as first seen; the same ids later are duplicates.
    assert results[0].quarantine_reasons["duplicate_id"] > 0
    assert results[0].quarantine_reasons["id_loaded_for_other_day"] == 1
    log = conn.execute(
        "SELECT file, count(*), count(DISTINCT sha256) FROM raw.ingestion_log "
        "WHERE partition_date = ? GROUP BY file ORDER BY file",
        [DAY],
    ).fetchall()
    assert log == [(path.name, 3, 1) for path in files]


def test_a_corrected_file_replaces_its_partition_only(tmp_path: Path, contract: Contract) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    landing = tmp_path / "landing"
    ingest(conn, [land(landing, "prior_day")], contract, day=PRIOR_DAY)
    prior_rows = conn.execute(
        "SELECT * FROM raw.transactions WHERE partition_date = ? ORDER BY ALL", [PRIOR_DAY]
    ).fetchall()
    assert len(prior_rows) == 2

    daily = land(landing, "several_rules", "transactions_2025-01-02.csv")
    first = ingest(conn, [daily], contract)
    assert (first.rows_loaded, first.rows_quarantined) == (3, 3)
    assert partition_counts(conn) == (3, 3)

    land(landing, "valid", daily.name)  # the same name, the rows fixed
    second = ingest(conn, landing_files(landing, DAY), contract)
    assert (second.rows_loaded, second.rows_quarantined) == (6, 0)
    assert partition_counts(conn) == (6, 0)
    reference = connect(tmp_path / "reference.duckdb")
    ingest(reference, [corpus_file("valid")], contract)
    assert (
        conn.execute(
            f"SELECT {CONTENT}, source_line FROM raw.transactions WHERE partition_date = ? "
            "ORDER BY transaction_id",
            [DAY],
        ).fetchall()
        == reference.execute(
            f"SELECT {CONTENT}, source_line FROM raw.transactions ORDER BY transaction_id"
        ).fetchall()
    )
    assert (
        conn.execute(
            "SELECT * FROM raw.transactions WHERE partition_date = ? ORDER BY ALL", [PRIOR_DAY]
        ).fetchall()
        == prior_rows
    )
    log = conn.execute(
        "SELECT rows_loaded, rows_quarantined FROM raw.ingestion_log WHERE file = ? "
        "ORDER BY started_at",
        [daily.name],
    ).fetchall()
    assert log == [(3, 3), (6, 0)]


@pytest.mark.parametrize("garbage", ["binary_garbage", "mixed_line_endings", "empty"])
def test_a_rejected_file_keeps_the_partition_as_it_was(
    garbage: str, tmp_path: Path, contract: Contract
) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    landing = tmp_path / "landing"
    daily = land(landing, "negative_amount", "transactions_2025-01-02.csv")
    ingest(conn, [daily], contract)
    before = snapshot(conn)
    assert partition_counts(conn) == (5, 1)

    land(landing, garbage, daily.name)
    with pytest.raises(FileRejected) as caught:
        ingest(conn, landing_files(landing, DAY), contract)
    assert caught.value.file == daily
    assert snapshot(conn) == before
    statuses = conn.execute(
        "SELECT status, error FROM raw.ingestion_log WHERE file = ? ORDER BY started_at",
        [daily.name],
    ).fetchall()
    assert statuses == [("loaded", None), ("rejected", caught.value.reason)]

    # A good file next to a rejected one: nothing of the partition changes either.
    good = land(landing, "valid")
    with pytest.raises(FileRejected):
        ingest(conn, [good, daily], contract)
    assert snapshot(conn) == before
    # No staging table (clear card numbers, names) is left on the connection.
    assert conn.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall() == []


def day_file(landing: Path, day: date, ids: list[str]) -> Path:
    """A file for ``day``: the valid corpus file's first rows moved to that day, with ``ids``."""
    header, *rows = corpus_file("valid").read_text().splitlines()
    at = header.split(",").index("trans_num")
    out = []
    for row, transaction_id in zip(rows, ids, strict=False):
        fields = row.replace("2025-01-02", day.isoformat()).split(",")
        fields[at] = transaction_id
        out.append(",".join(fields))
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / f"transactions_{day.isoformat()}.csv"
    path.write_text("\n".join([header, *out]) + "\n")
    return path


@pytest.mark.parametrize(
    ("batch_bytes", "batch_days"),
    [(1, 250), (1 << 30, 250), (1 << 30, 2)],
    ids=["a batch a day", "one batch", "batches of two days"],
)
def test_a_range_loads_as_its_days_one_after_another(
    batch_bytes: int,
    batch_days: int,
    tmp_path: Path,
    contract: Contract,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    days = [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)]
    before = {  # ids already loaded: days 2 and 3 (replaced by the range) and day 4 (not)
        date(2025, 1, 2): ["W", "V"],
        date(2025, 1, 3): ["X", "Z"],
        date(2025, 1, 4): ["Q"],
    }
    files = {
        day: [day_file(tmp_path / "landing", day, ids)]
        for day, ids in zip(
            days,
            [["A", "X", "W", "B", "Q"], ["A", "Y", "W", "C", "C"], ["X", "Y", "Z", "W", "Q"]],
            strict=True,
        )
    }
    warehouses = {}
    for how in ("day by day", "range"):
        conn = warehouses[how] = connect(tmp_path / f"{how}.duckdb")
        for day, ids in before.items():
            ingest(conn, [day_file(tmp_path / "before", day, ids)], contract, day=day)
    results = {day: ingest(warehouses["day by day"], files[day], contract, day=day) for day in days}

    monkeypatch.setattr(loading, "_BATCH_BYTES", batch_bytes)
    monkeypatch.setattr(loading, "_BATCH_DAYS", batch_days)
    loaded, rejected = ingest_partitions(
        warehouses["range"],
        files,
        contract=contract,
        pii_key=KEY,
        max_amount=MAX_AMOUNT,
        max_line_bytes=MAX_LINE_BYTES,
    )

    assert rejected == {}
    assert loaded == results
    assert snapshot(warehouses["range"]) == snapshot(warehouses["day by day"])
    # Day 1: X is day 3's and W day 2's (not yet replaced), Q day 4's. Day 2: A is day 1's,
    # C repeats; W loads (its day-1 copy did not). Day 3: Y and W are day 2's, Q day 4's.
    assert [results[day].quarantine_reasons for day in days] == [
        {"id_loaded_for_other_day": 3},
        {"id_loaded_for_other_day": 1, "duplicate_id": 1},
        {"id_loaded_for_other_day": 3},
    ]
    assert warehouses["range"].execute(
        "SELECT transaction_id, partition_date FROM raw.transactions ORDER BY ALL"
    ).fetchall() == [
        ("A", days[0]), ("B", days[0]), ("C", days[1]), ("Q", date(2025, 1, 4)),
        ("W", days[1]), ("X", days[2]), ("Y", days[1]), ("Z", days[2]),
    ]  # fmt: skip


def test_a_file_rejected_after_staging_leaves_the_other_days_of_its_batch_intact(
    tmp_path: Path, contract: Contract
) -> None:
    day1, day3 = date(2025, 1, 1), date(2025, 1, 3)
    files = {
        day1: [day_file(tmp_path / "landing", day1, ["A", "B"])],
        DAY: [land(tmp_path / "landing", "latin1")],  # parsed, then rejected: not UTF-8
        day3: [day_file(tmp_path / "landing", day3, ["C", "D", "E"])],
    }
    alone = connect(tmp_path / "alone.duckdb")
    for day in (day1, day3):
        ingest(alone, files[day], contract, day=day)
    conn = connect(tmp_path / "warehouse.duckdb")

    loaded, rejected = ingest_partitions(
        conn,
        files,
        contract=contract,
        pii_key=KEY,
        max_amount=MAX_AMOUNT,
        max_line_bytes=MAX_LINE_BYTES,
    )

    assert list(rejected) == [DAY] and "not UTF-8" in rejected[DAY].reason
    assert {day: r.rows_loaded for day, r in loaded.items()} == {day1: 2, day3: 3}
    assert snapshot(conn) == snapshot(alone)
    assert conn.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall() == []


@pytest.mark.parametrize("space", [" ", "\u00a0", "\u3000"], ids=["ascii", "nbsp", "ideographic"])
def test_values_lose_the_spaces_around_them_and_names_show_only_as_masked(
    tmp_path: Path, contract: Contract, space: str
) -> None:
    """Spaces around a value are trimmed (Unicode ones too); a value of spaces is missing."""
    header, first, second, *rest = corpus_file("valid").read_text().splitlines()
    fields = first.split(",")
    fields[2] = f"{space}{space}{fields[2]}{space}"  # merchant
    fields[4] = f"{space}{fields[4]}"  # amount
    fields[9] = f"{fields[9]}{space}"  # city
    blank_id = second.split(",")
    blank_id[17] = space * 3  # transaction id
    blank_id[5] = ""  # first name empty, last name and street present
    path = tmp_path / f"transactions_{DAY.isoformat()}.csv"
    path.write_text("\n".join([header, ",".join(fields), ",".join(blank_id), *rest]) + "\n")

    conn = connect(tmp_path / "warehouse.duckdb")
    result = ingest(conn, [path], contract)

    assert (result.rows_loaded, result.quarantine_reasons) == (
        len(rest) + 1,
        {"missing_required_field": 1},
    )
    merchant, amount, city = conn.execute(
        "SELECT merchant, amount, city FROM raw.transactions WHERE source_line = 2"
    ).fetchone()
    assert (merchant, amount, city) == ("Corner Bakery", 12.40, "Springfield")
    column, raw_line = conn.execute("SELECT column_name, raw_line FROM raw.quarantine").fetchone()
    assert column == "transaction_id"
    masked = raw_line.split(",")
    assert (masked[5], masked[6], masked[8]) == ("", MASK, MASK)
    assert "Vasquez" not in raw_line and "Juniper" not in raw_line


def formatted_card_file(landing: Path) -> Path:
    """A day-3 file whose card numbers carry spaces and dashes, one row with a shifted field."""
    rows = corpus_file("valid").read_text().splitlines()
    header, body = rows[0], rows[1:]
    formats = {
        "4539148803436467": "4539 1488 0343 6467",
        "5425233430109903": "5425-2334-3010-9903",
        "374245455400126": "3742 454554 00126",
        "6011000990139424": "6011-0009-9013-9424",
    }
    out = []
    for n, row in enumerate(body):
        row = row.replace("2025-01-02", "2025-01-03").replace("4f1d0", "4f1d3")
        for plain, formatted in formats.items():
            row = row.replace(f",{plain},", f",{formatted},")
        out.append(row)
        if n == 2:  # a broken copy: an unquoted comma in the time shifts the card right
            out.append(row.replace(" 12:30:00,", ", 12:30:00,").replace("4f1d33", "4f1d39"))
    path = landing / "transactions_2025-01-03.csv"
    path.write_text("\n".join([header, *out]) + "\n")
    return path


def test_no_personal_data_in_clear_anywhere_in_the_warehouse(
    tmp_path: Path, contract: Contract
) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    landing = tmp_path / "landing"
    ingest(conn, [land(landing, "prior_day")], contract, day=PRIOR_DAY)
    loaded_cases = [case for case in CASES if not isinstance(case.expect, Rejected)]
    day_files = [
        land(landing, name) for case in loaded_cases for name in case.files or (case.name,)
    ]
    result = ingest(conn, day_files, contract, max_line_bytes=LONG_CASES_MAX_LINE_BYTES)
    assert result.rows_loaded > 0 and result.rows_quarantined > 0
    assert {"malformed_row", "line_too_long", "invalid_value"} <= set(result.quarantine_reasons)
    day3 = date(2025, 1, 3)
    third = ingest(conn, [formatted_card_file(landing)], contract, day=day3)
    assert (third.rows_loaded, third.quarantine_reasons) == (6, {"malformed_row": 1})
    for case in CASES:  # rejections are logged; their reasons must not leak either
        if isinstance(case.expect, Rejected):
            with pytest.raises(FileRejected):
                ingest(conn, [corpus_file(case.name)], contract)
    (landing / "cards.csv").write_text(
        "cc_num,credit_limit,income_band\n"
        "4539 1488 0343 6467,5000,mid\n"
        "5425233430109903,12000,high\n"
        "374245455400126,2500,low\n"
        "6011-0009-9013-9424,8000,mid\n"
    )
    reference = load_card_reference(conn, landing, contract.reference, KEY)
    assert reference.rows == 4
    for day in (PRIOR_DAY, DAY, day3):
        curated = curate_partition(conn, day)
        assert curated.with_reference == curated.curated_rows > 0

    columns = conn.execute(
        "SELECT table_catalog, table_schema, table_name, column_name "
        "FROM information_schema.columns ORDER BY ALL"
    ).fetchall()
    tables = {(catalog, schema, table) for catalog, schema, table, _ in columns}
    assert {
        ("warehouse", "raw", t) for t in ("transactions", "quarantine", "ingestion_log")
    } <= tables
    values: set[str] = set()
    for catalog, schema, table, column in columns:
        values.update(
            value
            for (value,) in conn.execute(
                f'SELECT DISTINCT CAST("{column}" AS VARCHAR) FROM "{catalog}"."{schema}"."{table}"'
            ).fetchall()
            if value is not None
        )
    assert any("***" in value for value in values)  # masked quarantine lines are there
    for value in values:
        squeezed = value.replace(" ", "").replace("-", "")
        for card in CARDS:
            assert card not in squeezed, (card, value)
        for secret in (*NAMES_AND_STREETS, *BIRTH_DATES):
            assert secret not in value, (secret, value)

    birth = conn.execute(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_schema = 'raw' AND table_name = 'transactions' AND column_name = 'birth_year'"
    ).fetchone()
    assert birth == ("INTEGER",)
    years = {
        y for (y,) in conn.execute("SELECT DISTINCT birth_year FROM raw.transactions").fetchall()
    }
    assert years - {None} == BIRTH_YEARS

    # The same card gets the same pseudonym on every day, in every format, in the reference.
    by_card = conn.execute(
        "SELECT amount, card_id FROM raw.transactions WHERE partition_date IN (?, ?) "
        "AND transaction_id LIKE '0c5e7a9d2b1f4e8a9c3d6b2a7e4f1d%'",
        [DAY, day3],
    ).fetchall()
    plain = {"12.4": CARDS[0], "31.5": CARDS[0], "48.75": CARDS[1], "612.0": CARDS[1]}
    plain |= {"87.19": CARDS[2], "249.99": CARDS[3]}
    for amount, card_id in by_card:
        if str(amount) in plain:
            assert card_id == card_pseudonym(plain[str(amount)], KEY)
    pseudonyms = {card_pseudonym(card, KEY) for card in CARDS}
    assert len(pseudonyms) == 4
    raw_ids = {
        c for (c,) in conn.execute("SELECT DISTINCT card_id FROM raw.transactions").fetchall()
    }
    assert raw_ids == pseudonyms
    ref_ids = {c for (c,) in conn.execute("SELECT card_id FROM raw.card_reference").fetchall()}
    assert ref_ids == pseudonyms
    prior_cards = conn.execute(
        "SELECT DISTINCT card_id FROM raw.transactions WHERE partition_date = ?", [PRIOR_DAY]
    ).fetchall()
    assert {c for (c,) in prior_cards} == {
        card_pseudonym(CARDS[1], KEY),
        card_pseudonym(CARDS[3], KEY),
    }

    other = connect(tmp_path / "other-key.duckdb")
    ingest(other, [corpus_file("valid")], contract, key=b"another-key")
    other_ids = {
        c for (c,) in other.execute("SELECT DISTINCT card_id FROM raw.transactions").fetchall()
    }
    assert len(other_ids) == 4
    assert other_ids.isdisjoint(pseudonyms)


def test_curation_reconciles_with_raw(tmp_path: Path, contract: Contract) -> None:
    """Curated rows = raw rows minus the same event submitted again under another id."""
    lines = corpus_file("valid").read_text().splitlines()
    header, base = lines[0], lines[1:]

    def again(row: str, new_id: str, changes: dict[str, str] | None = None) -> str:
        fields = row.split(",")
        fields[17] = new_id  # trans_num
        row = ",".join(fields)
        for old, new in (changes or {}).items():
            row = row.replace(old, new)
        return row

    rows = [
        *base,
        again(base[1], "resubmitted-1"),  # the same event again
        again(base[3], "resubmitted-2", {"6011000990139424": "6011 0009 9013 9424"}),
        again(base[3], "resubmitted-3"),  # a second resubmission of one event
        again(base[0], "other-amount", {"12.40": "12.41"}),  # not the same event
        again(base[0], "other-merchant", {"Corner Bakery": "Corner Cafe"}),
        again(base[0], "other-time", {"07:14:09": "07:14:10"}),
    ]
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "transactions_2025-01-02.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    conn = connect(tmp_path / "warehouse.duckdb")
    result = ingest(conn, [path], contract)
    assert (result.rows_loaded, result.rows_quarantined) == (12, 0)

    curated = curate_partition(conn, DAY)
    assert (curated.raw_rows, curated.curated_rows, curated.duplicates_removed) == (12, 9, 3)
    assert expected_curated_rows(conn, [DAY]) == {DAY: curated.curated_rows}
    kept = {
        r for (r,) in conn.execute("SELECT transaction_id FROM curated.transactions").fetchall()
    }
    raw = {r for (r,) in conn.execute("SELECT transaction_id FROM raw.transactions").fetchall()}
    assert raw - kept == {"resubmitted-1", "resubmitted-2", "resubmitted-3"}
    assert {"other-amount", "other-merchant", "other-time"} <= kept
    # The first submission is the one kept, and curating again changes nothing.
    first = conn.execute("SELECT * FROM curated.transactions ORDER BY ALL").fetchall()
    again_result = curate_partition(conn, DAY)
    assert again_result == curated
    assert conn.execute("SELECT * FROM curated.transactions ORDER BY ALL").fetchall() == first


@pytest.mark.parametrize("batch_rows", [1, 1 << 30], ids=["a batch a day", "one batch"])
def test_a_range_curates_as_its_days_one_after_another(
    tmp_path: Path, contract: Contract, monkeypatch: pytest.MonkeyPatch, batch_rows: int
) -> None:
    days = [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)]
    ids = {days[0]: ["A", "B"], days[1]: ["C", "D", "E"], days[2]: ["F"]}
    warehouses = {}
    for how in ("day by day", "range"):
        conn = warehouses[how] = connect(tmp_path / f"{how}.duckdb")
        for day in days:
            ingest(conn, [day_file(tmp_path / how, day, ids[day])], contract, day=day)
    alone = {day: curate_partition(warehouses["day by day"], day) for day in days}

    monkeypatch.setattr(curation, "_BATCH_ROWS", batch_rows)
    together = curation.curate_partitions(warehouses["range"], days)

    assert {day: r.curated_rows for day, r in together.items()} == {d: len(ids[d]) for d in days}
    assert together == alone
    curated = [
        conn.execute("SELECT * FROM curated.transactions ORDER BY ALL").fetchall()
        for conn in warehouses.values()
    ]
    assert curated[0] == curated[1]

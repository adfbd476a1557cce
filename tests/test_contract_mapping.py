"""Mapping expressions, generated transaction ids and source time zones, through ingestion.

The source looks like a real extract, not like the contract: date and time of day in four
columns, amounts as "$1,234.56", a label written "Yes"/"No", no transaction id, and a card
identified by customer plus card index. Each file is ingested into a real DuckDB warehouse.
"""

from __future__ import annotations

import shutil
import textwrap
from datetime import date, datetime
from pathlib import Path

import pytest

from mlplatform.contract import Contract, ContractError, load_contract
from mlplatform.ingestion import FileRejected, IngestionResult, ingest_partition
from mlplatform.warehouse.connection import connect
from mlplatform.warehouse.pii import card_pseudonym

KEY = b"test-key"
DAY = date(2025, 1, 2)
HEADER = "User,Card,Year,Month,Day,Time,Amount,Merchant Name,MCC,Is Fraud?"

MAPPING = """\
name: extract
columns:
  transaction_id: generated
  event_time:
    sql: >-
      make_timestamp(Year::INT, Month::INT, Day::INT,
      split_part(Time, ':', 1)::INT, split_part(Time, ':', 2)::INT, 0)
  card_number: {sql: "User || ':' || Card"}
  merchant: Merchant Name
  category: MCC
  amount: {sql: "replace(replace(Amount, '$', ''), ',', '')"}
  label: {sql: "CASE \\"Is Fraud?\\" WHEN 'Yes' THEN 1 WHEN 'No' THEN 0 END"}
target: label
"""

ROWS = [
    "7,0,2025,1,2,09:15,$12.50,Corner Shop,5411,No",  # line 2
    '7,1,2025,1,2,10:30,"$1,234.56",Air Lines,4511,Yes',  # line 3: a currency string
    "7,0,2025,1,2,09:15,$12.50,Corner Shop,5411,No",  # line 4: the same purchase again
    "8,0,2025,1,2,25:99,$3.00,Corner Shop,5411,No",  # line 5: no such time of day
    "8,0,2025,1,2,11:00,$4.00,Corner Shop,5411,Maybe",  # line 6: not a Yes/No label
    "8,0,2025,1,2,11:05,,Corner Shop,5411,No",  # line 7: no amount
    "8,0,2025,1,2,11:10,$abc,Corner Shop,5411,No",  # line 8: not a number
    "8,0,2025,1,3,00:10,$5.00,Corner Shop,5411,No",  # line 9: the next day
]


def write_mapping(folder: Path, text: str = MAPPING) -> Contract:
    path = folder / "mapping.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_contract(path)


def write_day(folder: Path, rows: list[str], day: date = DAY, suffix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"transactions_{day.isoformat()}{suffix}.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def ingest(conn, files: list[Path], contract: Contract, day: date = DAY) -> IngestionResult:
    return ingest_partition(
        conn,
        files=files,
        partition_date=day,
        contract=contract,
        pii_key=KEY,
        max_amount=100_000.0,
        max_line_bytes=1_000_000,
    )


@pytest.fixture
def contract(tmp_path: Path) -> Contract:
    return write_mapping(tmp_path)


def test_expressions_map_split_date_and_time_currency_labels_and_composite_cards(
    tmp_path: Path, contract: Contract
) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    result = ingest(conn, [write_day(tmp_path / "landing", ROWS)], contract)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (8, 3, 5)
    rows = conn.execute(
        "SELECT source_line, event_time, card_id, merchant, category, amount, label "
        "FROM raw.transactions ORDER BY source_line"
    ).fetchall()
    card_70, card_71 = card_pseudonym("7:0", KEY), card_pseudonym("7:1", KEY)
    assert rows == [
        (2, datetime(2025, 1, 2, 9, 15), card_70, "Corner Shop", "5411", 12.5, 0.0),
        (3, datetime(2025, 1, 2, 10, 30), card_71, "Air Lines", "4511", 1234.56, 1.0),
        (4, datetime(2025, 1, 2, 9, 15), card_70, "Corner Shop", "5411", 12.5, 0.0),
    ]


def test_a_failing_expression_quarantines_its_row_with_rule_column_and_line(
    tmp_path: Path, contract: Contract
) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    ingest(conn, [write_day(tmp_path / "landing", ROWS)], contract)
    quarantined = conn.execute(
        "SELECT line, reason, column_name, raw_line FROM raw.quarantine ORDER BY line"
    ).fetchall()
    assert [q[:3] for q in quarantined] == [
        (5, "expression_failed", "event_time"),
        (6, "expression_failed", "label"),
        (7, "missing_required_field", "amount"),
        (8, "unparsable_amount", "amount"),
        (9, "outside_partition_day", "event_time"),
    ]
    # the raw line is there, with the columns the card number is made of masked
    assert quarantined[0][3] == "***,***,2025,1,2,25:99,$3.00,Corner Shop,5411,No"


def test_generated_ids_are_stable_across_redelivery_and_distinct_for_identical_rows(
    tmp_path: Path, contract: Contract
) -> None:
    conn = connect(tmp_path / "warehouse.duckdb")
    file = write_day(tmp_path / "landing", ROWS)
    ingest(conn, [file], contract)
    first = conn.execute(
        "SELECT source_line, transaction_id FROM raw.transactions ORDER BY source_line"
    ).fetchall()
    ids = [i for _, i in first]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)  # lines 2 and 4: two rows

    redelivered = write_day(tmp_path / "again", ROWS)  # the same file delivered again
    ingest(conn, [redelivered], contract)
    assert (
        conn.execute(
            "SELECT source_line, transaction_id FROM raw.transactions ORDER BY source_line"
        ).fetchall()
        == first
    )
    # the same rows in a second file of the day are duplicates, not new transactions
    copy = tmp_path / "landing" / "transactions_2025-01-02_copy.csv"
    shutil.copy(file, copy)
    result = ingest(conn, [file, copy], contract)
    assert result.rows_loaded == 3
    assert result.quarantine_reasons["duplicate_id"] == 3


def test_a_source_timezone_stores_utc_and_partitions_by_the_local_day(tmp_path: Path) -> None:
    contract = write_mapping(tmp_path, MAPPING + "timezone: America/New_York\n")
    rows = [
        "7,0,2025,1,2,22:30,$12.50,Corner Shop,5411,No",  # 03:30 UTC on the 3rd: local day 2nd
        "7,0,2025,1,3,00:30,$12.50,Corner Shop,5411,No",  # local day 3rd: not this partition
    ]
    conn = connect(tmp_path / "warehouse.duckdb")
    result = ingest(conn, [write_day(tmp_path / "landing", rows)], contract)
    assert result.rows_loaded == 1
    assert conn.execute("SELECT event_time, partition_date FROM raw.transactions").fetchall() == [
        (datetime(2025, 1, 3, 3, 30), DAY)
    ]
    assert conn.execute("SELECT line, reason FROM raw.quarantine").fetchall() == [
        (3, "outside_partition_day")
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (  # an expression DuckDB cannot bind over text columns
            (
                "amount: {sql: \"replace(replace(Amount, '$', ''), ',', '')\"}",
                "amount: {sql: Amount + 1}",
            ),
            ("`columns.amount`", "cannot bind", "Amount + 1"),
        ),
        (
            (
                "amount: {sql: \"replace(replace(Amount, '$', ''), ',', '')\"}",
                "amount: {sql: no_such_fn(Amount)}",
            ),
            ("`columns.amount`", "cannot bind", "no_such_fn"),
        ),
        (
            (
                "amount: {sql: \"replace(replace(Amount, '$', ''), ',', '')\"}",
                "amount: {sql: 'Amount +'}",
            ),
            ("`columns.amount`", "cannot parse"),
        ),
        (  # the card's parts inside another column would leak into the warehouse
            ("merchant: Merchant Name", 'merchant: {sql: "\\"Merchant Name\\" || User"}'),
            ("`columns.merchant`", "'User'", "card_number", "personal data"),
        ),
        (
            ("merchant: Merchant Name", "merchant: User"),
            ("`columns.merchant`", "'User'", "card_number", "personal data"),
        ),
        (
            ("target: label", "target: label\ndrop: [MCC]\n"),
            ("`columns.category`", "'MCC'", "drop"),
        ),
        (
            ("category: MCC", 'category: {sql: "lower(MCC)"}\n  first_name: {sql: MCC}'),
            ("`columns.category`", "'MCC'", "first_name", "personal data"),
        ),
        (("merchant: Merchant Name", "merchant: generated"), ("`columns.merchant`", "generated")),
        (
            ("card_number: {", "card_number: {other: x, "),
            ("`columns.card_number`", "{sql: EXPRESSION}"),
        ),
        (
            ("target: label", "target: label\ntimezone: Mars/Olympus"),
            ("`timezone`", "Mars/Olympus"),
        ),
    ],
)
def test_each_invalid_mapping_is_refused_naming_its_key(
    tmp_path: Path, change: tuple[str, str], words: tuple[str, ...]
) -> None:
    assert change[0] in MAPPING
    with pytest.raises(ContractError) as caught:
        write_mapping(tmp_path, MAPPING.replace(change[0], change[1], 1))
    for word in words:
        assert word in str(caught.value)


def test_a_column_an_expression_reads_must_be_in_the_header(
    tmp_path: Path, contract: Contract
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    file = landing / f"transactions_{DAY}.csv"
    file.write_text(HEADER.replace(",Time,", ",Hour,") + "\n" + ROWS[0] + "\n", encoding="utf-8")
    with pytest.raises(FileRejected) as caught:
        ingest(connect(tmp_path / "warehouse.duckdb"), [file], contract)
    assert "`columns.event_time`" in caught.value.reason
    assert "['Time'] missing from the header" in caught.value.reason

"""`mlplatform import`: a history extract split into the landing folder's daily files.

A simulated month of daily files is concatenated into one extract (plus rows whose day cannot
be computed); importing it must write back exactly the daily files, byte for byte, report
the bad rows with their lines, reconcile (read = written + rejected), change nothing when run
again, and with --ingest load the days in one Dagster run on the platform's instance.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.features import card_features
from mlplatform.assets.ingestion import raw_transactions
from mlplatform.contract import load_contract
from mlplatform.ingestion import RejectedRow, import_history, ingest_partitions, landing_files
from mlplatform.settings import DEFAULT_CONTRACT
from mlplatform.warehouse.connection import connect
from tests.conftest import PlatformHome, simulate_landing, wait_until
from tests.test_contract_mapping import HEADER, MAPPING

MAX_LINE_BYTES = 1_000_000


def history_of(daily: list[Path], out: Path, extra: dict[int, bytes] | None = None) -> Path:
    """The daily files as one extract (one header), with ``extra`` lines at these record
    positions (0: the first record, line 2)."""
    records = [line for i, f in enumerate(daily) for line in f.read_bytes().splitlines(True)[1:]]
    for at, line in sorted((extra or {}).items()):
        records.insert(at, line)
    out.write_bytes(daily[0].read_bytes().splitlines(True)[0] + b"".join(records))
    return out


@pytest.fixture
def daily(tmp_path: Path) -> list[Path]:
    simulate_landing(tmp_path / "daily", days=4, cards=30)
    return sorted((tmp_path / "daily").glob("transactions_*.csv"))


def test_an_import_writes_the_daily_files_byte_for_byte_and_reconciles(
    tmp_path: Path, daily: list[Path]
) -> None:
    contract = load_contract(DEFAULT_CONTRACT)
    template = daily[0].read_bytes().splitlines(True)[1].decode()
    fields = template.split(",")
    time_at = next(i for i, f in enumerate(fields) if f.startswith("2025-"))
    bad_time, no_time = list(fields), list(fields)
    bad_time[time_at], no_time[time_at] = "2025-13-45 99:00:00", ""
    history = history_of(
        daily,
        tmp_path / "history.csv",
        {3: ",".join(bad_time).encode(), 5: ",".join(no_time).encode(), 8: b"a,b,c\n"},
    )
    result = import_history(
        [history], tmp_path / "landing", contract, max_line_bytes=MAX_LINE_BYTES
    )

    for file in daily:
        assert (tmp_path / "landing" / file.name).read_bytes() == file.read_bytes()
    assert sorted(result.days) == [date(2025, 1, d) for d in range(1, 5)]
    assert [(r.line, r.reason.split(":")[0]) for r in result.rejected] == [
        (5, "unparsable_timestamp"),
        (7, "missing_required_field"),
        (10, "malformed_row"),
    ]
    written = sum(len(f.read_bytes().splitlines()) - 1 for f in daily)
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (
        written + 3,
        written,
        3,
    )
    # ingestion of the imported files loads what the daily files hold
    with connect(tmp_path / "warehouse.duckdb") as conn:
        loaded, rejected = ingest_partitions(
            conn,
            {day: landing_files(tmp_path / "landing", day) for day in result.days},
            contract=contract,
            pii_key=b"k",
            max_amount=100_000.0,
            max_line_bytes=MAX_LINE_BYTES,
        )
    assert not rejected
    assert sum(r.rows_read for r in loaded.values()) == result.rows_written


def test_importing_the_same_extract_again_changes_nothing(
    tmp_path: Path, daily: list[Path]
) -> None:
    contract = load_contract(DEFAULT_CONTRACT)
    history = history_of(daily, tmp_path / "history.csv")
    landing = tmp_path / "landing"
    first = import_history([history], landing, contract, max_line_bytes=MAX_LINE_BYTES)
    assert len(first.changed) == 4
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in landing.iterdir()}
    again = import_history([history], landing, contract, max_line_bytes=MAX_LINE_BYTES)
    assert again.changed == ()
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in landing.iterdir()} == before


def test_the_day_of_a_row_is_the_local_day_of_its_mapped_event_time(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING + "timezone: America/New_York\n", encoding="utf-8")
    rows = [
        "7,0,2025,1,2,22:30,$12.50,Corner Shop,5411,No",  # 2025-01-03 03:30 UTC
        "7,0,2025,1,3,00:30,$12.50,Corner Shop,5411,No",
        "7,0,2025,1,3,25:30,$12.50,Corner Shop,5411,No",  # no such time
    ]
    extract = tmp_path / "extract.csv"
    extract.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    result = import_history(
        [extract], tmp_path / "landing", load_contract(mapping), max_line_bytes=MAX_LINE_BYTES
    )
    assert {day: path.read_text().splitlines()[1:] for day, path in result.days.items()} == {
        date(2025, 1, 2): [rows[0]],
        date(2025, 1, 3): [rows[1]],
    }
    assert result.rejected == (
        RejectedRow("extract.csv", 4, "expression_failed: `columns.event_time` gave no value"),
    )


def test_a_day_without_records_inside_the_span_gets_a_header_only_file(
    tmp_path: Path, daily: list[Path]
) -> None:
    contract = load_contract(DEFAULT_CONTRACT)
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "transactions_2025-01-03.csv").write_bytes(daily[2].read_bytes())  # landed
    history = history_of([daily[0], daily[3]], tmp_path / "history.csv")  # days 1 and 4

    first = import_history([history], landing, contract, max_line_bytes=MAX_LINE_BYTES)
    again = import_history([history], landing, contract, max_line_bytes=MAX_LINE_BYTES)

    header = daily[0].read_bytes().splitlines(True)[0]
    assert first.empty == (date(2025, 1, 2),)  # the 3rd has its own file: left alone
    assert (landing / "transactions_2025-01-02.csv").read_bytes() == header
    assert (landing / "transactions_2025-01-03.csv").read_bytes() == daily[2].read_bytes()
    assert sorted(first.days) == [date(2025, 1, d) for d in (1, 2, 4)]
    assert sorted(first.changed) == sorted(first.days)
    assert again.changed == () and again.empty == (date(2025, 1, 2),)
    assert first.span == again.span == [date(2025, 1, d) for d in range(1, 5)]


@pytest.mark.e2e
def test_import_with_ingest_loads_the_days_in_one_run_on_the_instance(
    platform_home: PlatformHome, tmp_path: Path, daily: list[Path]
) -> None:
    # Days 2 and 3 without a purchase: empty days of the history, not a reason for two runs.
    daily = [daily[0], daily[3]]
    history = history_of(daily, tmp_path / "history.csv")
    completed = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "import", str(history), "--ingest"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    assert "0 rejected" in completed.stdout
    landed = sorted(platform_home.landing.glob("transactions_*.csv"))
    assert [p.name for p in landed] == [f"transactions_2025-01-0{d}.csv" for d in range(1, 5)]
    assert [len(p.read_bytes().splitlines()) for p in landed[1:3]] == [1, 1]  # header only
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        read, loaded = conn.execute(
            "SELECT sum(rows_read), count(DISTINCT partition_date) FROM raw.ingestion_log"
        ).fetchone()
    assert read == sum(len(f.read_bytes().splitlines()) - 1 for f in daily) and loaded == 4
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_run_records(dg.RunsFilter(job_name="history_ingestion"))
        assert run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert run.dagster_run.tags["dagster/asset_partition_range_start"] == "2025-01-01"
        assert run.dagster_run.tags["dagster/asset_partition_range_end"] == "2025-01-04"
        # One planned event per asset for the range (not one per asset and day), then each
        # day materialized by each asset.
        events = instance.get_records_for_run(run.dagster_run.run_id, limit=10_000).records
        planned = [
            e.event_log_entry.dagster_event.event_specific_data
            for e in events
            if e.event_log_entry.dagster_event_type
            == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ]
        assets = sorted(p.asset_key.path[-1] for p in planned)
        assert assets == ["card_features", "curated_transactions", "raw_transactions"]
        assert all(len(p.partitions_subset) == 4 for p in planned)
        materialized = {
            asset.key.path[-1]: instance.get_materialized_partitions(asset.key)
            for asset in (raw_transactions, curated_transactions, card_features)
        }
        days = {f"2025-01-0{d}" for d in range(1, 5)}
        assert materialized == dict.fromkeys(materialized, days)


def test_records_spanning_lines_and_a_last_line_without_newline_import_whole(
    tmp_path: Path,
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    contract = load_contract(mapping)
    extract = tmp_path / "extract.csv"
    extract.write_text(
        HEADER + "\n"
        '7,0,2025,1,2,09:15,$12.50,"Corner\nShop",5411,No\n'  # lines 2-3: one record
        "7,0,2025,1,3,10:00,$1.00,Bakery,5411,No\n"  # line 4
        "\n"  # line 5: blank
        "7,0,2025,1,2,11:00,$2.00,Kiosk,5411,Yes",  # line 6, no newline at the end
        encoding="utf-8",
    )
    result = import_history([extract], tmp_path / "landing", contract, max_line_bytes=100_000)
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (3, 3, 0)
    second = result.days[date(2025, 1, 2)].read_text(encoding="utf-8")
    assert second == (
        HEADER + "\n"
        '7,0,2025,1,2,09:15,$12.50,"Corner\nShop",5411,No\n'
        "7,0,2025,1,2,11:00,$2.00,Kiosk,5411,Yes\n"
    )
    assert [result.daily_to_source(date(2025, 1, 2), line) for line in (2, 4)] == [2, 6]
    with connect(tmp_path / "warehouse.duckdb") as conn:
        _, rejected = ingest_partitions(
            conn,
            {day: [path] for day, path in result.days.items()},
            contract=contract,
            pii_key=b"k",
            max_amount=100_000.0,
            max_line_bytes=100_000,
        )
        merchants = conn.execute("SELECT merchant FROM raw.transactions ORDER BY 1").fetchall()
    assert not rejected
    assert merchants == [("Bakery",), ("Corner\nShop",), ("Kiosk",)]


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_one_ctrl_c_stops_import_ingest_keeping_the_loaded_days_whole(
    platform_home: PlatformHome, tmp_path: Path, signum: int
) -> None:
    simulate_landing(tmp_path / "long", days=40, cards=30)
    daily = sorted((tmp_path / "long").glob("transactions_*.csv"))
    history = history_of(daily, tmp_path / "history.csv")
    with dg.DagsterInstance.get() as instance:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlplatform.cli", "import", str(history), "--ingest"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_until(
                lambda: instance.get_run_records(
                    dg.RunsFilter(job_name="history_ingestion",
                                  statuses=[dg.DagsterRunStatus.STARTED])
                ),
                "the range run to start",
            )  # fmt: skip
            process.send_signal(signum)
            output, _ = process.communicate(timeout=120)
        finally:
            process.kill()
        runs = instance.get_run_records(dg.RunsFilter(job_name="history_ingestion"))

    assert process.returncode == 130, output[-3000:]
    assert "stopped by Ctrl-C during history_ingestion 2025-01-01 .. 2025-02-09" in output
    assert "`mlplatform import --ingest` again goes on from there" in output
    assert [r.dagster_run.status for r in runs] == [dg.DagsterRunStatus.FAILURE]  # no other run
    rows = {f.name: len(f.read_bytes().splitlines()) - 1 for f in daily}
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        loaded = conn.execute(
            "SELECT file, rows_read, (SELECT count(*) FROM raw.transactions t "
            "WHERE t.partition_date = l.partition_date) FROM raw.ingestion_log l"
        ).fetchall()
    assert all(read == in_table == rows[file] for file, read, in_table in loaded), loaded

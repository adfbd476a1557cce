"""`serving_log`: a day's prediction-log file (JSON Lines) loaded into monitoring.serving_log."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime

import dagster as dg
import duckdb
import pytest

from mlplatform.assets.serving import serving_log
from mlplatform.definitions import build_resources
from mlplatform.settings import get_settings
from tests.conftest import REPO, PlatformHome


def _line(request: str, transaction: str, role: str, returned: bool, score: float, **extra):
    return {
        "request_id": request, "logged_at": "2025-01-02T09:30:00.250Z",
        "event_time": "2025-01-02 09:29:59", "partition_date": "2025-01-02",
        "card_id": "c" * 64, "transaction_id": transaction, "model_name": "m",
        "model_version": "3" if role == "champion" else "4", "role": role,
        "returned": returned, "score": score, "decision": score >= 0.5, "validation_ms": 0.1,
        "features_ms": 1.5, "model_ms": 0.75,
        "event": {"amount": 12.5, "category": "travel", "merchant": "fraud_X"}, **extra,
    }  # fmt: skip


def _materialize(instance: dg.DagsterInstance, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [serving_log], partition_key=day, instance=instance,
        resources=build_resources(get_settings()),
    )  # fmt: skip


def _rows(platform_home: PlatformHome) -> list[tuple]:
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        return conn.execute("SELECT * FROM monitoring.serving_log ORDER BY ALL").fetchall()


def test_a_days_log_file_is_loaded_once_per_day_with_its_roles(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    folder = platform_home.home / "serving"
    folder.mkdir()
    lines = [
        _line("r1", "t1", "champion", True, 0.9),
        _line("r1", "t1", "shadow", False, 0.2, unknown_field="ignored"),
        _line("r2", "t2", "champion", True, 0.1),
    ]
    path = folder / "predictions-2025-01-02.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    first = _materialize(instance, "2025-01-02")
    rows = _rows(platform_home)
    assert _materialize(instance, "2025-01-02").success and _rows(platform_home) == rows
    assert len(rows) == 3
    with duckdb.connect(str(platform_home.warehouse), read_only=True) as conn:
        table = conn.execute("SELECT * FROM monitoring.serving_log ORDER BY score").df()
    assert "event" not in table.columns
    shadow = table.iloc[1]
    assert (shadow.request_id, shadow.role, shadow.returned, shadow.model_version) == (
        "r1", "shadow", False, "4",
    )  # fmt: skip
    assert shadow.logged_at == datetime(2025, 1, 2, 9, 30, 0, 250000)  # UTC, naive
    assert shadow.event_time == datetime(2025, 1, 2, 9, 29, 59)
    assert list(table.decision) == [False, False, True]
    assert table.features_ms.tolist() == [1.5] * 3
    metadata = first.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["dagster/row_count"].value == 3
    assert metadata["rows_champion"].value == 2 and metadata["rows_shadow"].value == 1
    assert metadata["files"].value == path.name
    # The file grows during the day: loading again replaces the day's rows.
    with path.open("a") as handle:
        handle.write(json.dumps(_line("r3", "t3", "champion", True, 0.7)) + "\n")
    _materialize(instance, "2025-01-02")
    assert len(_rows(platform_home)) == 4


def test_a_day_without_a_log_file_has_no_rows_and_says_so(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    result = _materialize(instance, "2025-01-03")
    assert result.success and _rows(platform_home) == []
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["dagster/row_count"].value == 0
    assert metadata["days_without_a_file"].value == "2025-01-03"
    assert metadata["files"].value == "(none)"


WRITER = """
import sys
from pathlib import Path
from mlplatform.serving.prediction_log import PredictionLog
from tests.test_serving_log import _line

log = PredictionLog(Path(sys.argv[1]))
name = sys.argv[2]
sys.stdin.readline()  # every writer starts at once
for batch in range(50):
    log.append([_line(f"{name}-{batch}-{i}", f"{name}-{batch}-{i}", "champion", True, 0.5)
                for i in range(10)])
"""


def test_processes_logging_at_once_each_write_files_of_their_own_and_every_line_loads_once(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    folder = platform_home.home / "serving"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(folder), f"w{n}"], cwd=REPO,
                         stdin=subprocess.PIPE, text=True)
        for n in range(4)
    ]  # fmt: skip
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    assert [writer.wait(timeout=120) for writer in writers] == [0] * 4

    files = sorted(folder.glob("predictions-2025-01-02*.jsonl"))
    assert len(files) == 4  # one per process
    result = _materialize(instance, "2025-01-02")
    assert result.success and _materialize(instance, "2025-01-02").success
    rows = _rows(platform_home)
    assert len(rows) == 4 * 500 and len({row[0] for row in rows}) == 4 * 500
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["files"].value == ", ".join(f.name for f in files)
    assert metadata["unreadable_lines"].value == 0


def test_a_line_a_killed_process_cut_short_is_ended_skipped_and_counted(
    platform_home: PlatformHome, instance: dg.DagsterInstance, caplog: pytest.LogCaptureFixture
) -> None:
    from mlplatform.serving.prediction_log import PredictionLog, log_path

    folder = platform_home.home / "serving"
    log = PredictionLog(folder)
    # A process with this pid was killed mid-line (a restarted container gets the same pid).
    whole = json.dumps(_line("r1", "t1", "champion", True, 0.9))
    log_path(folder, date(2025, 1, 2)).write_text(whole + "\n" + whole[:40])
    log.append([_line("r2", "t2", "champion", True, 0.8)])

    lines = log_path(folder, date(2025, 1, 2)).read_text().splitlines()
    assert lines[1] == whole[:40] and json.loads(lines[2])["request_id"] == "r2"
    with caplog.at_level("WARNING"):
        events = list(log.answered_events(None))
    assert len(events) == 2 and "is not a JSON line; skipped" in caplog.text
    result = _materialize(instance, "2025-01-02")
    assert sorted(row[0] for row in _rows(platform_home)) == ["r1", "r2"]
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["unreadable_lines"].value == 1

"""`mlplatform contract check`: a dry run of a mapping on a sample with known problems."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.contract import load_contract
from mlplatform.features.declarations import feature_registry
from mlplatform.ingestion import check_sample
from mlplatform.settings import get_settings
from tests.conftest import PlatformHome
from tests.test_contract_mapping import HEADER, MAPPING, ROWS

# The sample's problems, with the rule each breaks (lines of the sample).
PROBLEMS = [
    (5, "expression_failed", "event_time"),  # 25:99 is no time of day
    (6, "expression_failed", "label"),  # "Maybe" is neither Yes nor No
    (7, "missing_required_field", "amount"),
    (8, "unparsable_amount", "amount"),
]


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path]:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    path = tmp_path / "sample.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    return path, mapping


def test_a_check_reports_mapping_rows_quarantine_features_and_targets(
    sample: tuple[Path, Path], platform_home: PlatformHome
) -> None:
    path, mapping = sample
    contract = load_contract(mapping)
    settings = get_settings()
    result = check_sample(
        path,
        contract,
        registry=feature_registry(settings, contract),
        discretionary_categories=settings.discretionary_categories,
        pii_key=b"k",
        max_amount=100_000.0,
        max_line_bytes=1_000_000,
    )
    sources = {c.canonical: c.source for c in result.mapping}
    assert sources["transaction_id"] == "generated"
    assert sources["card_number"] == "{sql: User || ':' || Card}"
    assert sources["merchant"] == "Merchant Name" and sources["gender"] == ""
    assert (result.rows_read, result.rows_loaded) == (8, 4)  # line 9 is the next day's
    assert list(result.preview["source_line"]) == [2, 3, 4, 9]
    assert "card_id" in result.preview and "card_number" not in result.preview
    assert [tuple(r) for r in result.quarantined[["line", "reason", "column"]].values] == PROBLEMS
    off = dict(result.features_off)
    assert off["gender"] == "needs gender" and off["age"] == "needs birth_date"
    assert "amount" not in off
    assert result.targets["label"] is None
    assert "discretionary category" in result.targets["revenge_spending"]
    assert not platform_home.warehouse.exists()  # a dry run: the platform is untouched


def test_the_check_command_prints_each_problem_and_fails_an_untrainable_target(
    sample: tuple[Path, Path], platform_home: PlatformHome
) -> None:
    path, mapping = sample

    def check(mapping_path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mlplatform.cli", "contract", "check", str(path),
             "--contract", str(mapping_path)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"},
        )  # fmt: skip

    completed = check(mapping)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    for line, rule, column in PROBLEMS:
        assert any(
            f"│ {line} " in row and rule in row and column in row for row in out.splitlines()
        ), (line, rule)
    assert "***,***,2025,1,2,11:00,$4.00,Corner Shop,5411,Maybe" in out  # card parts masked
    assert "home_merchant_km" in out and "needs home_lat" in out
    assert "target label (the contract's target): trainable" in out
    assert "target revenge_spending: not trainable" in out

    only_no = mapping.with_name("only_no.yaml")  # every label 0: the label cannot train
    only_no.write_text(MAPPING.replace("THEN 1 WHEN", "THEN 0 WHEN"), encoding="utf-8")
    completed = check(only_no)
    assert completed.returncode == 1
    assert "not trainable: no loaded row has label 1" in completed.stdout

    broken = mapping.with_name("broken.yaml")  # a column the sample does not have
    broken.write_text(MAPPING.replace("split_part(Time,", "split_part(Hour,"), encoding="utf-8")
    completed = check(broken)
    assert completed.returncode == 1
    assert "`columns.event_time`" in completed.stdout and "'Hour'" in completed.stdout

"""Quiet, truthful output: the documented commands print no warning a user cannot act on."""

from __future__ import annotations

import subprocess

from tests.conftest import BIN, REPO, PlatformHome, noise_lines, simulate_landing


def test_dg_launch_of_a_partition_prints_no_warning(platform_home: PlatformHome) -> None:
    simulate_landing(platform_home.landing, days=1)
    completed = subprocess.run(
        [str(BIN / "dg"), "launch", "--assets", "raw_transactions", "--partition", "2025-01-01"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    assert "RUN_SUCCESS" in completed.stdout + completed.stderr
    assert noise_lines(completed.stdout + completed.stderr) == []

"""The UI that `make ui` serves (`dagster dev`), opened in a headless Chromium: every asset
group, the sensor and the schedules are there."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, PlatformHome, process_group, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GROUPS = ("ingestion", "curation", "features", "training_data", "training")
AUTOMATION = ("landing_sensor", "daily_ingestion_schedule", "landing_freshness_schedule")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def ui(platform_home: PlatformHome) -> Iterator[str]:
    """`dagster dev` as `make ui` starts it, on a free port of 127.0.0.1: its base URL."""
    port = _free_port()
    command = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    log = platform_home.dagster_home / "dev.log"
    with process_group(command, log):
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/server_info"), "dagster dev to serve", log=log)
        yield url


def _rendered(url: str, profile: Path) -> str:
    """The page's DOM once its scripts have run (headless Chromium, --dump-dom)."""
    completed = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=30000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return completed.stdout


def _shows_all(url: str, profile: Path, names: tuple[str, ...]) -> str | None:
    """The page's DOM when every name is an element's text in it (the UI loads its data
    after the page: look again until it has)."""
    dom = _rendered(url, profile)
    return dom if all(f">{name}<" in dom for name in names) else None


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="NO CHROMIUM: the UI test did not run. `.ci/run` installs Debian's `chromium` "
    "with apt-get as root; here it could not be installed.",
)
@pytest.mark.timeout(300)
def test_the_ui_shows_every_asset_group_the_sensor_and_the_schedules(
    ui: str, tmp_path: Path
) -> None:
    # Each wait fails the test, naming what is missing, when the page never shows it all.
    wait_until(lambda: _shows_all(f"{ui}/assets", tmp_path, GROUPS), f"asset groups {GROUPS}")
    wait_until(
        lambda: _shows_all(f"{ui}/automation", tmp_path, AUTOMATION), f"automation {AUTOMATION}"
    )

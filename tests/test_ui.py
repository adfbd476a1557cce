"""The UI that `make ui` serves (`dagster dev`), opened in a headless Chromium: every asset
group, the sensor and the schedules are there; a failed drift check and the retraining run
the daemon of `dagster dev` launched for it are shown.

One `dagster dev` serves the module (its start is most of a test's time): the failed check is
recorded before it starts, as the second test needs; the first test's pages list every group
and automation whatever the instance holds."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import (
    BIN,
    PlatformHome,
    default_sigterm,
    environment,
    free_port,
    new_platform_home,
    process_group,
    wait_until,
)
from tests.test_retraining_sensor import DRIFT_ASSET, _evaluate

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GROUPS = ("ingestion", "curation", "features", "training_data", "training", "monitoring")
AUTOMATION = ("landing_sensor", "retraining_sensor", "daily_ingestion_schedule",
              "landing_freshness_schedule", "model_performance_schedule")  # fmt: skip


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dagster dev` as `make ui` starts it, on a free port of 127.0.0.1, on a fresh platform
    whose drift check failed on 2025-01-02 (the sensor ticks every second): its base URL."""
    platform_home, env = new_platform_home(tmp_path_factory.mktemp("ui"))
    with environment({**env, "MLPLATFORM_SENSOR_INTERVAL_SECONDS": "1"}):
        with dg.DagsterInstance.get() as instance:
            _evaluate(instance, DRIFT_ASSET, "2025-01-02", passed=False, share_drifted=0.6)
        default_sigterm()  # as the materialization left it: `dagster dev` stops on SIGTERM
        # `dagster dev` runs the daemon: the sensor (on by default) requests the retraining.
        with _dagster_dev(platform_home) as url:
            yield url


@contextmanager
def _dagster_dev(platform_home: PlatformHome) -> Iterator[str]:
    port = free_port()
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
def test_the_ui_shows_every_asset_group_the_sensor_and_the_schedules(
    ui: str, tmp_path: Path
) -> None:
    # Each wait fails the test, naming what is missing, when the page never shows it all.
    wait_until(lambda: _shows_all(f"{ui}/assets", tmp_path, GROUPS), f"asset groups {GROUPS}")
    wait_until(
        lambda: _shows_all(f"{ui}/automation", tmp_path, AUTOMATION), f"automation {AUTOMATION}"
    )


@pytest.mark.skipif(CHROMIUM is None, reason="NO CHROMIUM: see the test above.")
def test_the_ui_shows_a_failed_drift_check_and_the_retraining_run_the_daemon_launched(
    ui: str, tmp_path: Path
) -> None:
    wait_until(
        lambda: _shows_all(f"{ui}/assets/data_drift?view=checks", tmp_path,
                           ("drift_within_threshold",)),
        "the drift check on the data_drift page",
    )  # fmt: skip
    with dg.DagsterInstance.get() as instance:
        (run,) = wait_until(
            lambda: instance.get_run_records(
                dg.RunsFilter(tags={"dagster/sensor_name": "retraining_sensor"})
            ),
            "the retraining run",
        )
    run_id = run.dagster_run.run_id
    wait_until(
        lambda: (
            _shows_all(f"{ui}/runs/{run_id}", tmp_path, ("training",))
            and "retraining_sensor" in _rendered(f"{ui}/runs/{run_id}", tmp_path)
        ),
        "the retraining run's page naming its job and sensor",
    )

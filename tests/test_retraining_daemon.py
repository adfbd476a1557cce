"""A failed drift check leads to a retraining run that the real `dagster-daemon` launches:
the sensor is on by default, requests one `training` run tagged with the check and the day,
posts the alert to the webhook, and asks for nothing more on later ticks; a daemon started
after the demo does not retrain again for the episode the demo retrained for."""

import dagster as dg
import pytest

from mlplatform.automation.sensors import TRIGGER_CHECK, TRIGGER_PARTITION
from mlplatform.demo import evaluate_retraining, sensor_run_tags
from tests.conftest import (
    FINISHED,
    PlatformHome,
    dagster_daemon,
    retraining_runs,
    sensor_ticks,
    wait_until,
    webhook_server,
)
from tests.test_retraining_sensor import DRIFT, DRIFT_ASSET, _evaluate

pytestmark = pytest.mark.e2e


def test_the_daemon_launches_one_retraining_run_for_a_failed_drift_check(
    platform_home: PlatformHome, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_SENSOR_INTERVAL_SECONDS", "1")
    _evaluate(instance, DRIFT_ASSET, "2025-02-01", passed=True)
    _evaluate(instance, DRIFT_ASSET, "2025-02-02", passed=False, share_drifted=0.6)
    log = platform_home.dagster_home / "daemon.log"

    with webhook_server() as hook:
        monkeypatch.setenv("MLPLATFORM_ALERT_WEBHOOK_URL", hook.url)
        with dagster_daemon(platform_home.dagster_home):
            (record,) = wait_until(
                lambda: [r for r in retraining_runs(instance) if r.dagster_run.status in FINISHED],
                "the retraining run",
                log=log,
            )
            # The first completed tick after the run (the newest tick may still be running).
            later = wait_until(
                lambda: next((t for t in sensor_ticks(instance, "retraining_sensor")
                              if t.timestamp > record.create_timestamp.timestamp() + 1
                              and t.is_completed), None),
                "a tick after the retraining run", log=log,
            )  # fmt: skip

    run = record.dagster_run
    assert run.job_name == "training"
    assert run.tags[TRIGGER_CHECK] == DRIFT and run.tags[TRIGGER_PARTITION] == "2025-02-02"
    assert len(retraining_runs(instance)) == 1
    assert "same episode" in later.skip_reason
    (alert,) = hook.received
    assert alert["json"]["title"] == f"Retraining requested: {DRIFT} failed on 2025-02-02"


@dg.asset
def demo_retraining() -> None:
    """Stands in for the training the demo ran (what matters here is the run's tags)."""


def test_a_daemon_started_after_the_demo_finds_the_retraining_the_demo_ran(
    platform_home: PlatformHome, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo ticks the sensor in process and runs the training itself, tagged as the
    daemon tags its runs. A daemon started later (`make ui`), with no cursor, replays the
    check history; the episode still fails, and its request finds the demo's run by its run
    key: no second retraining."""
    from mlplatform.definitions import defs

    monkeypatch.setenv("MLPLATFORM_SENSOR_INTERVAL_SECONDS", "1")
    _evaluate(instance, DRIFT_ASSET, "2025-02-01", passed=True)
    _evaluate(instance, DRIFT_ASSET, "2025-02-02", passed=False, share_drifted=0.6)
    (request,), _, _ = evaluate_retraining(defs, instance, None)
    dg.materialize([demo_retraining], instance=instance,
                   tags=sensor_run_tags(request, "retraining_sensor"))  # fmt: skip
    _evaluate(instance, DRIFT_ASSET, "2025-02-03", passed=False, share_drifted=0.7)
    log = platform_home.dagster_home / "daemon.log"

    with dagster_daemon(platform_home.dagster_home):
        # The daemon's first tick (the one that replays the history), not the newest: a
        # second tick may have completed before the test looks.
        tick = wait_until(
            lambda: [t for t in sensor_ticks(instance, "retraining_sensor") if t.is_completed],
            "a completed tick", log=log,
        )[-1]  # fmt: skip

    assert request.run_key == f"retraining:{DRIFT}:2025-02-02"
    assert tick.run_keys == [request.run_key] and tick.run_ids == []
    assert len(retraining_runs(instance)) == 1  # the demo's

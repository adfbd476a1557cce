"""A failed drift check leads to a retraining run that the real `dagster-daemon` launches:
the sensor is on by default, requests one `training` run tagged with the check and the day,
posts the alert to the webhook, and asks for nothing more on later ticks."""

import dagster as dg
import pytest

from mlplatform.automation.sensors import TRIGGER_CHECK, TRIGGER_PARTITION
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
            wait_until(
                lambda: any(
                    t.timestamp > record.create_timestamp.timestamp() + 1 and t.is_completed
                    for t in sensor_ticks(instance, "retraining_sensor")
                ),
                "a tick after the retraining run",
                log=log,
            )
            later = sensor_ticks(instance, "retraining_sensor")[0]

    run = record.dagster_run
    assert run.job_name == "training"
    assert run.tags[TRIGGER_CHECK] == DRIFT and run.tags[TRIGGER_PARTITION] == "2025-02-02"
    assert len(retraining_runs(instance)) == 1
    assert "same episode" in later.skip_reason
    (alert,) = hook.received
    assert alert["json"]["title"] == f"Retraining requested: {DRIFT} failed on 2025-02-02"

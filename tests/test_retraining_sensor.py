"""The retraining sensor on a real instance: real check evaluations (stand-in monitoring
assets whose checks carry the watched keys, their verdict set by run config) lead to one
training request per failure episode, none within the cooldown, and an alert that a webhook
that is down cannot turn into a failed tick."""

import dagster as dg
import pytest

from mlplatform.automation.sensors import (
    RETRAINING_CHECKS,
    TRIGGER_CHECK,
    TRIGGER_PARTITION,
    TRIGGER_REASON,
    retraining_sensor,
    retraining_sensor_for,
)
from mlplatform.resources import NotifierResource
from tests.conftest import PlatformHome, refused_url, webhook_server

DAYS = dg.DailyPartitionsDefinition(start_date="2025-01-01")
DRIFT = "data_drift:drift_within_threshold"
PERFORMANCE = "model_performance:performance_within_margin"
HOUR = 3600.0
DRIFTED_FEATURES = ["amount", "category", "city_pop", "hour", "merchant", "zip", "weekday"]


class Verdict(dg.Config):
    passed: bool
    severity: str = "ERROR"
    share_drifted: float = 0.0
    says_partition: bool = True


def _monitoring_asset(check: dg.AssetCheckKey) -> dg.AssetsDefinition:
    """A daily asset named like a monitoring asset, with the watched check (as the real
    checks do, it puts the day it judged in its metadata as `partition`)."""
    name = check.asset_key.to_user_string()

    @dg.asset(
        name=name,
        partitions_def=DAYS,
        check_specs=[dg.AssetCheckSpec(check.name, asset=name)],
    )
    def _asset(context: dg.AssetExecutionContext, config: Verdict) -> dg.MaterializeResult:
        return dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    check_name=check.name,
                    passed=config.passed,
                    severity=dg.AssetCheckSeverity[config.severity],
                    description="share of drifted features above 0.5",
                    metadata={
                        **({"partition": context.partition_key} if config.says_partition else {}),
                        "share_drifted": config.share_drifted,
                        "drifted_features": dg.MetadataValue.json(DRIFTED_FEATURES),
                        "report": dg.MetadataValue.md("| feature | psi |\n|---|---|"),
                    },
                )
            ]
        )

    return _asset


DRIFT_ASSET, PERFORMANCE_ASSET = (
    _monitoring_asset(RETRAINING_CHECKS[0]),
    _monitoring_asset(RETRAINING_CHECKS[2]),
)


def _evaluate(
    instance: dg.DagsterInstance, asset: dg.AssetsDefinition, day: str, *, passed: bool, **verdict
) -> None:
    """Materialize ``asset`` for ``day``: its check passes or fails (the run succeeds)."""
    name = asset.key.to_user_string()
    result = dg.materialize(
        [asset],
        instance=instance,
        partition_key=day,
        run_config={"ops": {name: {"config": {"passed": passed, **verdict}}}},
    )
    assert result.success


class Clock:
    """The sensor's notion of now (epoch seconds), moved by the test."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


class Sensor:
    """Ticks of a sensor on the instance, each from the cursor the previous one left."""

    def __init__(self, sensor: dg.SensorDefinition, instance: dg.DagsterInstance, url: str):
        self.sensor, self.instance, self.url = sensor, instance, url
        self.cursor: str | None = None

    def tick(self) -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"notifier": NotifierResource(webhook_url=self.url, timeout_seconds=1)},
        ) as context:
            result = self.sensor(context)
        self.cursor = result.cursor
        return result


def _clocked(instance: dg.DagsterInstance, cooldown_hours: float) -> tuple[Clock, Sensor]:
    """A sensor of the watched checks with ``cooldown_hours``, on a clock the test moves."""
    clock = Clock()
    sensor = retraining_sensor_for(RETRAINING_CHECKS, cooldown_hours, clock=clock)
    return clock, Sensor(sensor, instance, "")


def _skip(result: dg.SensorResult) -> str:
    assert result.run_requests == [], result.run_requests
    return result.skip_reason.skip_message


def test_a_failed_check_requests_one_tagged_training_run_and_a_repeat_requests_none(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    with webhook_server() as hook:
        sensor = Sensor(retraining_sensor, instance, hook.url)
        _evaluate(instance, DRIFT_ASSET, "2025-02-01", passed=True)
        assert _skip(sensor.tick()) == "no failed check"

        _evaluate(instance, DRIFT_ASSET, "2025-02-02", passed=False, share_drifted=0.6)
        (request,) = sensor.tick().run_requests
        assert request.job_name == "training"
        assert request.tags[TRIGGER_CHECK] == DRIFT
        assert request.tags[TRIGGER_PARTITION] == "2025-02-02"
        assert request.tags[TRIGGER_REASON] == (
            "share of drifted features above 0.5 "
            "(drifted_features=amount, category, city_pop, hour, merchant and 2 more, "
            "share_drifted=0.6)"
        )
        assert request.run_key == f"retraining:{DRIFT}:2025-02-02"
        (alert,) = hook.received
        assert alert["json"]["title"] == f"Retraining requested: {DRIFT} failed on 2025-02-02"
        assert alert["json"]["details"][TRIGGER_PARTITION] == "2025-02-02"

        # the same episode: the next tick, and the next failing day, request nothing
        assert "same episode" in _skip(sensor.tick())
        _evaluate(instance, DRIFT_ASSET, "2025-02-03", passed=False, share_drifted=0.7)
        reason = _skip(sensor.tick())
    assert f"{DRIFT} failing since 2025-02-02 (latest 2025-02-03): same episode" in reason
    assert len(hook.received) == 1


def test_a_check_failing_day_after_day_requests_once_until_it_has_passed(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    clock, sensor = _clocked(instance, 24)
    requests = []
    for day in ("2025-02-01", "2025-02-02", "2025-02-03", "2025-02-04"):
        _evaluate(instance, DRIFT_ASSET, day, passed=False)
        requests += sensor.tick().run_requests
        clock.now += 25 * HOUR  # past the cooldown every day
    assert [r.tags[TRIGGER_PARTITION] for r in requests] == ["2025-02-01"]

    _evaluate(instance, DRIFT_ASSET, "2025-02-05", passed=True)  # recovery ends the episode
    assert _skip(sensor.tick()) == "no failed check"
    _evaluate(instance, DRIFT_ASSET, "2025-02-06", passed=False)
    (request,) = sensor.tick().run_requests
    assert request.tags[TRIGGER_PARTITION] == "2025-02-06"


def test_a_new_episode_within_the_cooldown_waits_for_it_then_requests_once(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    clock, sensor = _clocked(instance, 24)
    _evaluate(instance, DRIFT_ASSET, "2025-02-01", passed=False)
    assert len(sensor.tick().run_requests) == 1
    _evaluate(instance, DRIFT_ASSET, "2025-02-02", passed=True)
    _evaluate(instance, DRIFT_ASSET, "2025-02-03", passed=False)
    _evaluate(instance, PERFORMANCE_ASSET, "2025-02-03", passed=False)
    clock.now += 10 * HOUR

    waiting = _skip(sensor.tick())
    assert waiting.startswith("cooldown until 2025-06-16T")  # the first request + 24 h
    assert f"{DRIFT} failed on 2025-02-03" in waiting and PERFORMANCE in waiting

    clock.now += 15 * HOUR  # the cooldown is over: no new evaluation is needed
    (request,) = sensor.tick().run_requests  # one run for both failing checks
    assert request.tags[TRIGGER_PARTITION] == "2025-02-03"
    assert f"also {PERFORMANCE} failed on 2025-02-03" in request.tags[TRIGGER_REASON]
    clock.now += 25 * HOUR
    assert "same episode" in _skip(sensor.tick())


def test_reevaluating_an_older_day_or_a_warning_starts_no_episode(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    _, sensor = _clocked(instance, 0)
    _evaluate(instance, DRIFT_ASSET, "2025-02-10", passed=True)
    _evaluate(instance, DRIFT_ASSET, "2025-02-11", passed=False, severity="WARN")
    _evaluate(instance, DRIFT_ASSET, "2025-01-20", passed=False)  # a backfill of history
    assert _skip(sensor.tick()) == "no failed check"


def test_the_watched_checks_are_a_parameter(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    only_performance = retraining_sensor_for([RETRAINING_CHECKS[2]], 24, name="perf_only")
    sensor = Sensor(only_performance, instance, "")
    _evaluate(instance, DRIFT_ASSET, "2025-02-01", passed=False)
    assert _skip(sensor.tick()) == "no failed check"
    _evaluate(instance, PERFORMANCE_ASSET, "2025-02-01", passed=False)
    (request,) = sensor.tick().run_requests
    assert request.tags[TRIGGER_CHECK] == PERFORMANCE


def test_a_check_that_does_not_say_its_day_is_judged_on_its_runs_partition(
    platform_home: PlatformHome, instance: dg.DagsterInstance
) -> None:
    _, sensor = _clocked(instance, 24)
    _evaluate(instance, DRIFT_ASSET, "2025-03-04", passed=False, says_partition=False)
    (request,) = sensor.tick().run_requests
    assert request.tags[TRIGGER_PARTITION] == "2025-03-04"


@pytest.mark.parametrize("down", ["refused", "5xx"])
def test_a_webhook_that_is_down_does_not_fail_the_tick(
    platform_home: PlatformHome, instance: dg.DagsterInstance, down: str
) -> None:
    _evaluate(instance, DRIFT_ASSET, "2025-02-01", passed=False)
    with webhook_server() as hook:
        hook.status = 500
        url = refused_url() if down == "refused" else hook.url
        (request,) = Sensor(retraining_sensor, instance, url).tick().run_requests
    assert request.tags[TRIGGER_PARTITION] == "2025-02-01"

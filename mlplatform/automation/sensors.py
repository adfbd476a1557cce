"""Sensors: the landing folder (new or corrected files, one run per range of days) and
retraining (a failed monitoring check on a new day requests one training run per episode)."""

import functools
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

import dagster as dg
import duckdb

from mlplatform.assets.ingestion import card_reference
from mlplatform.assets.partitions import consecutive_ranges, daily_partitions, partition_range_tags
from mlplatform.automation.jobs import daily_ingestion_job, reference_data_job, training_job
from mlplatform.ingestion import inspect_file, loaded_files, partition_date_of
from mlplatform.resources import LandingZoneResource, NotifierResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.connection import WarehouseLockedError, WarehouseUnavailableError

if TYPE_CHECKING:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord

ALREADY_LOADED = "already loaded for its partition, same SHA-256 (raw.ingestion_log)"
REFERENCE_LOADED = "the card reference already loaded (same SHA-256)"
UNCHANGED = "touched, same content as when it was requested"
NO_PARTITION = "no daily partition (yet) for the date in its name"


def _fingerprint(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_mtime_ns, stat.st_size]


def warehouse_loads(
    log: logging.Logger, warehouse: WarehouseResource
) -> dict[tuple[date, str], str] | None:
    """The files the warehouse has loaded (see ``loaded_files``), read read-only without
    waiting; None (logged) when it cannot be read now, e.g. another process holds it."""
    if not warehouse.exists:
        return {}
    try:
        with warehouse.connection(read_only=True, wait=False) as conn:
            return loaded_files(conn)
    except WarehouseLockedError as error:
        reason = f"{error.holder} holds it"
    except (duckdb.Error, WarehouseUnavailableError) as error:
        reason = str(error)
    log.warning(f"cannot read {warehouse.name} ({reason}): judging landing files without it")
    return None


def _loaded_reference_sha256(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(card_reference.key)
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get("sha256") if materialization else None
    return value.value if value else None


def _ingestion_request(
    first: date, last: date, files: list[tuple[date, str, str]]
) -> dg.RunRequest:
    """One run of the days first..last for their new or changed (day, file, sha256)."""
    if len(files) == 1:
        digest = files[0][2]
        tags = {"mlplatform/file": files[0][1], "mlplatform/sha256": digest}
    else:
        listing = "\n".join(f"{day}/{name}:{sha256}" for day, name, sha256 in files)
        digest = hashlib.sha256(listing.encode()).hexdigest()
        tags = {"mlplatform/files": f"{files[0][1]} .. {files[-1][1]} ({len(files)} files)"}
    if first == last:
        return dg.RunRequest(
            run_key=f"{first}:{digest}",
            job_name=daily_ingestion_job.name,
            partition_key=first.isoformat(),
            tags=tags,
        )
    return dg.RunRequest(
        run_key=f"{first}..{last}:{digest}",
        job_name=daily_ingestion_job.name,
        tags={**tags, **partition_range_tags(first, last)},
    )


def _skip_summary(skipped: dict[str, list[str]]) -> str:
    """'<file or N files, first .. last>: <reason>' for each reason, joined by '; '."""
    parts = []
    for reason, names in skipped.items():
        names = sorted(names)
        which = names[0] if len(names) == 1 else f"{len(names)} files, {names[0]} .. {names[-1]}"
        parts.append(f"{which}: {reason}")
    return "; ".join(parts)


@dg.sensor(
    jobs=[daily_ingestion_job, reference_data_job],
    minimum_interval_seconds=get_settings().sensor_interval_seconds,
    description="Requests ingestion of the days whose landing files are new or changed: files "
    "that arrive together are one run over their range of days (consecutive days; run key = "
    "days + SHA-256). A file the warehouse has already loaded for its day with the same "
    "content (raw.ingestion_log, whoever loaded it) is never requested; a corrected one is. "
    "Also requests a reference reload when the reference file changes. Each tick says what "
    "it skipped and why.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext,
    landing: LandingZoneResource,
    warehouse: WarehouseResource,
) -> dg.SensorResult:
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    settle = get_settings().landing_settle_seconds
    reference = landing.contract.reference
    partitions = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    # Read once, and only on a tick with a file to judge (None: the cursor alone decides).
    loads = functools.cache(lambda: warehouse_loads(context.log, warehouse))
    requests: list[dg.RunRequest] = []
    changed: dict[date, list[tuple[str, str]]] = defaultdict(list)
    skipped: dict[str, list[str]] = defaultdict(list)
    for path in sorted(landing.path.glob("*.csv")) if landing.path.is_dir() else []:
        fingerprint = _fingerprint(path)
        previous = seen.get(path.name, [None, None, None])
        if previous[:2] == fingerprint:
            continue  # judged on an earlier tick, not modified since
        if time.time() - fingerprint[0] / 1e9 < settle:
            skipped[f"modified less than {settle:g}s ago (maybe still being written)"].append(
                path.name
            )
            continue  # look again next tick
        partition = partition_date_of(path)
        is_reference = reference is not None and path.name == reference.file
        if not is_reference and (partition is None or partition.isoformat() not in partitions):
            skipped[NO_PARTITION].append(path.name)
            continue  # not recorded: its day may have a partition on a later tick
        sha256 = inspect_file(path).sha256
        seen[path.name] = [*fingerprint, sha256]
        if is_reference:
            if sha256 in (previous[2], _loaded_reference_sha256(context.instance)):
                skipped[REFERENCE_LOADED].append(path.name)
            else:
                requests.append(
                    dg.RunRequest(
                        run_key=f"reference:{sha256}",
                        job_name=reference_data_job.name,
                        tags={"mlplatform/file": path.name, "mlplatform/sha256": sha256},
                    )
                )
        elif (loaded := loads()) is not None and loaded.get((partition, path.name)) == sha256:
            skipped[ALREADY_LOADED].append(path.name)
        elif previous[2] == sha256:
            skipped[UNCHANGED].append(path.name)
        else:
            changed[partition].append((path.name, sha256))
    for first, last in consecutive_ranges(sorted(changed)):
        files = sorted(
            (day, name, sha256)
            for day, day_files in changed.items()
            if first <= day <= last
            for name, sha256 in day_files
        )
        requests.append(_ingestion_request(first, last, files))
    summary = _skip_summary(skipped)
    if requests and summary:
        context.log.info(f"not requested: {summary}")
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(seen, sort_keys=True),
        skip_reason=None if requests else dg.SkipReason(summary or "no new or changed file"),
    )


#: The monitoring checks whose failure (severity ERROR) on a new day requests retraining.
RETRAINING_CHECKS = (
    dg.AssetCheckKey(dg.AssetKey("data_drift"), "drift_within_threshold"),
    dg.AssetCheckKey(dg.AssetKey("prediction_drift"), "prediction_drift_within_threshold"),
    dg.AssetCheckKey(dg.AssetKey("model_performance"), "performance_within_margin"),
)
TRIGGER_CHECK = "mlplatform/trigger_check"
TRIGGER_PARTITION = "mlplatform/trigger_partition"
TRIGGER_REASON = "mlplatform/trigger_reason"
_PAGE = 500
_REASON_CHARS = 500
_LISTED = 5  # names of a list figure in a reason; the rest are counted


@dataclass(frozen=True)
class CheckVerdict:
    """One completed evaluation of a watched check: on which day, and why it failed."""

    check: str  # the AssetCheckKey's user string, "asset:check"
    storage_id: int
    partition: str | None
    failed: bool
    reason: str


def _figure(value: dg.MetadataValue) -> str | None:
    """A metadata value as a short figure: numbers, flags, one-line text, lists of names
    (the first few, then how many more; None for what does not fit in a line: tables,
    Markdown, paths)."""
    if isinstance(value, dg.FloatMetadataValue):
        return f"{value.value:.4g}"
    if isinstance(value, dg.IntMetadataValue | dg.BoolMetadataValue):
        return str(value.value)
    if isinstance(value, dg.TextMetadataValue) and "\n" not in value.value:
        return value.value
    if isinstance(value, dg.JsonMetadataValue) and isinstance(value.value, list):
        names, more = value.value[:_LISTED], len(value.value) - _LISTED
        return ", ".join(map(str, names)) + (f" and {more} more" if more > 0 else "")
    return None


def _check_reason(evaluation: dg.AssetCheckEvaluation) -> str:
    """The check's description and its figures, e.g. "… (share_drifted=0.6, …)"."""
    figures = ", ".join(
        f"{name}={figure}"
        for name, value in evaluation.metadata.items()
        if name != "partition" and (figure := _figure(value)) is not None
    )
    reason = " ".join(filter(None, [evaluation.description, f"({figures})" if figures else ""]))
    return (reason or "failed")[:_REASON_CHARS]


def _judged_partition(
    instance: dg.DagsterInstance, record: "AssetCheckExecutionRecord"
) -> str | None:
    """The day a check judged: its ``partition`` metadata, else the execution's partition,
    else its run's ``dagster/partition`` tag (None for a range run or no partition)."""
    evaluation = record.event.asset_check_evaluation
    if (partition := evaluation.metadata.get("partition")) is not None:
        return str(partition.value)
    if record.partition:
        return record.partition
    run = instance.get_run_by_id(record.run_id)
    return run.tags.get("dagster/partition") if run else None


def check_verdicts(
    instance: dg.DagsterInstance, checks: Sequence[dg.AssetCheckKey], after_id: int
) -> tuple[list[CheckVerdict], int | None]:
    """The completed evaluations of ``checks`` stored after ``after_id``, oldest first, and
    the storage id of the oldest one still in progress (None when none is).

    Read from the instance's check executions: a failed check does not fail its run, so
    run-status sensors never see it. An execution's id is given when its run plans it, so
    one still running may complete after a newer one: the caller reads again from there."""
    verdicts, open_ids = [], []
    for key in checks:
        cursor = None
        while True:
            records = instance.event_log_storage.get_asset_check_execution_history(
                key, limit=_PAGE, cursor=cursor
            )
            new = [r for r in records if r.id > after_id]
            for record in new:
                evaluation = record.event.asset_check_evaluation if record.event else None
                if evaluation is None:  # planned: still running, or its run ended without it
                    run = instance.get_run_by_id(record.run_id)
                    if run is not None and not run.is_finished:
                        open_ids.append(record.id)
                    continue
                verdicts.append(
                    CheckVerdict(
                        check=key.to_user_string(),
                        storage_id=record.id,
                        partition=_judged_partition(instance, record),
                        # A WARN failure is for a person to look at; ERROR calls for retraining.
                        failed=not evaluation.passed
                        and evaluation.severity == dg.AssetCheckSeverity.ERROR,
                        reason=_check_reason(evaluation),
                    )
                )
            if len(new) < len(records) or len(records) < _PAGE:
                break
            cursor = records[-1].id
    return sorted(verdicts, key=lambda v: v.storage_id), min(open_ids, default=None)


@dataclass
class Episode:
    """A watched check's state: the latest day judged and, while it fails, since when, the
    latest failed day and its reason, and whether retraining was requested for it."""

    judged: str | None = None
    failing_since: str | None = None
    partition: str | None = None
    reason: str = ""
    requested: bool = False

    def judge(self, verdict: CheckVerdict) -> None:
        """Take in one evaluation; an older day's re-evaluation (a backfill of history)
        neither starts nor ends an episode."""
        if None not in (verdict.partition, self.judged) and verdict.partition < self.judged:
            return
        self.judged = verdict.partition
        if not verdict.failed:  # recovery ends the episode
            self.failing_since, self.partition, self.reason, self.requested = None, None, "", False
            return
        if self.failing_since is None:
            self.failing_since = verdict.partition or "(unpartitioned)"
        self.partition, self.reason = verdict.partition, verdict.reason


@dataclass
class RetrainingState:
    """The retraining sensor's cursor: every check execution up to ``after_id`` is judged
    (and those in ``seen`` above it), each check's episode, and when retraining was last
    requested (epoch seconds)."""

    after_id: int
    seen: set[int]
    episodes: dict[str, Episode]
    last_request: float | None

    def judge(self, verdicts: list[CheckVerdict], oldest_open: int | None) -> None:
        """Take in the evaluations not judged yet; keep reading from the oldest still open."""
        for verdict in verdicts:
            if verdict.storage_id not in self.seen:
                self.episodes.setdefault(verdict.check, Episode()).judge(verdict)
                self.seen.add(verdict.storage_id)
        newest = max([self.after_id, *self.seen])
        self.after_id = newest if oldest_open is None else oldest_open - 1
        self.seen = {i for i in self.seen if i > self.after_id}

    @classmethod
    def from_cursor(cls, cursor: str | None) -> Self:
        data = json.loads(cursor) if cursor else {}
        return cls(
            after_id=data.get("after_id", 0),
            seen=set(data.get("seen", [])),
            episodes={k: Episode(**v) for k, v in data.get("episodes", {}).items()},
            last_request=data.get("last_request"),
        )

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "after_id": self.after_id,
                "seen": sorted(self.seen),
                "episodes": {k: vars(v) for k, v in self.episodes.items()},
                "last_request": self.last_request,
            },
            sort_keys=True,
        )


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="minutes")


def _retraining_request(pending: dict[str, Episode]) -> dg.RunRequest:
    """One training run for the failing checks of ``pending`` (tagged with the first)."""
    check, episode = min(pending.items(), key=lambda item: (item[1].failing_since, item[0]))
    others = "; ".join(f"also {name} failed on {e.partition}" for name, e in pending.items()
                       if name != check)  # fmt: skip
    return dg.RunRequest(
        # The episode's first day: stable while it lasts, so that a sensor whose cursor is
        # gone (a new daemon after the demo) finds the run it already requested.
        run_key=f"retraining:{check}:{episode.failing_since}",
        job_name=training_job.name,
        tags={
            TRIGGER_CHECK: check,
            TRIGGER_PARTITION: str(episode.partition),
            TRIGGER_REASON: "; ".join(filter(None, [episode.reason, others]))[:_REASON_CHARS],
        },
    )


def retraining_sensor_for(
    checks: Sequence[dg.AssetCheckKey],
    cooldown_hours: float,
    *,
    name: str = "retraining_sensor",
    clock: Callable[[], float] = time.time,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A sensor that requests the ``training`` job when one of ``checks`` fails (severity
    ERROR) on a new day: one run per failure episode (a check that keeps failing requests
    nothing more until it has passed once) and at most one per ``cooldown_hours``."""
    cooldown = cooldown_hours * 3600

    @dg.sensor(
        name=name,
        job=training_job,
        minimum_interval_seconds=get_settings().sensor_interval_seconds,
        default_status=default_status,
        description="Requests a `training` run when a monitoring check fails (severity "
        "ERROR) on a new day: " + ", ".join(f"`{k.to_user_string()}`" for k in checks)
        + f". One run per failure episode (a check that keeps failing requests nothing more "
        f"until it has passed once) and at most one per {cooldown_hours:g} h "
        "(MLPLATFORM_RETRAINING_COOLDOWN_HOURS); the run is tagged with the check, the day and "
        "the reason, and an alert goes to the notifier. The champion step still decides.",
    )  # fmt: skip
    def _sensor(context: dg.SensorEvaluationContext, notifier: NotifierResource) -> dg.SensorResult:
        state = RetrainingState.from_cursor(context.cursor)
        state.judge(*check_verdicts(context.instance, checks, state.after_id))
        failing = {k: e for k, e in sorted(state.episodes.items()) if e.failing_since}
        pending = {k: e for k, e in failing.items() if not e.requested}
        now = clock()
        ready_at = (state.last_request or -float("inf")) + cooldown
        if not pending:
            why = "; ".join(
                f"{k} failing since {e.failing_since} (latest {e.partition}): same episode, "
                "retraining already requested; waits for a pass"
                for k, e in failing.items()
            )  # fmt: skip
            return dg.SensorResult(cursor=state.to_cursor(), skip_reason=why or "no failed check")
        if now < ready_at:
            which = "; ".join(f"{k} failed on {e.partition}" for k, e in pending.items())
            return dg.SensorResult(
                cursor=state.to_cursor(),
                skip_reason=f"cooldown until {_utc(ready_at)} (last retraining request "
                f"{_utc(state.last_request)}): {which}",
            )
        request = _retraining_request(pending)
        for episode in pending.values():
            episode.requested = True
        state.last_request = now
        tags = request.tags
        notifier.notify(
            f"Retraining requested: {tags[TRIGGER_CHECK]} failed on {tags[TRIGGER_PARTITION]}",
            tags[TRIGGER_REASON],
            {"job": training_job.name, "run_key": request.run_key, **tags},
            log=context.log,
        )
        return dg.SensorResult(run_requests=[request], cursor=state.to_cursor())

    return _sensor


retraining_sensor = retraining_sensor_for(
    RETRAINING_CHECKS, get_settings().retraining_cooldown_hours
)

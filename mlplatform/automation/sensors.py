"""The landing-folder sensor: new or corrected landing files, one run per range of days."""

import hashlib
import json
import logging
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb

from mlplatform.assets.ingestion import card_reference
from mlplatform.assets.partitions import consecutive_ranges, daily_partitions, partition_range_tags
from mlplatform.automation.jobs import daily_ingestion_job, reference_data_job
from mlplatform.resources import LandingZoneResource, WarehouseResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.connection import WarehouseLockedError
from mlplatform.warehouse.ingestion import inspect_file, partition_date_of
from mlplatform.warehouse.ingestion_log import loaded_files

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
    if not Path(warehouse.path).exists():
        return {}
    try:
        with warehouse.connection(read_only=True, wait=False) as conn:
            return loaded_files(conn)
    except WarehouseLockedError as error:
        reason = f"{error.holder} holds it"
    except duckdb.Error as error:
        reason = str(error)
    log.warning(f"cannot read {warehouse.path} ({reason}): judging landing files without it")
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
    loaded = warehouse_loads(context.log, warehouse)  # None: the cursor alone decides
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
        elif loaded is not None and loaded.get((partition, path.name)) == sha256:
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

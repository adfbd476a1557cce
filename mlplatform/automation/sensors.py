"""The landing-folder sensor: a run per new or changed file, keyed by the file's hash."""

import json
import time
from pathlib import Path

import dagster as dg

from mlplatform.assets.partitions import daily_partitions
from mlplatform.automation.jobs import daily_ingestion_job, reference_data_job
from mlplatform.resources import LandingZoneResource
from mlplatform.settings import get_settings
from mlplatform.warehouse.ingestion import inspect_file, partition_date_of


def _fingerprint(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_mtime_ns, stat.st_size]


@dg.sensor(
    jobs=[daily_ingestion_job, reference_data_job],
    minimum_interval_seconds=get_settings().sensor_interval_seconds,
    description="Requests ingestion of a landing file's partition when the file is new or its "
    "content changed (run key = partition + SHA-256: the same file never loads twice, a "
    "corrected one does), and a reference reload when the reference file changes.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext, landing: LandingZoneResource
) -> dg.SensorResult:
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    settle = get_settings().landing_settle_seconds
    reference = landing.contract.reference
    partitions = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    requests, skips = [], []
    for path in sorted(landing.path.glob("*.csv")) if landing.path.is_dir() else []:
        fingerprint = _fingerprint(path)
        previous = seen.get(path.name, [None, None, None])
        if previous[:2] == fingerprint:
            continue
        if time.time() - fingerprint[0] / 1e9 < settle:
            continue  # maybe still being written: look again next tick
        sha256 = inspect_file(path).sha256
        seen[path.name] = [*fingerprint, sha256]
        if previous[2] == sha256:
            continue  # touched, not changed
        if reference and path.name == reference.file:
            requests.append(
                dg.RunRequest(
                    run_key=f"reference:{sha256}",
                    job_name=reference_data_job.name,
                    tags={"mlplatform/file": path.name, "mlplatform/sha256": sha256},
                )
            )
            continue
        partition = partition_date_of(path)
        if partition is None or partition.isoformat() not in partitions:
            skips.append(f"{path.name}: no daily partition for its date")
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"{partition.isoformat()}:{sha256}",
                job_name=daily_ingestion_job.name,
                partition_key=partition.isoformat(),
                tags={"mlplatform/file": path.name, "mlplatform/sha256": sha256},
            )
        )
    for message in skips:
        context.log.warning(message)
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(seen, sort_keys=True),
        skip_reason=None if requests else dg.SkipReason("no new or changed landing file"),
    )

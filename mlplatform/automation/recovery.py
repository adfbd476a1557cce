"""Dead runs: a run whose process is gone (kill -9, an OOM kill, a closed laptop) is marked
failed and the pool slots it held are freed, so the next warehouse-writing run proceeds.

Where the daemon runs, Dagster does this itself (the code server notices its run worker died;
run monitoring in dagster.yaml frees the slots of finished runs). Where it does not (runs in
process: `mlplatform demo`, `dagster asset materialize`), :func:`recover_dead_runs` does,
from `mlplatform runs recover` and at the start of the demo. It judges processes of this
machine: the local instance's runs run here.
"""

import os
from pathlib import Path

import dagster as dg

UNFINISHED = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _run_process(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started executing the run (its RUN_START event)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event else None


def process_is_gone(pid: int) -> bool:
    """True when no process has this pid any more (a zombie, dead but not reaped, counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's process: alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


def _label(run: dg.DagsterRun) -> str:
    tags = run.tags
    days = tags.get("dagster/partition") or (
        f"{tags['dagster/asset_partition_range_start']}..{tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in tags
        else None
    )
    return f"run {run.run_id} ({run.job_name}{f', {days}' if days else ''})"


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every started run whose process is gone, saying so in the run's log, and
    free the concurrency-pool slots held by runs that are over; one line per action."""
    actions = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        pid = _run_process(instance, run.run_id)
        if pid is None or not process_is_gone(pid):
            continue
        message = (
            f"{_label(run)} was {run.status.value} but its process (pid {pid}) is gone "
            "(killed, or its machine stopped): marked failed by `mlplatform runs recover`. "
            "The warehouse keeps what it had before: each load commits in one transaction. "
            "Run the same partitions again."
        )
        instance.report_engine_event(message, run)
        instance.report_run_failed(run, message)
        actions.append(message)
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return actions
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            continue
        storage.free_concurrency_slots_for_run(run_id)
        status = run.status.value if run else "deleted"
        actions.append(
            f"freed the pool slots still held by {_label(run) if run else f'run {run_id}'}, "
            f"which is over ({status})"
        )
    return actions

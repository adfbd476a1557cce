"""`mlplatform demo`: the platform's whole story on generated data, on the Dagster instance the
UI uses (every run shows in `make ui`).

1. History: the first days (no champion yet) are one `daily_ingestion` run over their range.
2. First training: targets, master table, candidates and the champion competition.
3. Then day by day, as production would see them: each day's run ingests, curates, builds
   features, scores with the champion and monitors drift; after each day the
   `retraining_sensor` is evaluated on the instance, and a run it requests (a drift or
   performance check failed) is run: the champion competition decides whether the challenger
   replaces the champion.
4. Model performance on the days whose labels have matured, then a summary and how to open
   the Dagster UI, the MLflow UI and the REST service.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
from rich.console import Console
from rich.table import Table

from mlplatform.assets.partitions import consecutive_ranges, partition_range_tags
from mlplatform.resources import WarehouseResource
from mlplatform.settings import Settings, get_settings
from mlplatform.warehouse.connection import table_exists

#: The runs' console log shows errors only: the story prints each step's outcome itself (a
#: rejected challenger is a WARNING in the run's log, and in the story a decision with its why).
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclass
class Story:
    """What the demo did, for its summary: failures, retraining decisions, drifted days."""

    failures: list[str] = field(default_factory=list)
    retrainings: list[str] = field(default_factory=list)
    drift_days: dict[date, list[str]] = field(default_factory=dict)


def recover_runs(instance: dg.DagsterInstance, console: Console) -> list[str]:
    """Fail runs whose process is gone and free the pool slots of runs that are over; each
    action is printed."""
    from mlplatform.automation.recovery import recover_dead_runs

    actions = recover_dead_runs(instance)
    for action in actions:
        console.print(action, style="yellow", markup=False, highlight=False)
    return actions


class Interrupted(Exception):
    """Ctrl-C (SIGINT, or SIGTERM) interrupted a run: it failed, and the command stops."""


#: Signals received since :func:`stop_on_interrupt` began (see :func:`_ctrl_c_received`).
_received: ContextVar[Callable[[], bool] | None] = ContextVar("_received", default=None)


def _ctrl_c_received() -> bool:
    """Whether SIGINT or SIGTERM came while the command ran, whatever handler Dagster had
    installed at that moment (Python writes every signal to the wake-up pipe)."""
    received = _received.get()
    return received is not None and received()


@contextmanager
def stop_on_interrupt(console: Console, command: str) -> Iterator[None]:
    """One Ctrl-C (or SIGTERM) stops ``command``: the run it interrupts fails (each day that
    run finished stays loaded, the others are untouched), no other run starts, and the
    command says so and exits 130."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    seen = bytearray()

    def received() -> bool:
        with suppress(BlockingIOError):
            seen.extend(os.read(read, 64))
        return signal.SIGINT in seen or signal.SIGTERM in seen

    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    token = _received.set(received)
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as error:
        during = f" during {error}" if isinstance(error, Interrupted) else ""
        console.print(
            f"stopped by Ctrl-C{during}. Every day loaded before is kept, the others are "
            f"untouched; `{command}` again goes on from there (a loaded day is not loaded "
            "twice).",
            style="yellow", markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise SystemExit(130) from None
    finally:
        _received.reset(token)
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGTERM, previous)
        os.close(read)
        os.close(write)


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    console: Console,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    partition: date | None = None,
    label: str = "",
) -> str | None:
    """Run a job of the code location in process, quietly; the failure message, if any."""
    with console.status(f"running {name} {label}".strip()):
        result = defs.resolve_job_def(name).execute_in_process(
            instance=instance,
            run_config=QUIET,
            tags=tags,
            partition_key=partition.isoformat() if partition else None,
            raise_on_error=False,
        )
    if result.success:
        return None
    if _ctrl_c_received():  # the run failed because Ctrl-C interrupted it
        raise Interrupted(" ".join(filter(None, (name, label, f"(run {result.run_id})"))))
    messages = [
        e.step_failure_data.error.message.strip()
        for e in result.get_step_failure_events()
        if e.step_failure_data.error
    ]
    return f"{name} {label} (run {result.run_id}): " + "\n".join(messages)


def hold_connections(instance: dg.DagsterInstance) -> None:
    """Make ``instance``'s storages keep their database connections open between writes,
    for a command that runs jobs in its own process.

    Dagster's Postgres storages otherwise open one per query: a range run writes thousands
    of events, each connection ~11 ms of authentication on a local PostgreSQL 15
    (bench/README). The method is Dagster's for its webserver; no statement timeout here
    (0: a run's writes are not cut short). The embedded SQLite storages are unchanged by it.
    """
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)


def run_range(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    console: Console,
    job: str,
    first: date,
    last: date,
) -> str | None:
    """One run of a daily job over ``first``..``last`` (one partition, or a range).

    A range run announces each asset's days in one planned-materialization event, not one
    per asset and day (each event is a write of the event log: ~12 ms on SQLite, thousands
    for years of history). Dagster's price: while the run goes, and after it failed, the UI
    shows its days not yet done as missing rather than in progress or failed; the run itself
    shows as failed, and this command names the failure.
    """
    if first == last:
        return run_job(defs, instance, console, job, partition=first, label=str(first))
    tags = partition_range_tags(first, last)
    with _environment(DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS="true"):
        return run_job(defs, instance, console, job, tags=tags, label=f"{first} .. {last}")


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """The environment variables set to ``values`` inside the block, as they were after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def landing_days(settings: Settings) -> list[date]:
    """The days that have a landing file, in order."""
    from mlplatform.ingestion import partition_date_of

    return sorted({d for p in settings.landing_dir.glob("*.csv") if (d := partition_date_of(p))})


def failed_checks(instance: dg.DagsterInstance) -> list[str]:
    """The monitoring checks (those the retraining sensor watches) whose latest evaluation
    failed: after a day's run, that day's verdicts."""
    from mlplatform.automation.sensors import RETRAINING_CHECKS

    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        list(RETRAINING_CHECKS)
    )
    return [
        key.name
        for key, record in latest.items()
        if record.event is not None
        and record.event.asset_check_evaluation is not None
        and not record.event.asset_check_evaluation.passed
    ]


def print_day(
    warehouse: WarehouseResource, day: date, failed: list[str], console: Console, story: Story
) -> None:
    """One line per monitored day: rows, the champion that scored them, the drift figures
    and the monitoring checks that ``failed``."""
    with warehouse.connection(read_only=True) as conn:
        rows, version, flagged = conn.execute(
            """SELECT count(*), any_value(model_version), avg(decision::INTEGER)
               FROM ml.predictions WHERE partition_date = ?""",
            [day],
        ).fetchone()
        drift = (
            conn.execute(
                """SELECT feature, drifted, psi FROM monitoring.drift
                   WHERE partition_date = ? AND kind <> 'prediction' ORDER BY psi DESC""",
                [day],
            ).fetchall()
            if table_exists(conn, "monitoring.drift")
            else []
        )
    if not rows:
        console.print(f"{day}  no champion yet: not scored", highlight=False)
        return
    drifted = [feature for feature, is_drifted, _ in drift if is_drifted]
    line = f"{day}  {rows:,} scored by champion v{version}, {flagged:.1%} flagged"
    if drift:
        line += f"; drift {len(drifted)}/{len(drift)} features"
        if drifted:
            line += f" (top: {', '.join(drifted[:3])})"
    if failed:
        story.drift_days[day] = drifted
        line += f"; check failed: {', '.join(failed)}"
    console.print(line, highlight=False, style="yellow" if failed else None, soft_wrap=True)


def evaluate_retraining(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None, str]:
    """One tick of `retraining_sensor` on the instance: its run requests, new cursor and
    why it requested nothing (empty when it did)."""
    sensor = defs.resolve_sensor_def("retraining_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, sensor_name=sensor.name, resources=defs.resources
    ) as context:
        # The alert it logs (a WARNING, for the daemon's log) is told by the story's own line.
        context.log.setLevel(logging.ERROR)
        data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor or cursor, data.skip_message or ""


def print_ingestion_summary(warehouse: WarehouseResource, console: Console) -> None:
    """Per landing day: rows read, loaded, quarantined and curated, with totals."""
    with warehouse.connection(read_only=True) as conn:
        rows = conn.execute(
            """SELECT l.partition_date, sum(l.rows_read), sum(l.rows_loaded),
                      sum(l.rows_quarantined),
                      (SELECT count(*) FROM curated.transactions c
                       WHERE c.partition_date = l.partition_date)
               FROM raw.ingestion_log l
               WHERE l.status = 'loaded' AND l.finished_at = (
                   SELECT max(finished_at) FROM raw.ingestion_log x
                   WHERE x.partition_date = l.partition_date)
               GROUP BY 1 ORDER BY 1"""
        ).fetchall()
    table = Table("partition", "read", "loaded", "quarantined", "curated", title="ingestion")
    for row in rows:
        table.add_row(str(row[0]), *(f"{v:,}" for v in row[1:]))
    if len(rows) > 1:
        totals = [sum(row[i] for row in rows) for i in range(1, 5)]
        table.add_row("total", *(f"{v:,}" for v in totals), style="bold")
    console.print(table)


def print_training_data_summary(warehouse: WarehouseResource, console: Console) -> None:
    """The master table's splits and the dataset version's feature selection."""
    with warehouse.connection(read_only=True) as conn:
        splits = conn.execute(
            """SELECT split, count(*), sum(target), min(partition_date), max(partition_date)
               FROM ml.master_table GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        version, kept, dropped = conn.execute(
            """SELECT any_value(dataset_version), count(*) FILTER (WHERE kept),
                      count(*) FILTER (WHERE NOT kept) FROM ml.feature_selection"""
        ).fetchone()
    table = Table("split", "rows", "positives", "from", "to", title="master table")
    for split, rows, positives, first, last in splits:
        table.add_row(split, f"{rows:,}", f"{positives:,}", str(first), str(last))
    console.print(table)
    console.print(
        f"dataset version {version[:16]}: {kept} features kept, {dropped} dropped "
        "(reasons in ml.feature_selection)"
    )


def print_promotion_log(warehouse: WarehouseResource, limit: int, console: Console) -> None:
    """The latest ``limit`` champion decisions, newest first, each with its reason."""
    with warehouse.connection(read_only=True) as conn:
        rows = conn.execute(
            """SELECT decided_at, decision, version, family, champion_before, champion_after,
                      average_precision, reason, actor
               FROM ml.promotion_log ORDER BY decided_at DESC LIMIT ?""",
            [limit],
        ).fetchall()
    # One line of facts and the reason below it: readable in an 80-column log, unlike a
    # nine-column table whose reason squeezes every column to a few letters.
    console.print("[bold]promotion log[/] (latest first)")
    for when, decision, version, family, before, after, ap, reason, actor in rows:
        style = "green" if decision == "promoted" else "yellow"
        holdout = "" if ap is None else f", holdout AP {ap:.4f}"
        console.print(
            f"{when:%Y-%m-%d %H:%M:%S}  [{style}]{decision}[/]  version {version}"
            f"{f' ({family})' if family else ''}{holdout}",
            highlight=False,
        )
        console.print(
            f"    champion {before or 'none'} -> {after or 'none'}: {reason} (by {actor})",
            highlight=False,
            markup=False,
        )


def print_serving_hint(settings: Settings, console: Console) -> None:
    """How to start the REST service, and a request with a real transaction of the last day."""
    from mlplatform.contract import load_contract

    contract = load_contract(settings.contract)
    files = sorted(settings.landing_dir.glob("transactions_*.csv"))
    if not files:
        return
    with files[-1].open(newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle), None)
    if row is None:
        return
    skipped = {"first_name", "last_name", "street", "label"}  # not needed to score
    numbers = {"amount": float, "city_pop": int, "home_lat": float, "home_long": float,
               "merchant_lat": float, "merchant_long": float}  # fmt: skip
    transaction = {
        name: numbers[name](row[source]) if name in numbers and row[source] else row[source]
        for name, source in contract.columns.items()
        if name not in skipped and source in row
    }
    body = json.dumps({"transactions": [transaction]})
    console.print("serve the champion over REST:  mlplatform serve", highlight=False)
    console.print(
        "curl -s -X POST http://127.0.0.1:8000/v1/predict -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def history_end(days: list[date], history_days: int) -> date:
    """The last day of the history phase: the first ``history_days`` days (at least one
    day is left for the daily phase)."""
    return days[min(history_days, len(days) - 1) - 1]


def drift_start_for(start: date, days: int, history_days: int) -> date:
    """Where the demo's generated data drifts: a third of the way through the days after
    the history (a few days scored before the drift, most after it)."""
    return start + timedelta(days=history_days + (days - history_days) // 3)


def sensor_run_tags(request: dg.RunRequest, sensor: str) -> dict[str, str]:
    """The tags the daemon gives a run it launches for ``sensor``'s ``request``: with the
    run key, a daemon started later (`make ui`) knows the request was met."""
    tags = {**request.tags, "dagster/sensor_name": sensor}
    return tags | ({"dagster/run_key": request.run_key} if request.run_key else {})


def retrain(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    console: Console,
    request: dg.RunRequest,
    story: Story,
) -> None:
    """Run the training the sensor requested, with its tags, and print the champion's
    decision and its reason."""
    tags = sensor_run_tags(request, "retraining_sensor")
    check = tags.get("mlplatform/trigger_check", "a check")
    partition = tags.get("mlplatform/trigger_partition", "?")
    console.print(
        f"retraining_sensor: {check} failed on {partition} "
        f"({tags.get('mlplatform/trigger_reason', '')}): requesting a training run",
        style="bold yellow",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if failure := run_job(defs, instance, console, request.job_name or "training", tags=tags,
                          label=f"(retraining after {partition})"):  # fmt: skip
        story.failures.append(failure)
        return
    settings = get_settings()
    with WarehouseResource.from_settings(settings).connection(read_only=True) as conn:
        decision, version, reason = conn.execute(
            "SELECT decision, version, reason FROM ml.promotion_log "
            "ORDER BY decided_at DESC LIMIT 1"
        ).fetchone()
    story.retrainings.append(f"after {check} on {partition}: {decision} v{version}: {reason}")
    console.print(
        f"champion competition: {decision} version {version}: {reason}",
        style="green" if decision == "promoted" else "yellow",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def run_story(
    settings: Settings, console: Console, history_days: int, generate: Callable[[], None]
) -> Story:
    """The demo's phases (see the module docstring) over the landing folder's days;
    ``generate()`` fills an empty landing folder first."""
    from mlplatform.definitions import defs

    story = Story()
    warehouse = WarehouseResource.from_settings(settings)
    if not any(settings.landing_dir.glob("transactions_*.csv")):
        generate()
    days = landing_days(settings)
    instance = dg.DagsterInstance.get()
    hold_connections(instance)
    recover_runs(instance, console)
    last_history = history_end(days, history_days)
    failure = run_job(defs, instance, console, "reference_data")
    for first, last in consecutive_ranges([d for d in days if d <= last_history]):
        failure = failure or run_range(defs, instance, console, "daily_ingestion", first, last)
    console.print(f"history loaded: {days[0]} .. {last_history}, no champion yet", highlight=False)
    failure = failure or run_job(defs, instance, console, "training", label="(first training)")
    if failure:
        story.failures.append(failure)
        return story
    print_training_data_summary(warehouse, console)
    print_promotion_log(warehouse, 1, console)
    console.print("[bold]day by day[/]: ingest, curate, features, score, drift; then the sensor")
    cursor = None
    for day in (d for d in days if d > last_history):
        if failure := run_range(defs, instance, console, "daily_ingestion", day, day):
            story.failures.append(failure)
            return story
        print_day(warehouse, day, failed_checks(instance), console, story)
        requests, cursor, _ = evaluate_retraining(defs, instance, cursor)
        for request in requests:
            retrain(defs, instance, console, request, story)
    # The job refreshes the labels first: the days whose labels have matured by the last
    # day are judged, the later ones get their reason.
    scored = (last_history + timedelta(days=1), days[-1])
    if failure := run_range(defs, instance, console, "performance_monitoring", *scored):
        story.failures.append(failure)
        return story
    print_performance(warehouse, console)
    # The sensor judges the performance check too: a retraining, or why none (a cooldown).
    requests, cursor, skipped = evaluate_retraining(defs, instance, cursor)
    for request in requests:
        retrain(defs, instance, console, request, story)
    if not requests:
        console.print(f"retraining_sensor: {skipped}", highlight=False, soft_wrap=True)
    return story


def print_performance(warehouse: WarehouseResource, console: Console) -> None:
    """The champion's figures on each day's matured labels (``monitoring.performance``),
    one line per day: judged (ok or degraded), or why not yet."""
    with warehouse.connection(read_only=True) as conn:
        rows = conn.execute(
            """SELECT partition_date, model_version, matured, positives, average_precision,
                      roc_auc, holdout_average_precision, judged, degraded, reason
               FROM monitoring.performance ORDER BY partition_date"""
        ).fetchall()
    console.print("[bold]model performance on matured labels[/] (monitoring.performance)")
    for day, version, matured, positives, ap, auc, holdout, judged, degraded, reason in rows:
        figures = ", ".join(
            f"{name} {value:.3f}"
            for name, value in (("AP", ap), ("ROC AUC", auc), ("holdout AP", holdout))
            if value is not None
        )
        verdict = f"{'degraded' if degraded else 'ok'}: {reason}" if judged else reason
        model = f"v{version}" if version else "no model"
        console.print(
            f"{day}  {model}, {matured:,} matured, {positives:,} positives"
            + (f"; {figures}" if figures else "") + f": {verdict}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip


def print_summary(settings: Settings, console: Console, story: Story) -> None:
    """Rows, quarantine, the champion and its figures, drift days, retraining decisions,
    reports, and how to look further (Dagster UI, MLflow UI, REST)."""
    from mlplatform.ml.registry import CHAMPION
    from mlplatform.serving.model import NoModelError, load_model

    with WarehouseResource.from_settings(settings).connection(read_only=True) as conn:
        read, loaded, quarantined = conn.execute(
            """SELECT sum(rows_read), sum(rows_loaded), sum(rows_quarantined)
               FROM raw.ingestion_log WHERE status = 'loaded'"""
        ).fetchone()
        reasons = conn.execute(
            "SELECT reason, count(*) FROM raw.quarantine GROUP BY 1 ORDER BY 2 DESC LIMIT 3"
        ).fetchall()
    console.rule("summary")
    console.print(
        f"rows: {read or 0:,} read, {loaded or 0:,} loaded, {quarantined or 0:,} quarantined "
        f"({', '.join(f'{r}: {n}' for r, n in reasons) or 'none'}; raw.quarantine)",
        highlight=False,
        markup=False,
    )
    try:
        champion = load_model(settings.tracking_uri, settings.model_name, CHAMPION)
    except NoModelError:
        console.print("champion: none")
    else:
        figures = ", ".join(
            f"holdout {name} {champion.metrics[name]:.4f}"
            for name in ("average_precision", "roc_auc", "ece")
            if name in champion.metrics
        )
        console.print(
            f"champion: {settings.model_name} version {champion.version} "
            f"({champion.model.family}; {figures})",
            highlight=False,
        )
    if story.drift_days:
        console.print(
            f"monitoring checks failed on {len(story.drift_days)} days "
            "(their drifted features, top first; monitoring.drift):"
        )
        for day, features in sorted(story.drift_days.items()):
            console.print(f"  {day}: {', '.join(features[:5])}", highlight=False)
    else:
        console.print("monitoring: no check failed")
    console.print("retraining decisions (ml.promotion_log):" if story.retrainings
                  else "retraining: not requested")  # fmt: skip
    for decision in story.retrainings:
        console.print(f"  {decision}", highlight=False, markup=False)
    reports = sorted(settings.reports_dir.rglob("*.html")) if settings.reports_dir.exists() else []
    if reports:
        console.print(
            f"drift reports: {len(reports)} in {settings.reports_dir} (latest {reports[-1].name})",
            highlight=False,
        )
    console.rule("look further")
    console.print(
        f"Dagster UI (every run of this demo): make ui -> http://127.0.0.1:3000 "
        f"(DAGSTER_HOME {settings.dagster_home})",
        highlight=False,
    )
    console.print(
        f"MLflow UI (runs, registry): make mlflow-ui -> {settings.mlflow_ui_url}", highlight=False
    )
    print_serving_hint(settings, console)

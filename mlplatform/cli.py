"""The `mlplatform` command."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from mlplatform.library_output import quiet_library_output
from mlplatform.settings import PACKAGE_DIR, Settings, get_settings

quiet_library_output()
app = typer.Typer(help="mlplatform: card-transaction data and ML platform.", no_args_is_help=True)
console = Console()
#: `mlplatform demo`: days before the first training (the revenge target needs 30 days of
#: history and 72 hours to mature).
HISTORY_DAYS = 60


@app.command()
def generate(
    out: Annotated[Path | None, typer.Option(help="Folder (default: the landing folder).")] = None,
    cards: Annotated[int, typer.Option(help="Number of cards.")] = 2000,
    days: Annotated[int, typer.Option(help="Number of days.")] = 31,
    start_date: Annotated[str | None, typer.Option(help="First day (default: settings).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 42,
    drift_start: Annotated[str | None, typer.Option(help="Drift from this day on.")] = None,
    malformed_rate: Annotated[float, typer.Option(help="Share of malformed rows.")] = 0.0,
) -> None:
    """Write synthetic daily transaction files and cards.csv (deterministic for a seed)."""
    from mlplatform.datagen import SimulationConfig, simulate

    settings = get_settings()
    config = SimulationConfig(
        n_cards=cards,
        days=days,
        start_date=date.fromisoformat(start_date) if start_date else settings.start_date,
        seed=seed,
        drift_start=date.fromisoformat(drift_start) if drift_start else None,
        malformed_rate=malformed_rate,
    )
    summary = simulate(config, out or settings.landing_dir, progress=True)
    console.print(
        f"wrote {summary.rows:,} rows in {len(summary.files)} files to "
        f"{(out or settings.landing_dir)} in {summary.seconds:.1f}s "
        f"({summary.rows / max(summary.seconds, 1e-9):,.0f} rows/s); "
        f"fraud rows {summary.fraud_rows:,}, revenge episodes {len(summary.revenge_episodes)}, "
        f"malformed {sum(summary.malformed.values())}"
    )


def _dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to the data home's `dagster/` with the repo's instance config."""
    home = get_settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = PACKAGE_DIR.parent / "dagster.yaml"
    if config.exists() and not (home / "dagster.yaml").exists():
        shutil.copy(config, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@app.command()
def demo(
    cards: Annotated[int, typer.Option(help="Number of cards to simulate.")] = 2000,
    days: Annotated[int, typer.Option(help="Number of days to simulate.")] = 80,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    history_days: Annotated[
        int, typer.Option(help="Days loaded (as one run) before the first training.")
    ] = HISTORY_DAYS,
) -> None:
    """The whole story on generated data (drift from a third of the way after the history),
    on the Dagster instance the UI uses.

    The first HISTORY_DAYS days are one `daily_ingestion` run, then the first `training`
    elects a champion; every later day is a run of its own (ingest, curate, features, score,
    data and prediction drift), after which the `retraining_sensor` is evaluated and the
    training run it requests is run, where the champion competition decides. Then the
    champion's performance on the matured days, and a summary. The revenge-spending target
    needs 30 days of history and a 72-hour horizon.
    """
    from mlplatform.demo import drift_start_for, print_summary, run_story, stop_on_interrupt

    settings = get_settings()
    home = _dagster_home()

    def generate_data() -> None:
        drift_start = drift_start_for(settings.start_date, days, history_days)
        console.print(f"generating {cards:,} cards x {days} days, drift from {drift_start}")
        generate(out=None, cards=cards, days=days, start_date=None, seed=seed,
                 drift_start=drift_start.isoformat(), malformed_rate=0.002)  # fmt: skip

    with stop_on_interrupt(console, "mlplatform demo"):
        story = run_story(settings, console, history_days, generate_data)
    if not story.failures:
        print_summary(settings, console, story)
    console.print(f"Dagster instance: {home} (runs are visible in `make ui`)")
    if story.failures:
        for failure in story.failures:
            console.print(f"failed: {failure}", style="red", markup=False, highlight=False)
        raise typer.Exit(1)


@app.command("import")
def import_history(
    files: Annotated[list[Path], typer.Argument(help="History extract(s): many days each.")],
    ingest: Annotated[
        bool, typer.Option("--ingest", help="Then run the daily assets over the days.")
    ] = False,
) -> None:
    """Split a history extract into the landing folder's daily files (in the source's own
    columns, by the local day of the mapped event time of MLPLATFORM_CONTRACT).

    Rows whose day cannot be computed are listed in an import report (line and reason);
    rows read = rows written + rows rejected. Importing the same extract again changes
    nothing. With --ingest, one Dagster run of `history_ingestion` over the imported days
    (per run of consecutive days) follows, on the platform's instance (visible in the UI).
    """
    import csv

    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from mlplatform.contract import load_contract
    from mlplatform.ingestion import FileRejected
    from mlplatform.ingestion import import_history as split_history

    settings = get_settings()
    contract = load_contract(settings.contract)
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        _refuse(f"no such file: {', '.join(missing)}")
    columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("importing", total=sum(p.stat().st_size for p in files))
        try:
            result = split_history(
                files,
                settings.landing_dir,
                contract,
                max_line_bytes=settings.max_line_bytes,
                progress=lambda done: progress.advance(task, done),
            )
        except FileRejected as error:
            progress.stop()
            _refuse(str(error))
    days = sorted(result.days)
    span = f"{days[0]} .. {days[-1]}" if days else "no day"
    console.print(
        f"read {result.rows_read:,} rows: {result.rows_written:,} written to {len(days)} "
        f"daily files ({span}; {len(result.changed)} new or changed; {len(result.empty)} "
        f"days without a record: header only) in {settings.landing_dir}, "
        f"{result.rows_rejected:,} rejected",
        highlight=False,
        soft_wrap=True,
    )
    if result.rejected:
        report = settings.home / "imports" / f"{files[0].stem}-rejected.csv"
        report.parent.mkdir(parents=True, exist_ok=True)
        with report.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "line", "reason"])
            writer.writerows((r.file, r.line, r.reason) for r in result.rejected)
        table = Table("file", "line", "reason", title=f"rejected rows (all in {report})")
        for row in result.rejected[:10]:
            table.add_row(row.file, str(row.line), row.reason)
        console.print(table)
    if ingest and days:
        from mlplatform.demo import stop_on_interrupt

        with stop_on_interrupt(console, "mlplatform import --ingest"):
            _ingest_days(settings, result.span)


def _ingest_days(settings: Settings, days: list[date]) -> None:
    """Run `history_ingestion` over the days (one run per run of consecutive days) on the
    platform's Dagster instance, as the demo does; exits 1 when a run fails."""
    import dagster as dg

    from mlplatform.assets.partitions import consecutive_ranges
    from mlplatform.definitions import defs
    from mlplatform.demo import (
        hold_connections,
        print_ingestion_summary,
        recover_runs,
        run_job,
        run_range,
    )
    from mlplatform.resources import WarehouseResource

    home = _dagster_home()
    instance = dg.DagsterInstance.get()
    hold_connections(instance)
    recover_runs(instance, console)
    failures = [failure] if (failure := run_job(defs, instance, console, "reference_data")) else []
    failures += [
        failure
        for first, last in consecutive_ranges(days)
        if (failure := run_range(defs, instance, console, "history_ingestion", first, last))
    ]
    print_ingestion_summary(WarehouseResource.from_settings(settings), console)
    console.print(f"Dagster instance: {home} (runs are visible in `make ui`)")
    for failure in failures:
        console.print(f"failed: {failure}", style="red", markup=False, highlight=False)
    if failures:
        raise typer.Exit(1)


contract_app = typer.Typer(help="The landing contract (a source's mapping).", no_args_is_help=True)
app.add_typer(contract_app, name="contract")


@contract_app.command("check")
def contract_check(
    sample: Annotated[Path, typer.Argument(help="A sample of the source (CSV with header).")],
    contract: Annotated[Path, typer.Option(help="The mapping YAML to try.")],
    rows: Annotated[int, typer.Option(help="Mapped rows to preview.")] = 5,
) -> None:
    """Dry-run a mapping on a sample: which canonical columns map and from what, mapped rows
    (PII masked), the rows that would be quarantined and why, the features the mapping
    turns off, and whether each target is trainable. Exits 1 when the mapping or the sample
    is refused, or the contract's target cannot be trained on the sample."""
    import pandas as pd

    from mlplatform.contract import ContractError, load_contract
    from mlplatform.features.declarations import feature_registry
    from mlplatform.ingestion import FileRejected, check_sample

    settings = get_settings()
    try:
        mapping = load_contract(contract)
        result = check_sample(
            sample,
            mapping,
            registry=feature_registry(settings, mapping),
            discretionary_categories=settings.discretionary_categories,
            pii_key=settings.pseudonym_key,
            max_amount=settings.max_amount,
            max_line_bytes=settings.max_line_bytes,
            preview_rows=rows,
        )
    except (ContractError, FileRejected) as error:
        console.print(str(error), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    table = Table("canonical", "from", "required", title=f"mapping {contract.name}")
    for column in result.mapping:
        table.add_row(
            column.canonical,
            column.source or "(not mapped)",
            "yes" if column.required else "",
            style=None if column.source else "dim",
        )
    console.print(table)
    console.print(
        f"sample {sample.name}: {result.rows_read:,} rows read, {result.rows_loaded:,} would "
        f"load, {len(result.quarantined):,} would be quarantined",
        highlight=False,
    )
    preview = Table(*result.preview.columns, title="mapped rows (card as its pseudonym)")
    for values in result.preview.astype(object).itertuples(index=False):
        preview.add_row(*("" if pd.isna(v) else str(v) for v in values))
    console.print(preview)
    if len(result.quarantined):
        bad = Table("line", "rule", "column", "detail", "raw line (PII masked)",
                    title="rows that would be quarantined")  # fmt: skip
        for row in result.quarantined.itertuples(index=False):
            bad.add_row(str(row.line), row.reason, row.column or "", row.detail or "",
                        row.raw_line or "")  # fmt: skip
        console.print(bad)
    off = Table("feature", "why", title="features the mapping turns off")
    for name, why in result.features_off:
        off.add_row(name, why)
    console.print(off if result.features_off else "every feature is on")
    for target, why in result.targets.items():
        chosen = " (the contract's target)" if target == result.chosen_target else ""
        verdict = "[green]trainable[/]" if why is None else f"[yellow]not trainable[/]: {why}"
        console.print(f"target {target}{chosen}: {verdict}", highlight=False)
    if result.targets[result.chosen_target] is not None:
        raise typer.Exit(1)


runs_app = typer.Typer(help="Dagster runs of the platform's instance.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command()
def recover() -> None:
    """Mark failed each started run whose process is gone (kill -9, OOM, a closed laptop),
    freeing the warehouse pool it held, so the next run proceeds (the daemon does this
    itself where it runs)."""
    import dagster as dg

    _dagster_home()
    with dg.DagsterInstance.get() as instance:
        from mlplatform.demo import recover_runs

        if not recover_runs(instance, console):
            console.print("no dead run: every started run has a live process")


def _champion_decision(decide: Callable[[object, object, str, str], str | None]) -> str | None:
    """Run ``decide(client, conn, model name, actor)`` on the MLflow registry and the
    warehouse; a refused decision (ChampionError) is printed and exits with status 1."""
    import getpass

    from mlplatform.ml.champion import ChampionError
    from mlplatform.ml.registry import configure
    from mlplatform.resources import WarehouseResource

    settings = get_settings()
    client = configure(settings.tracking_uri)
    with WarehouseResource.from_settings(settings).connection() as conn:
        try:
            return decide(client, conn, settings.model_name, f"cli:{getpass.getuser()}")
        except ChampionError as error:
            console.print(str(error), style="red")
            raise typer.Exit(1) from error


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded in ml.promotion_log).")],
) -> None:
    """Move the `champion` alias back to the previous champion."""
    from mlplatform.ml.champion import rollback as rollback_champion

    version = _champion_decision(
        lambda client, conn, name, actor: rollback_champion(client, conn, name, reason, actor)
    )
    console.print(f"champion is version {version} again")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Registered model version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in ml.promotion_log).")],
) -> None:
    """Make VERSION the champion by hand (the old champion becomes `previous`)."""
    from mlplatform.ml.champion import promote_manually

    before = _champion_decision(
        lambda client, conn, name, actor: promote_manually(
            client, conn, name, version, reason, actor
        )
    )
    console.print(f"champion is version {version} (was {before or 'none'})")


@app.command()
def challenger(
    version: Annotated[
        str | None, typer.Argument(help="Registered model version to score beside the champion.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the challenger.")] = False,
) -> None:
    """Point the registry alias `challenger` at VERSION (scored in shadow or canary mode by
    `mlplatform serve`), or remove it with --clear."""
    from mlplatform.ml.champion import ChampionError
    from mlplatform.ml.registry import configure
    from mlplatform.serving.challenger import clear_challenger, set_challenger

    if clear == (version is not None):
        console.print("give either VERSION or --clear", style="red")
        raise typer.Exit(2)
    settings = get_settings()
    client = configure(settings.tracking_uri)
    try:
        if clear:
            before = clear_challenger(client, settings.model_name)
            console.print(f"no challenger (was {before or 'none'})")
        else:
            before = set_challenger(client, settings.model_name, version)
            console.print(f"challenger is version {version} (was {before or 'none'})")
    except ChampionError as error:
        console.print(str(error), style="red", soft_wrap=True)
        raise typer.Exit(1) from error


@app.command()
def promotions(
    limit: Annotated[int, typer.Option(help="How many decisions to show.")] = 20,
) -> None:
    """Show the latest champion decisions (ml.promotion_log)."""
    from mlplatform.demo import print_promotion_log
    from mlplatform.resources import WarehouseResource

    print_promotion_log(WarehouseResource.from_settings(get_settings()), limit, console)


@app.command()
def features(
    contract: Annotated[
        Path | None, typer.Option(help="Mapping YAML (default: MLPLATFORM_CONTRACT).")
    ] = None,
) -> None:
    """Print the feature registry: every feature, its window and type, on or off and why."""
    from mlplatform.contract import load_contract
    from mlplatform.features.declarations import feature_registry

    settings = get_settings()
    registry = feature_registry(settings, load_contract(contract or settings.contract))
    rows = registry.describe()
    table = Table(*rows[0], title=f"feature registry ({len(registry.enabled)} on, "
                  f"{len(registry.disabled)} off)")  # fmt: skip
    for row in rows:
        table.add_row(*row.values(), style=None if row["status"] == "on" else "dim")
    console.print(table)


#: `mlplatform sql`: rows shown as a table (all of them with --csv).
SQL_TABLE_ROWS = 1000


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL query (DuckDB's dialect).")],
    csv_output: Annotated[
        bool, typer.Option("--csv", help="Write every row as CSV (header first) to stdout.")
    ] = False,
) -> None:
    """Query the warehouse read-only (raw, curated, features, ml, monitoring schemas), as
    the platform opens it; nothing can be written. A table on the terminal (the first
    1000 rows), or CSV for scripts."""
    import csv
    import sys

    import duckdb

    from mlplatform.resources import WarehouseResource
    from mlplatform.warehouse.connection import WarehouseLockedError, WarehouseUnavailableError

    warehouse = WarehouseResource.from_settings(get_settings())
    if not warehouse.exists:
        _refuse(
            f"no warehouse at {warehouse.name} yet: ingest a day first (`mlplatform demo`, or "
            "a run of daily_ingestion), or point MLPLATFORM_HOME at a data home"
        )
    try:
        with warehouse.connection(read_only=True) as conn:
            result = conn.execute(query)
            if result.description is None:
                _refuse("the statement returned no rows (mlplatform sql runs queries only)")
            columns = [d[0] for d in result.description]
            if csv_output:
                writer = csv.writer(sys.stdout, lineterminator="\n")
                writer.writerow(columns)
                while batch := result.fetchmany(10_000):
                    writer.writerows(batch)
                return
            rows = result.fetchmany(SQL_TABLE_ROWS + 1)
    except (duckdb.Error, WarehouseLockedError, WarehouseUnavailableError) as error:
        _refuse(f"{type(error).__name__}: {error}")
    table = Table(*columns)
    for row in rows[:SQL_TABLE_ROWS]:
        table.add_row(*("NULL" if value is None else str(value) for value in row))
    console.print(table)
    if len(rows) > SQL_TABLE_ROWS:
        console.print(f"the first {SQL_TABLE_ROWS} rows shown; --csv writes them all",
                      soft_wrap=True)  # fmt: skip
    else:
        console.print(f"{len(rows)} rows")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (MLPLATFORM_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (MLPLATFORM_SERVE_PORT).")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (more than one: a Redis online state).")
    ] = 1,
) -> None:
    """Serve the champion over REST (FastAPI + uvicorn), with online features.

    With MLPLATFORM_ONLINE_STATE=memory (the default) one worker process: the fresh online
    state (the transactions scored since the store was written) lives in the process, so a
    card's answer must not depend on which worker took it. With a Redis URL there, any number
    of workers (and replicas) share it. Without an API key (MLPLATFORM_API_KEYS,
    MLPLATFORM_API_KEYS_FILE) it only binds to 127.0.0.1. It refuses to start before the
    first champion and the online store exist.
    """

    from mlplatform.serving.config import ServiceConfig

    settings = get_settings()
    host, port = host or settings.serve_host, port or settings.serve_port
    if workers != 1 and settings.online_state == "memory":
        _refuse(
            f"--workers {workers}: with MLPLATFORM_ONLINE_STATE=memory the service runs one "
            "worker process. Its fresh online state (transactions scored since the store was "
            "written) lives in that process, and a card's answer must not depend on which "
            "worker took it. Set MLPLATFORM_ONLINE_STATE=redis://HOST:PORT/DB to share it "
            "between workers."
        )
    config = ServiceConfig.from_settings(settings)
    if not config.api_keys and host != "127.0.0.1":
        _refuse(
            "no API key configured (MLPLATFORM_API_KEYS or MLPLATFORM_API_KEYS_FILE): "
            f"refusing to bind to {host}; without keys the service binds to 127.0.0.1 only."
        )
    if not config.store_path.exists():
        _refuse(
            f"no online store at {config.store_path}: materialize online_feature_store "
            "(the daily job) first."
        )
    _refuse_a_taken_port(host, port)
    import uvicorn

    from mlplatform.ml.registry import CHAMPION
    from mlplatform.serving.app import app_from_settings, create_app, log_to_stderr
    from mlplatform.serving.model import NoModelError, aliased

    log_to_stderr()
    try:
        if workers == 1:
            service = create_app(config)
        else:  # each worker process makes its own service
            aliased(config.tracking_uri, config.model_name, CHAMPION)
    except NoModelError as error:
        _refuse(f"{error}; the service starts once a champion exists.")
    # Our own access log (in the app) names the route, never the query string.
    if workers == 1:
        uvicorn.run(service, host=host, port=port, workers=1, access_log=False)
    else:
        # The supervisor accepts and hands each connection to the worker holding the fewest.
        from mlplatform.serving.workers import serve_workers

        target = f"{app_from_settings.__module__}:{app_from_settings.__name__}"
        try:
            serve_workers(target, host, port, workers)
        except OSError as error:  # taken since _refuse_a_taken_port looked
            _refuse(f"cannot listen on {host}:{port}: {error}")


def _refuse_a_taken_port(host: str, port: int) -> None:
    """Refuse, naming it, a port another process listens on (uvicorn would log a traceback
    after loading the model and the store)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as error:
        _refuse(f"cannot listen on {host}:{port}: {error}")


def _refuse(message: str) -> NoReturn:
    # Never wrapped: a variable, a path or a URL in it stays whole.
    console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


if __name__ == "__main__":
    app()

"""The `mlplatform` command."""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlplatform.settings import PACKAGE_DIR, get_settings

app = typer.Typer(help="mlplatform: card-transaction data and ML platform.", no_args_is_help=True)
console = Console()


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
    days: Annotated[int, typer.Option(help="Number of days to simulate.")] = 31,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Generate data (if the landing folder has none) and run the pipeline on every day.

    Every run of consecutive landing-file days is one Dagster run of `daily_ingestion` over
    that partition range (normally one run for the whole simulation).
    """
    import dagster as dg

    settings = get_settings()
    home = _dagster_home()
    if not any(settings.landing_dir.glob("transactions_*.csv")):
        generate(out=None, cards=cards, days=days, start_date=None, seed=seed,
                 drift_start=None, malformed_rate=0.002)  # fmt: skip
    from mlplatform.definitions import defs
    from mlplatform.warehouse.ingestion import partition_date_of

    days_with_files = sorted(
        {d for p in settings.landing_dir.glob("*.csv") if (d := partition_date_of(p))}
    )
    instance = dg.DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    defs.resolve_job_def("reference_data").execute_in_process(instance=instance, run_config=quiet)
    job = defs.resolve_job_def("daily_ingestion")
    failures = []
    for first, last in _consecutive_ranges(days_with_files):
        label = f"{first} .. {last}"
        with console.status(f"running daily_ingestion over {label} in one run"):
            result = job.execute_in_process(
                instance=instance,
                run_config=quiet,
                tags={
                    "dagster/asset_partition_range_start": first.isoformat(),
                    "dagster/asset_partition_range_end": last.isoformat(),
                },
                raise_on_error=False,
            )
        if not result.success:
            messages = [
                e.step_failure_data.error.message.strip()
                for e in result.get_step_failure_events()
                if e.step_failure_data.error
            ]
            failures.append(f"{label} (run {result.run_id}): " + "\n".join(messages))
    _print_ingestion_summary(settings.warehouse_path)
    console.print(f"Dagster instance: {home} (runs are visible in `make ui`)")
    if failures:
        for failure in failures:
            console.print(f"failed: {failure}", style="red", markup=False, highlight=False)
        raise typer.Exit(1)


def _consecutive_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days grouped into (first, last) runs of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in days:
        if ranges and (day - ranges[-1][1]).days == 1:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _print_ingestion_summary(warehouse: Path) -> None:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as conn:
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


if __name__ == "__main__":
    app()

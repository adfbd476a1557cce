"""Ingestion benchmark: generation, raw ingestion and curation beside bare DuckDB read_csv.

Each phase runs in its own process (so its peak memory is its own), on the same files, in one
run. Usage: python bench/ingest.py [--cards 330000] [--days 1] [--keep DIR] [--history]
Prints rows/s per phase, the ratio to bare `read_csv` and the peak resident memory. Ingestion
and curation run as the assets run a range (one call each over all days); curation's time
includes the checkpoint that closing the run's connection writes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.postgres import Postgres


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_generate(folder: Path, cards: int, days: int) -> dict:
    from mlplatform.datagen import SimulationConfig, simulate

    summary = simulate(SimulationConfig(n_cards=cards, days=days, seed=1), folder / "landing")
    return {"rows": summary.rows, "seconds": summary.seconds}


def phase_bare_read_csv(folder: Path) -> dict:
    import duckdb

    files = sorted(str(p) for p in (folder / "landing").glob("transactions_*.csv"))
    started = time.perf_counter()
    with duckdb.connect(str(folder / "bare.duckdb")) as conn:
        conn.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_csv(?)", [files])
        rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    return {"rows": rows, "seconds": time.perf_counter() - started}


def _timed_ingestion(conn: object, landing: Path, contract: object) -> tuple[dict, float]:
    """Every day of the landing folder ingested in one range run; (results, seconds)."""
    from mlplatform.ingestion import ingest_partitions, landing_files, partition_date_of

    days = sorted({d for p in landing.glob("*.csv") if (d := partition_date_of(p))})
    started = time.perf_counter()
    loaded, rejected = ingest_partitions(
        conn, {day: landing_files(landing, day) for day in days}, contract=contract,
        pii_key=b"bench-key", max_amount=100_000.0, max_line_bytes=1_000_000,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert not rejected, rejected
    return loaded, seconds


def phase_ingest_and_curate(folder: Path) -> dict:
    from mlplatform.contract import load_contract
    from mlplatform.ingestion import curate_partitions, load_card_reference, partition_date_of
    from mlplatform.settings import DEFAULT_CONTRACT, get_settings
    from mlplatform.warehouse.connection import connect

    contract = load_contract(DEFAULT_CONTRACT)
    landing = folder / "landing"
    days = sorted({d for p in landing.glob("*.csv") if (d := partition_date_of(p))})
    limit = get_settings().duckdb_memory_limit
    with connect(folder / "warehouse.duckdb", memory_limit=limit) as conn:
        load_card_reference(conn, landing, contract.reference, b"bench-key")
        conn.execute("CHECKPOINT")
        # One range run over all days, as the assets run a backfill: ingestion, then curation.
        loaded, ingest = _timed_ingestion(conn, landing, contract)
        started = time.perf_counter()
        curate_partitions(conn, days)
        conn.execute("CHECKPOINT")  # what closing the run's connection writes
        curate = time.perf_counter() - started
    rows = sum(result.rows_read for result in loaded.values())
    return {
        "rows": rows,
        "ingest_seconds": ingest,
        "curate_seconds": curate,
    }


#: The generator's mapping with event time, card, amount and label as expressions giving the
#: same values (and the rest one to one): the cost of expressions on the same rows.
EXPRESSIONS = {
    "event_time": "strptime(trans_date_trans_time, '%Y-%m-%d %H:%M:%S')",
    "card_number": "replace(cc_num, ' ', '')",
    "amount": "replace(amt, '$', '')",
    "label": "CASE is_fraud WHEN '1' THEN 1 WHEN '0' THEN 0 END",
}


def phase_history(folder: Path) -> dict:
    """The daily files as one multi-day extract (one header), as a bank would deliver it."""
    files = sorted((folder / "landing").glob("transactions_*.csv"))
    rows = 0
    with (folder / "history.csv").open("wb") as out:
        for i, path in enumerate(files):
            with path.open("rb") as handle:
                header = handle.readline()
                if i == 0:
                    out.write(header)
                for line in handle:
                    out.write(line)
                    rows += 1
    return {"rows": rows, "seconds": 0.0}


def phase_bare_history(folder: Path) -> dict:
    import duckdb

    started = time.perf_counter()
    with duckdb.connect() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM read_csv(?, all_varchar = true)", [str(folder / "history.csv")]
        ).fetchone()[0]
    return {"rows": rows, "seconds": time.perf_counter() - started}


def phase_import(folder: Path) -> dict:
    from mlplatform.contract import load_contract
    from mlplatform.ingestion import import_history
    from mlplatform.settings import DEFAULT_CONTRACT

    shutil.rmtree(folder / "imported", ignore_errors=True)  # a first import, every run
    started = time.perf_counter()
    result = import_history(
        [folder / "history.csv"], folder / "imported", load_contract(DEFAULT_CONTRACT),
        max_line_bytes=1_000_000,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    same = all(
        (folder / "landing" / path.name).read_bytes() == path.read_bytes()
        for path in result.days.values()
    )
    return {"rows": result.rows_read, "seconds": seconds, "same_files": same,
            "rejected": result.rows_rejected}  # fmt: skip


def _ingest_raw(folder: Path, contract_path: Path, name: str) -> dict:
    from mlplatform.contract import load_contract
    from mlplatform.settings import get_settings
    from mlplatform.warehouse.connection import connect

    (folder / f"{name}.duckdb").unlink(missing_ok=True)  # a fresh warehouse, every run
    limit = get_settings().duckdb_memory_limit
    with connect(folder / f"{name}.duckdb", memory_limit=limit) as conn:
        loaded, seconds = _timed_ingestion(conn, folder / "landing", load_contract(contract_path))
        digest = conn.execute(
            "SELECT sum(hash(COLUMNS(* EXCLUDE (ingested_at))))::VARCHAR FROM raw.transactions"
        ).fetchall()
    return {"rows": sum(r.rows_read for r in loaded.values()), "seconds": seconds,
            "digest": str(digest)}  # fmt: skip


def phase_ingest_one_to_one(folder: Path) -> dict:
    from mlplatform.settings import DEFAULT_CONTRACT

    return _ingest_raw(folder, DEFAULT_CONTRACT, "one_to_one")


def phase_ingest_expressions(folder: Path) -> dict:
    import yaml

    from mlplatform.settings import DEFAULT_CONTRACT

    spec = yaml.safe_load(DEFAULT_CONTRACT.read_text())
    spec["columns"].update({name: {"sql": sql} for name, sql in EXPRESSIONS.items()})
    path = folder / "expressions.yaml"
    path.write_text(yaml.safe_dump(spec))
    return _ingest_raw(folder, path, "expressions")


PHASES = {
    "generate": phase_generate,
    "bare": phase_bare_read_csv,
    "ingest": phase_ingest_and_curate,
    "history": phase_history,
    "bare_history": phase_bare_history,
    "import": phase_import,
    "one_to_one": phase_ingest_one_to_one,
    "expressions": phase_ingest_expressions,
}


def _run_phase(name: str, folder: Path, *args: object) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--folder", str(folder),
         *(str(a) for a in args)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=330_000)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--phase", choices=PHASES)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each --history phase")
    parser.add_argument(
        "--history",
        action="store_true",
        help="instead: import of one multi-day extract, and ingestion through mapping "
        "expressions beside the one-to-one mapping (e.g. --cards 11000 --days 30: 1M rows)",
    )
    parser.add_argument(
        "--sparse",
        action="store_true",
        help="instead: `mlplatform import --ingest` of a sparse history (--cards cards over "
        "--days days, about a quarter of the days without a purchase, in gaps of 1-10 days): "
        "wall time, Dagster runs and seconds per day; e.g. --cards 3 --days 730",
    )
    parser.add_argument("--ref", help="with --sparse: also import with this commit's code")
    parser.add_argument(
        "--event-cost",
        type=int,
        metavar="N",
        help="instead: N partition materializations (metadata as raw_transactions gives a day) "
        "written to a fresh instance (--dagster-storage): milliseconds per event",
    )
    parser.add_argument(
        "--dagster-storage",
        choices=("sqlite", "postgres", "postgres-unsynced"),
        default="sqlite",
        help="with --sparse: the Dagster instance's storage: the embedded SQLite one, or "
        "platform/dagster.yaml on a PostgreSQL cluster started for the run (durable: its "
        "defaults; unsynced: no fsync, commits not waited for, as the tests run it)",
    )
    args = parser.parse_args()
    if args.event_cost:
        _event_cost(args)
        return
    if args.sparse:
        _sparse_import(args)
        return
    if args.phase:  # child process: one phase, JSON on the last line
        phase_args = (args.cards, args.days) if args.phase == "generate" else ()
        result = PHASES[args.phase](args.folder, *phase_args)
        print(json.dumps({**result, "peak_mb": _peak_mb()}))
        return
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            folder = args.keep
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        gen = _run_phase("generate", folder, "--cards", args.cards, "--days", args.days)
        if args.history:
            _bring_your_own_data(folder, args)
            return
        os.sync()  # no phase pays for writing back the files of the one before
        bare = _run_phase("bare", folder)
        os.sync()
        ing = _run_phase("ingest", folder)
    bare_rate = bare["rows"] / bare["seconds"]
    rows = [
        ("bare DuckDB read_csv", bare["rows"], bare["seconds"], bare["peak_mb"]),
        ("generation", gen["rows"], gen["seconds"], gen["peak_mb"]),
        ("raw ingestion", ing["rows"], ing["ingest_seconds"], ing["peak_mb"]),
        ("curation", ing["rows"], ing["curate_seconds"], ing["peak_mb"]),
        ("ingestion + curation", ing["rows"], ing["ingest_seconds"] + ing["curate_seconds"],
         ing["peak_mb"]),
    ]  # fmt: skip
    print(f"{date.today()}  {args.cards:,} cards x {args.days} day(s)")
    print(f"{'phase':<24}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'vs bare':>9}{'peak MB':>10}")
    for name, n, seconds, peak in rows:
        rate = n / seconds
        print(f"{name:<24}{n:>12,}{seconds:>10.2f}{rate:>12,.0f}{rate / bare_rate:>9.2f}"
              f"{peak:>10,.0f}")  # fmt: skip
    print("targets: ingestion + curation >= 0.33 x bare and >= 200k rows/s; generation >= 200k "
          "rows/s; peak memory < 1.5 GB for a 1M-row day")  # fmt: skip


def _bring_your_own_data(folder: Path, args: argparse.Namespace) -> None:
    """Import of a multi-day extract beside bare read_csv, and ingestion through mapping
    expressions beside the one-to-one mapping, on the same rows; prints both."""
    _run_phase("history", folder)
    os.sync()
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):  # interleaved, the best of each: a shared machine is noisy
        for phase in ("bare_history", "import", "one_to_one", "expressions"):
            runs.setdefault(phase, []).append(_run_phase(phase, folder))
            os.sync()
    bare, imported, one, expr = (
        min(runs[phase], key=lambda run: run["seconds"])
        for phase in ("bare_history", "import", "one_to_one", "expressions")
    )
    print(f"{date.today()}  {args.cards:,} cards x {args.days} day(s), one extract, best of "
          f"{args.repeats}")  # fmt: skip
    print(f"{'phase':<34}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'ratio':>8}{'peak MB':>10}")
    for name, phase, reference in (
        ("bare read_csv of the extract", bare, bare),
        ("import (split into daily files)", imported, bare),
        ("raw ingestion, one-to-one", one, one),
        ("raw ingestion, expressions", expr, one),
    ):
        rate, ratio = phase["rows"] / phase["seconds"], reference["seconds"] / phase["seconds"]
        print(f"{name:<34}{phase['rows']:>12,}{phase['seconds']:>10.2f}{rate:>12,.0f}"
              f"{ratio:>8.2f}{phase['peak_mb']:>10,.0f}")  # fmt: skip
    print(f"import: daily files identical to the simulator's: {imported['same_files']}, "
          f"rejected {imported['rejected']}; expressions load the same rows as one-to-one: "
          f"{expr['digest'] == one['digest']}")  # fmt: skip
    print("targets: import >= 300k rows/s with peak memory < 1 GB; expressions >= 0.9 x one-to-one")


def _sparse_history(folder: Path, cards: int, days: int) -> tuple[Path, int, int]:
    """A history extract of ``cards`` cards over ``days`` days with gaps; (path, rows, days
    with a purchase)."""
    import numpy as np

    from mlplatform.datagen import SimulationConfig, simulate

    simulate(SimulationConfig(n_cards=cards, days=days, seed=5, start_date=SPARSE_START),
             folder / "simulated")  # fmt: skip
    rng = np.random.default_rng(5)
    daily = sorted((folder / "simulated").glob("transactions_*.csv"))
    kept, day = [], 0
    while day < len(daily):  # a stretch of days with purchases, then a gap of 1-10 days
        stretch = int(rng.integers(1, 12))
        kept += daily[day : day + stretch]
        day += stretch + int(rng.integers(1, 11)) * (rng.random() < 0.6)
    history, rows = folder / "history.csv", 0
    with history.open("wb") as out:
        for i, path in enumerate(kept):
            lines = path.read_bytes().splitlines(True)
            out.writelines(lines if i == 0 else lines[1:])
            rows += len(lines) - 1
    return history, rows, len(kept)


SPARSE_START = date(2010, 1, 1)


def _event_cost(args: argparse.Namespace) -> None:
    """Milliseconds per materialization event of a daily partition on a fresh instance,
    its metadata shaped as a day of raw_transactions' (schema, preview, counts)."""
    import dagster as dg
    import pandas as pd

    from mlplatform.demo import hold_connections

    repo = Path(__file__).resolve().parents[1]
    metadata = {
        "dagster/table_name": "raw.transactions",
        "dagster/row_count": 3,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f"column_{i}", "VARCHAR") for i in range(25)]
        ),
        "preview": dg.MetadataValue.md(
            pd.DataFrame({f"column_{i}": ["a value"] * 3 for i in range(25)}).to_markdown()
        ),
        "rows_read": 3,
        "rows_loaded": 3,
        "rows_quarantined": 0,
    }
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        postgres = (
            stack.enter_context(_postgres(args.dagster_storage == "postgres"))
            if args.dagster_storage != "sqlite"
            else None
        )
        yaml = repo / ("platform/dagster.yaml" if postgres else "dagster.yaml")
        shutil.copy(yaml, Path(tmp) / "dagster.yaml")
        if postgres:
            os.environ.update(postgres.dagster_env(postgres.create_database("events")))
        with dg.DagsterInstance.from_config(tmp) as instance:
            key = dg.AssetKey("raw_transactions")
            per_event = {}
            for held in (False, True):  # as Dagster opens it; as import and demo hold it
                if held:
                    hold_connections(instance)
                started = time.perf_counter()
                for n in range(args.event_cost):
                    day = date.fromordinal(SPARSE_START.toordinal() + n + held * 10_000)
                    instance.report_runless_asset_event(
                        dg.AssetMaterialization(key, partition=day.isoformat(), metadata=metadata)
                    )
                per_event[held] = (time.perf_counter() - started) / args.event_cost * 1000
    print(
        f"{date.today()}  {args.event_cost:,} materializations, Dagster instance: "
        f"{args.dagster_storage}: {per_event[False]:.1f} ms per event, "
        f"{per_event[True]:.1f} ms with its connections held (hold_connections)"
    )


@contextlib.contextmanager
def _postgres(durable: bool) -> Iterator[Postgres]:
    """A PostgreSQL cluster for the run (tests/postgres.py's), on a free port."""
    import socket

    from tests.postgres import postgres_cluster

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    with postgres_cluster(free_port, durable=durable) as postgres:
        yield postgres


def _import_ingest(
    folder: Path, history: Path, code: Path, dagster_env: dict[str, str] | None
) -> dict:
    """`mlplatform import --ingest` of ``history`` into a fresh home, with ``code``'s package;
    its Dagster instance in SQLite, or in Postgres with ``dagster_env`` (platform/dagster.yaml)."""
    import dagster as dg
    import duckdb

    home = folder / "home"
    (home / "landing").mkdir(parents=True)
    shutil.copy(history.parent / "simulated" / "cards.csv", home / "landing" / "cards.csv")
    (home / "dagster").mkdir()
    instance_yaml = code / "platform" / "dagster.yaml" if dagster_env else code / "dagster.yaml"
    shutil.copy(instance_yaml, home / "dagster" / "dagster.yaml")
    os.environ.update(dagster_env or {})  # this process reads the instance afterwards
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "MLPLATFORM_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "MLPLATFORM_START_DATE": str(SPARSE_START),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "import", str(history), "--ingest"],
        env=env, capture_output=True, text=True, cwd=code,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"import --ingest failed:\n{(done.stdout + done.stderr)[-3000:]}")
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        # the ingestion runs (history_ingestion; daily_ingestion before it), not the reference's
        ingestion = [
            r.dagster_run.run_id
            for r in instance.get_run_records()
            if r.dagster_run.job_name != "reference_data"
        ]
        events = sum(
            len(instance.get_records_for_run(run_id, limit=1_000_000).records)
            for run_id in ingestion
        )
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        rows, days, first, last = conn.execute(
            "SELECT count(*), count(DISTINCT partition_date), min(partition_date), "
            "max(partition_date) FROM raw.transactions"
        ).fetchone()
    return {
        "seconds": seconds,
        "runs": len(ingestion),
        "events": events,
        "rows": rows,
        "days": days,
        "span": (last - first).days + 1,
    }


def _sparse_import(args: argparse.Namespace) -> None:
    """A sparse history through `mlplatform import --ingest`, this code and ``--ref``'s."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        history, rows, with_rows = _sparse_history(folder, args.cards, args.days)
        codes = {"this code": repo}
        if args.ref:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(repo),
                    "worktree",
                    "add",
                    "--detach",
                    str(folder / "ref"),
                    args.ref,
                ],
                check=True,
                capture_output=True,
            )
            codes = {f"{args.ref} (reference)": folder / "ref", **codes}  # fmt: skip
        results = {}
        try:
            with contextlib.ExitStack() as stack:
                postgres = (
                    stack.enter_context(_postgres(args.dagster_storage == "postgres"))
                    if args.dagster_storage != "sqlite"
                    else None
                )
                for i, (name, code) in enumerate(codes.items()):
                    database = postgres.create_database(f"run{i}") if postgres else None
                    env = postgres.dagster_env(database) if postgres else None
                    results[name] = _import_ingest(folder / f"run-{i}", history, code, env)
        finally:
            if args.ref:
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force",
                                str(folder / "ref")], check=False)  # fmt: skip
    print(f"{date.today()}  sparse history: {rows:,} rows of {args.cards} card(s), {with_rows} "
          f"days with a purchase over {args.days} days, one extract; Dagster instance: "
          f"{args.dagster_storage}")  # fmt: skip
    print(
        f"{'code':<28}{'rows loaded':>12}{'days':>7}{'runs':>6}{'seconds':>9}{'s/day':>8}"
        f"{'events':>8}{'events/day':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:<28}{r['rows']:>12,}{r['days']:>7}{r['runs']:>6}{r['seconds']:>9.1f}"
            f"{r['seconds'] / r['span']:>8.3f}{r['events']:>8,}{r['events'] / r['span']:>12.1f}"
        )
    print(
        "targets: 20,000 rows on 6,000 days within 2 minutes; a range run's cost per day "
        "<= 20 ms (s/day: the whole import over the days of its span)"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()

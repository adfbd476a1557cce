"""Scale-out benchmark: a month of generated days through ingestion, curation and features on
the DuckDB file (one worker) and on DuckLake (a local Postgres catalog) with 1 and 2 workers.

Every worker is a process held to one DuckDB thread (one core, as one pod would have) that
writes its share of the days, one partition (one transaction) at a time, as the daily assets
do; on DuckLake the workers run at once (no pool), a conflicting commit retried. Features run
after every day is curated (a day's features read the days before it). Usage:

    python bench/scale.py [--cards 10500] [--days 31] [--workers 1 2]

Prints the wall time and rows/s of each configuration, its ratio to the file and to one
DuckLake worker, and the commit conflicts the workers retried, in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(stage: str, location: str, data_path: str, landing: str, days: list[str]) -> dict:
    """Write ``stage`` (load: ingestion + curation; features) of ``days``, one at a time."""
    from mlplatform.contract import load_contract
    from mlplatform.features.declarations import feature_registry
    from mlplatform.features.offline import build_card_features
    from mlplatform.ingestion import curate_partition, ingest_partition, landing_files
    from mlplatform.settings import DEFAULT_CONTRACT, get_settings
    from mlplatform.warehouse.connection import connect

    conflicts = []
    handler = logging.Handler()
    handler.emit = conflicts.append  # type: ignore[method-assign]
    logging.getLogger("mlplatform.warehouse.connection").addHandler(handler)
    logging.getLogger("mlplatform.warehouse.connection").setLevel(logging.INFO)
    contract = load_contract(DEFAULT_CONTRACT)
    registry = feature_registry(get_settings(), contract)
    started = time.perf_counter()
    with connect(location, data_path=data_path or None, threads=1, memory_limit="1GB") as conn:
        for day in map(date.fromisoformat, days):
            if stage == "load":
                ingest_partition(
                    conn, files=landing_files(Path(landing), day), partition_date=day,
                    contract=contract, pii_key=b"bench-key", max_amount=1e5,
                    max_line_bytes=1_000_000,
                )  # fmt: skip
                curate_partition(conn, day)
            else:
                build_card_features(conn, registry, day, day)
    return {"seconds": time.perf_counter() - started, "conflicts": len(conflicts)}


def _run(stage: str, location: str, data_path: str, landing: Path, days: list[str], n: int):
    """``n`` workers at once, the days dealt round-robin; (wall seconds, conflicts retried)."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                stage,
                location,
                data_path,
                str(landing),
                *days[k::n],
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for k in range(n)
    ]
    results = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"a {stage} worker failed (exit {process.returncode})")
        results.append(json.loads(out.splitlines()[-1]))
    return time.perf_counter() - started, sum(r["conflicts"] for r in results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=10_500)  # >= 1M rows
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from mlplatform.datagen import SimulationConfig, simulate
    from tests.postgres import postgres_cluster

    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        postgres_cluster(_free_port) as postgres,
    ):
        folder = Path(tmp)
        landing = folder / "landing"
        rows = simulate(SimulationConfig(n_cards=args.cards, days=args.days, seed=1), landing).rows
        days = sorted(p.stem.removeprefix("transactions_") for p in landing.glob("transactions_*"))
        configs = [("DuckDB file", str(folder / "warehouse.duckdb"), "", 1)]
        for n in args.workers:
            database = postgres.create_database(f"lake{n}")
            location = f"ducklake:postgres:{postgres.conninfo(database)}"
            configs.append((f"DuckLake, {n} worker(s)", location, str(folder / f"lake{n}"), n))
        print(f"{rows:,} rows over {len(days)} days; each worker one DuckDB thread", flush=True)
        measured = []
        for name, location, data_path, n in configs:
            os.sync()
            load, load_conflicts = _run("load", location, data_path, landing, days, n)
            features, feature_conflicts = _run("features", location, data_path, landing, days, n)
            measured.append((name, n, load, features, load_conflicts + feature_conflicts))
            print(f"  {name}: load {load:.1f}s, features {features:.1f}s", flush=True)

    file_total = measured[0][2] + measured[0][3]
    one_worker = next((m[2] + m[3] for m in measured if m[0].startswith("DuckLake") and m[1] == 1),
                      None)  # fmt: skip
    print(
        "\n| configuration | load s | features s | total s | rows/s | vs file | vs 1 lake "
        "worker | conflicts retried |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, load, features, conflicts in measured:
        total = load + features
        versus_one = f"{one_worker / total:.2f}x" if one_worker and name != "DuckDB file" else ""
        print(f"| {name} | {load:.1f} | {features:.1f} | {total:.1f} | {rows / total:,.0f} | "
              f"{file_total / total:.2f}x | {versus_one} | {conflicts} |")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        stage, location, data_path, landing, *work_days = sys.argv[2:]
        print(json.dumps(worker(stage, location, data_path, landing, work_days)))
    else:
        main()

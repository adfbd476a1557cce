"""Batch scoring benchmark: the `predictions` path beside a bare ``Booster.predict``.

On a built platform (by default the demo's: 2,000 cards x 80 days, a LightGBM champion), in
one run, for each of the last ``--days`` days of ``features.card_features`` and for those days
in one run (a backfill): (1) ``score_partitions`` as the asset runs it — read the days' feature
rows from DuckDB, predict, calibrate, delete the days' predictions and insert the new ones in
one transaction; (2) the champion's bare ``lightgbm.Booster.predict`` on the same rows, already
in a float64 matrix (its fastest input; nothing read or written); (3) with ``--ref DIR``, the
``score_partitions`` of another checkout (e.g. ``git worktree add /tmp/ref main``), in a worker
process on its own copy of the warehouse. Each is timed ``--repeats`` times, interleaved; the
medians are printed, with each path's throughput as a share of the bare predict's (issue 22's
target: at least 0.70).

``--scale K`` makes the last day K times larger first (its feature rows copied K - 1 times
under new transaction and card ids), e.g. ``--scale 50``: a day of 100k cards.

The warehouse and the MLflow database are copied into a temporary folder (the model files are
read where the registry points). Usage: python bench/batch_scoring.py [--home .mlplatform]
[--days 3] [--repeats 7] [--scale 1] [--ref DIR].
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.70


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _platform(home: Path) -> tuple[Any, Any]:
    """The champion's handle and a connection to the warehouse of ``home``."""
    from mlplatform.ml.registry import CHAMPION
    from mlplatform.serving.model import load_model
    from mlplatform.settings import Settings
    from mlplatform.warehouse.connection import connect

    settings = Settings(home=home)
    handle = load_model(settings.tracking_uri, settings.model_name, CHAMPION)
    return handle, connect(settings.warehouse_path)


def serve(home: Path) -> None:
    """Worker of ``--ref``: for each ``FIRST LAST`` line on stdin, the seconds of this
    checkout's ``score_partitions`` of those days, on stdout."""
    from mlplatform.serving.batch import score_partitions

    handle, conn = _platform(home)
    print("ready", flush=True)
    for line in sys.stdin:
        days = map(date.fromisoformat, line.split())
        print(_seconds(partial(score_partitions, conn, handle, *days)), flush=True)


class Reference:
    """``--ref DIR``'s worker process, on its own copy of the warehouse of ``home``."""

    def __init__(self, checkout: Path, home: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(home)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        if self._line() != "ready":
            raise RuntimeError(f"the --ref worker ({checkout}) did not start")

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def seconds(self, first: date, last: date) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{first} {last}\n")
        self.process.stdin.flush()
        return float(self._line())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def scale_last_day(conn: Any, times: int) -> None:
    """Copy the last day's feature rows ``times - 1`` times, under new ids (``#k`` suffix)."""
    conn.execute(
        "INSERT INTO features.card_features BY NAME "
        "SELECT * EXCLUDE (k) REPLACE (transaction_id || '#' || k AS transaction_id, "
        "card_id || '#' || k AS card_id) "
        "FROM features.card_features, range(1, $times) AS copies(k) "
        "WHERE partition_date = (SELECT max(partition_date) FROM features.card_features)",
        {"times": times},
    )
    conn.execute("CHECKPOINT")


def measure(
    conn: Any, handle: Any, reference: Reference | None, first: date, last: date, repeats: int
) -> dict[str, float]:
    """Rows and median seconds of the bare predict, the platform path, its parts and the
    reference's path."""
    import numpy as np

    from mlplatform.ml.models import THREADS
    from mlplatform.serving.batch import feature_batches, feature_matrix, score_partitions

    spec, booster = handle.model.spec, handle.model.estimator

    def read() -> np.ndarray:
        return np.vstack([feature_matrix(b) for b in feature_batches(conn, spec, first, last)])

    matrix = read()
    steps = {
        "bare": lambda: booster.predict(matrix, num_threads=THREADS),
        "platform": lambda: score_partitions(conn, handle, first, last),
        "read": read,
        "score": lambda: handle.score_matrix(matrix),
    }
    if reference is not None:
        steps["ref"] = lambda: reference.seconds(first, last)
        steps["ref"]()  # warm, as the platform below
    steps["platform"]()  # warm: from now on every run replaces rows that are there
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved: every step sees the same machine load
        for name, step in steps.items():
            times[name].append(step() if name == "ref" else _seconds(step))
    return {"rows": len(matrix), **{name: statistics.median(t) for name, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlplatform"))
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--ref", type=Path, help="a checkout whose path to time beside")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    from mlplatform.ml.models import THREADS

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as folder:
        work = Path(folder)
        shutil.copy(args.home / "warehouse.duckdb", work / "warehouse.duckdb")
        shutil.copy(args.home / "mlflow.db", work / "mlflow.db")
        (work / "mlartifacts").symlink_to((args.home / "mlartifacts").resolve())
        handle, conn = _platform(work)
        if args.scale > 1:
            scale_last_day(conn, args.scale)
        reference = None
        if args.ref:
            conn.close()  # the copy for the reference is of the scaled file
            shutil.copytree(work, work / "ref", symlinks=True, ignore=shutil.ignore_patterns("ref"))
            reference = Reference(args.ref, work / "ref")
            handle, conn = _platform(work)
        booster = handle.model.estimator
        days: list[date] = [
            d
            for (d,) in conn.execute(
                "SELECT DISTINCT partition_date FROM features.card_features ORDER BY 1 DESC "
                "LIMIT ?",
                [args.days],
            ).fetchall()
        ][::-1]
        print(
            f"champion version {handle.version} ({handle.model.family}, "
            f"{len(handle.feature_names)} features, {booster.num_trees()} trees), "
            f"LightGBM threads {THREADS}, median of {args.repeats} interleaved runs, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        ref = f" {'ref ms':>8} {'ratio':>6}" if reference else ""
        header = (
            f"{'days':<24} {'rows':>8} {'bare ms':>8} {'bare rows/s':>12} "
            f"{'platform ms':>11} {'rows/s':>10} {'ratio':>6}{ref} | {'read':>6} {'score':>7} "
            f"{'rest':>6} ms"
        )
        print(header)
        print("-" * len(header))
        for first, last in [*((d, d) for d in days), (days[0], days[-1])]:
            m = measure(conn, handle, reference, first, last, args.repeats)
            n, bare, platform = m["rows"], m["bare"], m["platform"]
            label = str(first) if first == last else f"{first} .. {last}"
            ref = f" {m['ref'] * 1e3:>8.1f} {bare / m['ref']:>6.2f}" if reference else ""
            rest = platform - m["read"] - m["score"]
            print(
                f"{label:<24} {n:>8,} {bare * 1e3:>8.1f} {n / bare:>12,.0f} "
                f"{platform * 1e3:>11.1f} {n / platform:>10,.0f} {bare / platform:>6.2f}{ref} | "
                f"{m['read'] * 1e3:>6.1f} {m['score'] * 1e3:>7.1f} {rest * 1e3:>6.1f}"
            )
        conn.close()
        if reference:
            reference.close()
    print(
        f"ratio = rows/s of the path over the bare Booster.predict's (target >= {TARGET_RATIO}); "
        "read = the feature rows into a float64 matrix, score = predict + calibration, "
        "rest = platform - read - score (the write that the scoring did not hide: delete, "
        "inserts, commit; below 0 when the read hides too)"
    )


if __name__ == "__main__":
    main()

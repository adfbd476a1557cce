"""Batch scoring benchmark: the `predictions` path beside a bare ``Booster.predict``.

On a built platform (by default the demo's: 2,000 cards x 90 days, a LightGBM champion), in
one run, for each of the last ``--days`` days of ``features.card_features`` and for those days
in one run (a backfill): (1) ``score_partitions`` as the asset runs it — read the day's
feature rows from DuckDB, build the model frame, predict, calibrate, delete the day's
predictions and insert the new ones in one transaction; (2) the champion's bare
``lightgbm.Booster.predict`` on the same rows, already in its input frame (nothing read or
written). Each is timed ``--repeats`` times, interleaved; the medians are printed, with the
platform's throughput as a share of the bare predict's (issue 12's target: at least 0.70).

The warehouse and the MLflow database are copied into a temporary folder (the model files are
read where the registry points). Usage: python bench/batch_scoring.py [--home .mlplatform]
[--days 3] [--repeats 7].
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.70


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(conn: Any, handle: Any, first: date, last: date, repeats: int) -> dict[str, float]:
    """Rows and median seconds of the bare predict, the platform path and its parts."""
    from mlplatform.ml.models import THREADS
    from mlplatform.serving.batch import feature_frame, score_partitions

    rows = feature_frame(conn, handle.model.spec, first, last)
    model_frame = handle.model.spec.frame(rows)
    booster = handle.model.estimator
    steps = {
        "bare": lambda: booster.predict(model_frame, num_threads=THREADS),
        "platform": lambda: score_partitions(conn, handle, first, last),
        "read": lambda: feature_frame(conn, handle.model.spec, first, last),
        "score": lambda: handle.score(rows),
    }
    steps["platform"]()  # warm: from now on every run replaces rows that are there
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved: every step sees the same machine load
        for name, step in steps.items():
            times[name].append(_seconds(step))
    return {"rows": len(rows), **{name: statistics.median(t) for name, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(".mlplatform"))
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from mlplatform.ml.models import THREADS
    from mlplatform.ml.registry import CHAMPION
    from mlplatform.serving.model import load_model
    from mlplatform.settings import Settings
    from mlplatform.warehouse.connection import connect

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as folder:
        work = Path(folder)
        shutil.copy(args.home / "warehouse.duckdb", work / "warehouse.duckdb")
        shutil.copy(args.home / "mlflow.db", work / "mlflow.db")
        settings = Settings(home=work)
        handle = load_model(settings.tracking_uri, settings.model_name, CHAMPION)
        booster = handle.model.estimator
        conn = connect(settings.warehouse_path)
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
            f"LightGBM threads {THREADS}, median of {args.repeats} interleaved runs"
        )
        header = (
            f"{'days':<24} {'rows':>7} {'bare ms':>8} {'bare rows/s':>12} "
            f"{'platform ms':>11} {'rows/s':>9} {'ratio':>6} | {'read':>5} {'score':>6} "
            f"{'write':>6} ms"
        )
        print(header)
        print("-" * len(header))
        for first, last in [*((d, d) for d in days), (days[0], days[-1])]:
            m = measure(conn, handle, first, last, args.repeats)
            n, bare, platform = m["rows"], m["bare"], m["platform"]
            label = str(first) if first == last else f"{first} .. {last}"
            write = platform - m["read"] - m["score"]
            print(
                f"{label:<24} {n:>7,} {bare * 1e3:>8.1f} {n / bare:>12,.0f} "
                f"{platform * 1e3:>11.1f} {n / platform:>9,.0f} {bare / platform:>6.2f} | "
                f"{m['read'] * 1e3:>5.1f} {m['score'] * 1e3:>6.1f} {write * 1e3:>6.1f}"
            )
        conn.close()
    print(
        f"ratio = platform rows/s over bare Booster.predict rows/s (target >= {TARGET_RATIO}); "
        "read = the feature rows into a DataFrame, score = frame + predict + calibration, "
        "write = the rest (delete and insert in one transaction, commit)"
    )


if __name__ == "__main__":
    main()

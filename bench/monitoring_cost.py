"""Benchmark of `model_performance` and of the compute-cost recording, each beside a reference.

(1) A day of ``--rows`` scored transactions (``--cards`` cards, ~2 % positives, all matured)
in a fresh warehouse: ``measure_performance`` (the asset's work: the DuckDB join of
``ml.predictions`` with ``ml.targets``, average precision, ROC AUC, calibration error, card
precision@k, the write of ``monitoring.performance``) beside the straightforward reference
(both tables read into pandas, merged, scikit-learn's metrics, a pandas group-by for the card
precision). Medians of ``--repeats``, and the peak memory of each (``CostMeter``).
(2) The cost of recording the cost: ``--steps`` empty assets materialized in one run, plain
and with ``@with_compute_cost`` (metadata + the record file; the load into the table is timed
on its own), per step.

Usage: python bench/monitoring_cost.py [--rows 1000000] [--cards 100000] [--repeats 5]
[--steps 20].
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

DAY = date(2025, 3, 1)


def _median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, float | None]:
    """Median wall seconds of ``run`` and the largest peak MB seen."""
    from mlplatform.monitoring.compute_cost import CostMeter

    seconds, peaks = [], []
    for _ in range(repeats):
        with CostMeter() as meter:
            run()
        seconds.append(meter.cost.seconds)
        peaks.append(meter.cost.peak_mb or 0.0)
    return statistics.median(seconds), max(peaks)


def performance_bench(folder: Path, rows: int, cards: int, repeats: int) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from mlplatform.ml.evaluation import expected_calibration_error
    from mlplatform.monitoring.performance import PerformanceRule, measure_performance
    from mlplatform.warehouse.connection import connect

    conn = connect(folder / "warehouse.duckdb")
    conn.execute(
        """CREATE TABLE ml.targets AS
           SELECT 't' || i AS transaction_id, 'c' || (i % $cards) AS card_id, true AS matured,
                  (hash(i) % 50 = 0)::INTEGER AS target
           FROM range($rows) AS r(i)""",
        {"rows": rows, "cards": cards},
    )
    conn.execute(
        """INSERT INTO ml.predictions
           SELECT transaction_id, card_id, $day, least(1, 0.3 * target + (hash(transaction_id)
                  % 1000) / 1500), false, 'bench', '1', 'dataset-1', now()
           FROM ml.targets""",
        {"day": DAY},
    )
    rule = PerformanceRule(ap_margin=0.1, min_positives=30, k=100)
    holdout = {"average_precision": 0.5, "roc_auc": 0.9, "ece": 0.01}

    def ours() -> None:
        measure_performance(conn, DAY, DAY, lambda version: holdout, rule)

    def reference() -> None:
        predictions = conn.execute(
            "SELECT * FROM ml.predictions WHERE partition_date = ?", [DAY]
        ).df()
        targets = conn.execute("SELECT transaction_id, matured, target FROM ml.targets").df()
        day = predictions.merge(targets, on="transaction_id")
        y, p = day["target"].to_numpy(), day["score"].to_numpy()
        average_precision_score(y, p), roc_auc_score(y, p)
        expected_calibration_error(y, p)
        by_card = day.groupby("card_id").agg(score=("score", "max"), positive=("target", "max"))
        by_card.nlargest(rule.k, "score")["positive"].mean()

    ours()  # warm up both (DuckDB caches, imports)
    reference()
    ours_s, ours_mb = _median_seconds(ours, repeats)
    ref_s, ref_mb = _median_seconds(reference, repeats)
    print(f"model_performance of a day of {rows:,} rows ({cards:,} cards), median of {repeats}:")
    print(f"  platform  (measure_performance)      {ours_s * 1e3:8.1f} ms   peak {ours_mb:7.1f} MB")
    print(f"  reference (pandas merge + sklearn)   {ref_s * 1e3:8.1f} ms   peak {ref_mb:7.1f} MB")
    print(f"  platform / reference time: {ours_s / ref_s:.2f}")
    conn.close()


def cost_bench(folder: Path, steps: int) -> None:
    import dagster as dg

    from mlplatform.assets.cost import with_compute_cost
    from mlplatform.monitoring.compute_cost import load_compute_cost
    from mlplatform.settings import get_settings
    from mlplatform.warehouse.connection import connect

    def empty(name: str, measured: bool) -> dg.AssetsDefinition:
        def compute() -> None:
            return None

        return dg.asset(name=name)(with_compute_cost(compute) if measured else compute)

    figures = {}
    with dg.DagsterInstance.ephemeral() as instance:
        for measured in (False, True, False, True):  # interleaved, the second pair counts
            assets = [empty(f"{'m' if measured else 'p'}_{i}", measured) for i in range(steps)]
            started = time.perf_counter()
            dg.materialize(assets, instance=instance)
            figures[measured] = (time.perf_counter() - started) / steps
    with connect(folder / "warehouse.duckdb") as conn:
        started = time.perf_counter()
        loaded = load_compute_cost(conn, get_settings().compute_cost_dir)
        load_s = time.perf_counter() - started
    plain, measured = figures[False], figures[True]
    print(f"compute cost of {steps} empty assets in one run, per step:")
    print(f"  plain asset                 {plain * 1e3:7.1f} ms")
    extra = (measured - plain) * 1e3
    print(f"  with @with_compute_cost     {measured * 1e3:7.1f} ms   (+{extra:.1f} ms)")
    print(f"  with / plain: {measured / plain:.2f}")
    print(f"  loading {loaded} records into monitoring.compute_cost: {load_s * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-") as tmp:
        os.environ["MLPLATFORM_HOME"] = tmp
        performance_bench(Path(tmp), args.rows, args.cards, args.repeats)
        cost_bench(Path(tmp), args.steps)


if __name__ == "__main__":
    main()

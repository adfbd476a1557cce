"""Drift benchmark: the platform's drift computation beside Evidently's DataDriftPreset.

In one run, on the same synthetic data (``--rows`` reference rows and as many current rows,
22 features: 14 numbers and 8 categories of 2 to 300 values, half of them shifted by amounts
from clearly below to clearly above the 0.1 threshold):

1. ours: in a first process both files are loaded into a DuckDB warehouse and the reference
   profiled with the platform's profile code (timed apart: it runs once per dataset version,
   at training); in a second process (so its peak resident memory is the daily path's own)
   the current rows are compared with the stored bins
   (:func:`mlplatform.monitoring.drift.compare`, what ``data_drift`` runs for a day);
2. Evidently 0.7's ``DataDriftPreset`` on the same two frames (pandas, already in memory).

Printed: seconds of each, the ratio (target >= 50x), the share of columns with the same
drifted / not-drifted verdict (target >= 95%) and our peak memory (target < 1 GB).
Usage: python bench/drift.py [--rows 1000000].
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

LEVELS = {"c2": 2, "c3": 3, "c5": 5, "c7": 7, "c14": 14, "c30": 30, "c100": 100, "c300": 300}


def _numbers(rng: np.random.Generator, rows: int, shifted: bool) -> dict[str, np.ndarray]:
    """14 numeric columns; when ``shifted``, the odd-numbered ones move (from far below to
    far above the threshold) and the even ones stay."""
    s = 1.0 if shifted else 0.0
    return {
        "n00_normal": rng.normal(0, 1, rows),
        "n01_normal_up": rng.normal(0.3 * s, 1, rows),  # W ~ 0.30
        "n02_lognormal": np.exp(rng.normal(3, 0.8, rows)),
        "n03_lognormal_up": np.exp(rng.normal(3 + 0.2 * s, 0.8, rows)),  # amounts +22%
        "n04_exponential": rng.exponential(1.0, rows),
        "n05_exponential_wide": rng.exponential(1.0 + 0.5 * s, rows),
        "n06_uniform": rng.uniform(0, 10, rows),
        "n07_uniform_nudged": rng.uniform(0 + 0.05 * s, 10 + 0.05 * s, rows),  # W ~ 0.017
        "n08_counts": rng.poisson(12, rows).astype(float),
        "n09_counts_up": rng.poisson(12 + 2 * s, rows).astype(float),  # W ~ 0.58
        "n10_gamma": rng.gamma(2.0, 2.0, rows),
        "n11_gamma_slight": rng.gamma(2.0, 2.0 * (1 + 0.1 * s), rows),  # W ~ 0.14
        "n12_flag": (rng.random(rows) < 0.3).astype(float),
        "n13_flag_up": (rng.random(rows) < 0.3 + 0.2 * s).astype(float),  # JS ~ 0.15
    }


def _categories(rng: np.random.Generator, rows: int, shifted: bool) -> dict[str, np.ndarray]:
    columns = {}
    for i, (name, levels) in enumerate(LEVELS.items()):
        weights = 1 / np.arange(1, levels + 1)
        if shifted and i % 2 == 1:  # c3, c7, c30, c300: the order of the levels reversed
            weights = weights[::-1] if name != "c30" else weights**0.9  # c30: a nudge
        columns[name] = rng.choice([f"{name}_{k}" for k in range(levels)], rows,
                                   p=weights / weights.sum())  # fmt: skip
    return columns


def synthetic(rows: int, shifted: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({**_numbers(rng, rows, shifted), **_categories(rng, rows, shifted)})


def _peak_mb() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss would also count the parent's
    resident memory at the fork that started this process)."""
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        / 1024
    )


def profile_reference(folder: Path) -> dict[str, object]:
    """Load both files into a warehouse and profile the reference (what training does once
    per dataset version): run in a fresh process."""
    from mlplatform.monitoring.profile import build_reference_profile
    from mlplatform.warehouse.connection import connect

    with connect(folder / "warehouse.duckdb", memory_limit="1GB") as conn:
        for name in ("reference", "current"):
            conn.execute(f"CREATE TABLE {name}_rows AS SELECT * FROM '{folder / name}.parquet'")
        kinds = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'reference_rows'").fetchall())  # fmt: skip
        started = time.perf_counter()
        build_reference_profile(conn, kinds, "bench", bins=10, source="reference_rows")
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mb": _peak_mb()}


def ours(folder: Path) -> dict[str, object]:
    """The daily path on the warehouse: open it, compare the current rows with the stored
    bins (what ``data_drift`` runs for a day); run in a fresh process."""
    import scipy.special  # noqa: F401  (imported once per run process; not the day's work)

    from mlplatform.monitoring.drift import compare, reference_profile
    from mlplatform.warehouse.connection import connect

    with connect(folder / "warehouse.duckdb", memory_limit="1GB") as conn:
        started = time.perf_counter()
        results = compare(conn, reference_profile(conn, "bench"), "SELECT * FROM current_rows")
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "verdicts": {r.feature: r.drifted for r in results},
        "distances": {r.feature: r.distance for r in results},
    }


def _child(step: str, folder: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, f"--{step}", str(folder)], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def evidently(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[float, dict, dict]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=[c for c in reference if c.startswith("n")],
        categorical_columns=[c for c in reference if c.startswith("c")],
    )
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    seconds = time.perf_counter() - started
    verdicts, values = {}, {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("column"):
            verdicts[config["column"]] = metric["value"] >= config["threshold"]
            values[config["column"]] = metric["value"]
    return seconds, verdicts, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--profile", type=Path, help=argparse.SUPPRESS)  # child processes
    parser.add_argument("--ours", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile or args.ours:
        print(json.dumps(profile_reference(args.profile) if args.profile else ours(args.ours)))
        return
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-drift-") as name:
        folder = Path(name)
        reference = synthetic(args.rows, shifted=False, seed=1)
        current = synthetic(args.rows, shifted=True, seed=2)
        reference.to_parquet(folder / "reference.parquet")
        current.to_parquet(folder / "current.parquet")
        profiled = _child("profile", folder)
        mine = _child("ours", folder)
        seconds, theirs, values = evidently(reference, current)
    columns = sorted(theirs)
    same = [c for c in columns if mine["verdicts"][c] == theirs[c]]
    print(f"{args.rows:,} reference rows vs {args.rows:,} current rows, {len(columns)} columns")
    print(f"{'column':<22} {'ours':>10} {'evidently':>10}  drifted (ours / evidently)")
    for c in columns:
        print(f"{c:<22} {mine['distances'][c]:>10.4f} {values[c]:>10.4f}  "
              f"{mine['verdicts'][c]!s:>5} / {theirs[c]!s:<5}")  # fmt: skip
    print(f"reference profile (once per dataset version, in training): "
          f"{profiled['seconds']:.2f} s, peak {profiled['peak_mb']:.0f} MB (loading both "
          "files into the warehouse included)")  # fmt: skip
    print(f"ours (drift of the current rows from the bins): {mine['seconds']:.2f} s")
    print(f"evidently DataDriftPreset: {seconds:.2f} s")
    print(
        f"ratio: {seconds / mine['seconds']:.0f}x (target >= 50x); with the profile: "
        f"{seconds / (mine['seconds'] + profiled['seconds']):.0f}x"
    )
    print(f"same verdict: {len(same)}/{len(columns)} = {len(same) / len(columns):.0%} "
          "(target >= 95%)")  # fmt: skip
    print(f"our peak memory (the drift process's RSS): {mine['peak_mb']:.0f} MB (target < 1024 MB)")


if __name__ == "__main__":
    main()

"""In-process latency of the online path, one transaction at a time, on a platform home.

Usage: ``python bench/online_features.py --home DIR [--transactions 300]``. ``DIR`` is a data
home after `make demo` (a champion, a warehouse; the online store when it exists). It scores
the last day's landing rows that the warehouse holds, one per call, and prints p50 / p99 of:
the compiled online path (rules, curation and features in Python), the same with ingestion's
SQL files run in DuckDB for the rows (the reference route), the model alone on one feature row,
and ``load_champion().predict_proba`` end to end. Each timed call is preceded by one untimed
pass over the same transactions, so every card's events are in memory (as in the service).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd


def _percentiles(times: list[float]) -> str:
    return f"p50 {np.percentile(times, 50):7.2f} ms   p99 {np.percentile(times, 99):7.2f} ms"


def _timed(calls: list[Callable[[], object]]) -> list[float]:
    for call in calls:  # warm: cards read, caches filled
        call()
    times = []
    for call in calls:
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--transactions", type=int, default=300)
    args = parser.parse_args()
    os.environ["MLPLATFORM_HOME"] = str(args.home.resolve())

    import mlplatform
    from mlplatform.contract import load_contract
    from mlplatform.features.declarations import feature_registry
    from mlplatform.serving.online import OnlineFeatures
    from mlplatform.settings import get_settings

    settings = get_settings()
    contract = load_contract(settings.contract)
    registry = feature_registry(settings, contract)
    landing = sorted(settings.landing_dir.glob("transactions_*.csv"))[-1]
    rows = pd.read_csv(landing, dtype=str).sample(args.transactions, random_state=7)
    canonical = rows.rename(columns={s: c for c, s in contract.columns.items()})
    transactions = [
        {k: v for k, v in row.items() if isinstance(v, str)} for row in canonical.to_dict("records")
    ]
    store = settings.online_store_path
    path = store if store.exists() else settings.warehouse_path
    champion = mlplatform.load_champion(settings)
    print(f"{len(transactions)} transactions of {landing.name}; features from {path}")

    compiled = OnlineFeatures(path, registry, settings.pseudonym_key, preload=True)
    reference = OnlineFeatures(
        path, registry, settings.pseudonym_key, compiled_rows=False, preload=True
    )
    valid = []
    for transaction in transactions:
        try:
            compiled.compute([transaction])
        except ValueError:
            continue
        valid.append(transaction)
    one_row = compiled.compute(valid[:1]).frame
    figures = {
        "online features, compiled": _timed([lambda t=t: compiled.compute([t]) for t in valid]),
        "online features, ingestion SQL in DuckDB": _timed(
            [lambda t=t: reference.compute([t]) for t in valid]
        ),
        "model on one feature row": _timed(
            [lambda: champion.model.predict_proba(one_row)] * len(valid)
        ),
        "load_champion().predict_proba (features + model)": _timed(
            [lambda t=t: champion.predict_proba(pd.DataFrame([t])) for t in valid]
        ),
    }
    width = max(map(len, figures))
    base = np.percentile(figures["online features, compiled"], 50)
    for name, times in figures.items():
        ratio = np.percentile(times, 50) / base
        print(f"{name:<{width}}   {_percentiles(times)}   {ratio:5.1f}x the compiled p50")


if __name__ == "__main__":
    main()

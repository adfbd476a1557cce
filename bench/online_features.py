"""In-process latency of the online path, one transaction at a time, on a platform home.

Usage: ``python bench/online_features.py --home DIR [--transactions 300] [--ref REV]``.
``DIR`` is a data
home after `make demo` (a champion, a warehouse; the online store when it exists). It scores
the last day's landing rows that the warehouse holds, one per call, and prints p50 / p99 of:
the compiled online path (rules, curation and features in Python), its window aggregates over
the card's state alone, the same path with ingestion's SQL files run in DuckDB for the rows
(the reference route), the model alone on one feature row, and
``load_champion().predict_proba`` end to end. Each timed call is preceded by one untimed pass
over the same transactions, so every card's events are in memory (as in the service).

Then the per-card state: events held, bytes per card in memory (Python objects, deep) and as
``CardState.to_bytes`` (where the code has it), with the time to write and read one card; and
a store replacement while a thread scores transactions under a lock as the service does:
how long the store took to read, how long the lock was held for it, and the longest wait of
a request for the lock meanwhile.

``--ref REV`` first runs the same measurements on the code of git revision ``REV`` (a
temporary worktree put first on ``PYTHONPATH``), so that before and after come from one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _deep_size(value: Any, seen: set[int]) -> int:
    """Bytes of a Python object and of everything it refers to (objects counted once)."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        return size + sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return size + sum(_deep_size(v, seen) for v in value)
    slots = getattr(type(value), "__slots__", ())
    if slots and not isinstance(value, str | bytes | int | float):
        # the layout is shared by every card: not the card's
        return size + sum(
            _deep_size(getattr(value, s), seen)
            for s in slots
            if s != "layout" and hasattr(value, s)
        )
    return size


def _state_figures(features: Any) -> None:
    cards = features.state.cards
    events = [len(c) if hasattr(c, "tiles") else len(c.records) for c in cards.values()]
    shared: set[int] = set()
    memory = [_deep_size(card, shared) for card in cards.values()]
    print(f"state: {len(cards):,} cards, {sum(events):,} events held "
          f"(per card mean {np.mean(events):.0f}, max {max(events)})")  # fmt: skip
    # everything the state holds but the compiled declarations (the id index of the old code)
    rest = sum(_deep_size(v, shared) for k, v in vars(features.state).items()
               if k not in ("compiled", "layout", "cards"))  # fmt: skip
    print(f"  in memory (Python objects)  per card mean {np.mean(memory):9,.0f} B   "
          f"p99 {np.percentile(memory, 99):9,.0f} B   total {sum(memory) / 1e6:7.1f} MB "
          f"(+ {rest / 1e6:.1f} MB of partials and indexes)")  # fmt: skip
    if not hasattr(next(iter(cards.values())), "to_bytes"):
        print("  as bytes: this code has no serialized card state")
        return
    from mlplatform.features.card_state import CardState

    layout = features.compiled.layout
    written, write_ms, read_ms = [], [], []
    for card in cards.values():
        started = time.perf_counter()
        data = card.to_bytes()
        write_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        CardState.from_bytes(data, layout)
        read_ms.append((time.perf_counter() - started) * 1000)
        written.append(len(data))
    print(
        f"  as bytes (to_bytes)         per card mean {np.mean(written):9,.0f} B   "
        f"p99 {np.percentile(written, 99):9,.0f} B   total {sum(written) / 1e6:7.1f} MB"
    )
    print(f"  to_bytes per card {_percentiles(write_ms)}; from_bytes {_percentiles(read_ms)}")


def _replacement_figures(features: Any, transactions: list[dict], store: Path) -> None:
    """Replace the store file (a copy renamed onto it) and reload it while a thread scores
    transactions under a lock, as the service's reload and requests do."""
    lock, stop, waits = threading.Lock(), threading.Event(), []

    def requests() -> None:
        while not stop.is_set():
            for transaction in transactions:
                asked = time.perf_counter()
                with lock:
                    waits.append((time.perf_counter() - asked) * 1000)
                    features.compute([transaction])
                if stop.is_set():
                    return

    copy = store.with_name(store.name + ".bench-copy")
    shutil.copy(store, copy)
    copy.replace(store)
    thread = threading.Thread(target=requests)
    thread.start()
    time.sleep(0.5)
    began = time.perf_counter()
    if hasattr(features, "load_store"):  # read beside the serving state, then swap
        loaded = features.load_store()
        with lock:
            locked = time.perf_counter()
            retired = features.swap(loaded)
            held = time.perf_counter() - locked
        retired.close()
    else:  # the whole refresh under the lock
        with lock:
            locked = time.perf_counter()
            features.refresh()
            held = time.perf_counter() - locked
    total = time.perf_counter() - began
    time.sleep(0.2)
    stop.set()
    thread.join()
    print(f"store replaced: read and swapped in {total * 1000:,.0f} ms; request lock held "
          f"{held * 1000:.2f} ms; {len(waits)} requests meanwhile, longest wait for the lock "
          f"{max(waits):.2f} ms")  # fmt: skip


def _measure(home: Path, count: int) -> None:
    os.environ["MLPLATFORM_HOME"] = str(home.resolve())

    import mlplatform
    from mlplatform.contract import load_contract
    from mlplatform.features.declarations import feature_registry
    from mlplatform.serving.online import OnlineFeatures
    from mlplatform.settings import get_settings

    settings = get_settings()
    contract = load_contract(settings.contract)
    registry = feature_registry(settings, contract)
    landing = sorted(settings.landing_dir.glob("transactions_*.csv"))[-1]
    rows = pd.read_csv(landing, dtype=str).sample(count, random_state=7)
    canonical = rows.rename(columns={s: c for c, s in contract.columns.items()})
    transactions = [
        {k: v for k, v in row.items() if isinstance(v, str)} for row in canonical.to_dict("records")
    ]
    store = settings.online_store_path
    path = store if store.exists() else settings.warehouse_path
    champion = mlplatform.load_champion(settings)
    print(f"code: {Path(mlplatform.__file__).parent}")
    print(f"{len(transactions)} transactions of {landing.name}; features from {path}")

    started = time.perf_counter()
    compiled = OnlineFeatures(path, registry, settings.pseudonym_key, preload=True)
    print(f"store read with every card: {time.perf_counter() - started:.2f} s")
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
    records = [compiled.compute([t]).records for t in valid]
    figures = {
        "online features, compiled": _timed([lambda t=t: compiled.compute([t]) for t in valid]),
        "  of which the window aggregates (state)": _timed(
            [lambda r=r: compiled.state.aggregates(r) for r in records]
        ),
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
    reference.close()
    _state_figures(compiled)
    _replacement_figures(compiled, valid, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--ref", help="also measure the code of this git revision, first")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(args.home, args.transactions)
        return
    repository = Path(__file__).resolve().parents[1]
    runs = [(args.ref, None)] if args.ref else []
    for label, tree in [*runs, ("this tree", repository)]:
        # On a copy of the home: the store file is replaced during the measurement.
        with tempfile.TemporaryDirectory(prefix="bench-online-") as scratch:
            home = Path(scratch) / "home"
            shutil.copytree(args.home, home)
            if tree is None:
                tree = Path(scratch) / "tree"
                subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach",
                                str(tree), label], check=True, capture_output=True)  # fmt: skip
            print(f"== {label} ==", flush=True)
            try:
                subprocess.run(
                    [sys.executable, __file__, "--measure", "--home", str(home),
                     "--transactions", str(args.transactions)],
                    env={**os.environ, "PYTHONPATH": str(tree)}, check=True,
                )  # fmt: skip
            finally:
                if tree != repository:
                    subprocess.run(["git", "-C", str(repository), "worktree", "remove",
                                    "--force", str(tree)], check=True)  # fmt: skip


if __name__ == "__main__":
    main()

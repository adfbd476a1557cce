"""Feature build benchmark: ``features.card_features`` beside pandas groupby-rolling.

On a simulated month (10k cards x 31 days, ~1M curated transactions by default), in one run:
the full feature build over all days at once (the single-run backfill), the same 16 card window
aggregates alone, the daily incremental build of the last day (with its lookback), and, with
pandas groupby-rolling (``groupby(keys).rolling(span, closed="both")``, ``groupby().shift()``),
the same 16 aggregates alone and every window aggregate the full build computes (32 with the
default contract). pandas' values are checked against the DuckDB table on every row.

Each measurement runs in its own process (so its peak memory is its own), on the same
warehouse file. Usage: python bench/features.py [--cards 10000] [--days 31] [--seed 1]
[--workdir DIR] [--memory-limit 1GB]. With --workdir, a warehouse built there by an earlier run
with the same --cards/--days/--seed is reused (no generation or ingestion).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

PII_KEY = b"bench-key"
MARKER = "bench_features.json"
LABELS = ("1h", "24h", "7d", "30d")
SPANS = {"1h": "1h", "24h": "24h", "7d": "7D", "30d": "30D"}
AGGREGATES = ("txn_count", "amount_sum", "amount_mean", "amount_max")
#: The 16 card window aggregates pandas computes too (they depend only on each other).
WINDOW_FEATURES = tuple(f"card_{a}_{label}" for label in LABELS for a in AGGREGATES)
#: Every window aggregate of the full build (59 features with the default contract: the rest
#: are the transaction's own columns or arithmetic of these), computed by pandas too.
ALL_WINDOW_FEATURES = (
    *WINDOW_FEATURES,
    "card_amount_std_30d", "card_history_days", "card_seconds_since_previous",
    "card_km_from_previous", "card_disc_spend_14d", "card_spend_14d", "card_disc_spend_90d",
    "card_spend_90d", "card_category_count_30d", "card_merchant_visits_90d",
    *(f"merchant_{kind}_count_{label}" for label in ("1d", "7d", "30d")
      for kind in ("labelled", "positive")),
)  # fmt: skip
#: Card RANGE-frame aggregates (same-second peers of a card share their values).
CARD_RANGE = tuple(n for n in ALL_WINDOW_FEATURES[:24] if "previous" not in n)
#: Compared exactly (the others within a relative tolerance).
EXACT = tuple(n for n in ALL_WINDOW_FEATURES if "count" in n or "_max_" in n or "visits" in n)
TARGET_SPEEDUP, TARGET_ROWS_PER_S, TARGET_PEAK_MB = 10.0, 300_000, 2048


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warehouse(folder: Path) -> Path:
    return folder / "warehouse.duckdb"


def _registry(only_windows: bool = False) -> Any:
    """The registry of the default contract; ``only_windows``: the 16 aggregates alone."""
    from mlplatform.contract import load_contract
    from mlplatform.features.declarations import feature_registry
    from mlplatform.settings import DEFAULT_CONTRACT, get_settings

    registry = feature_registry(get_settings(), load_contract(DEFAULT_CONTRACT))
    if only_windows:
        features = tuple(f for f in registry.features if f.name in WINDOW_FEATURES)
        registry = dataclasses.replace(registry, features=features)
    return registry


def _days(conn: Any) -> tuple[date, date]:
    return conn.execute(
        "SELECT min(partition_date), max(partition_date) FROM curated.transactions"
    ).fetchone()


def phase_prepare(folder: Path, cards: int, days: int, seed: int, limit: str) -> dict:
    """Simulate the landing files, then ingest and curate every day (as the assets do)."""
    from mlplatform.contract import load_contract
    from mlplatform.datagen import SimulationConfig, simulate
    from mlplatform.ingestion import (
        curate_partition,
        ingest_partition,
        landing_files,
        load_card_reference,
        partition_date_of,
    )
    from mlplatform.settings import DEFAULT_CONTRACT, get_settings
    from mlplatform.warehouse.connection import connect

    landing = folder / "landing"
    config = SimulationConfig(
        n_cards=cards, days=days, start_date=get_settings().start_date, seed=seed
    )
    summary = simulate(config, landing)
    contract = load_contract(DEFAULT_CONTRACT)
    partitions = sorted({d for p in landing.glob("*.csv") if (d := partition_date_of(p))})
    started = time.perf_counter()
    with connect(_warehouse(folder), memory_limit=limit) as conn:
        load_card_reference(conn, landing, contract.reference, PII_KEY)
        for day in partitions:
            ingest_partition(
                conn, files=landing_files(landing, day), partition_date=day, contract=contract,
                pii_key=PII_KEY, max_amount=100_000.0, max_line_bytes=1_000_000,
            )  # fmt: skip
            curate_partition(conn, day)
        curated = conn.execute("SELECT count(*) FROM curated.transactions").fetchone()[0]
    return {
        "generated": summary.rows,
        "generate_seconds": summary.seconds,
        "rows": curated,
        "ingest_seconds": time.perf_counter() - started,
    }


def _build(folder: Path, limit: str, only_windows: bool, last_day_only: bool) -> dict:
    from mlplatform.features.offline import build_card_features
    from mlplatform.warehouse.connection import connect

    registry = _registry(only_windows)
    with connect(_warehouse(folder), memory_limit=limit) as conn:
        first, last = _days(conn)
        start = last if last_day_only else first
        started, cpu = time.perf_counter(), time.process_time()
        result = build_card_features(conn, registry, start, last)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "rows": result.rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "features": len(registry.enabled),
        "read_from": str(result.lookback_start),
        "days": f"{start} .. {last}",
    }


def phase_windows(folder: Path, limit: str) -> dict:
    """The 16 card window aggregates alone (recreates the table with those columns only)."""
    return _build(folder, limit, only_windows=True, last_day_only=False)


def phase_full(folder: Path, limit: str) -> dict:
    """Every enabled feature over every day at once (the single-run backfill)."""
    return _build(folder, limit, only_windows=False, last_day_only=False)


def phase_daily(folder: Path, limit: str) -> dict:
    """The last day alone, reading its lookback (the daily partition run)."""
    return _build(folder, limit, only_windows=False, last_day_only=True)


def _read_events(folder: Path, limit: str, columns: tuple[str, ...]) -> tuple[Any, Any, float]:
    """Curated events sorted by card, time and hash(transaction_id) (the previous-transaction
    order), and the DuckDB table's ``columns``; with the seconds that took (not in figures)."""
    from mlplatform.warehouse.connection import connect

    started = time.perf_counter()
    with connect(_warehouse(folder), read_only=True, memory_limit=limit) as conn:
        events = conn.execute(
            """SELECT transaction_id, card_id, category, merchant, event_time, amount,
                      merchant_lat, merchant_long, label
               FROM curated.transactions ORDER BY card_id, event_time, hash(transaction_id)"""
        ).df()
        duck = conn.execute(
            f"SELECT transaction_id, {', '.join(columns)} FROM features.card_features"
        ).df()
    return events, duck, time.perf_counter() - started


def _card_rolling(events: Any) -> dict[str, Any]:
    """The 16 card aggregates: count, sum, mean, max over 1h, 24h, 7d, 30d."""
    by_card = events.set_index("event_time").groupby("card_id", sort=False)["amount"]
    rolled: dict[str, Any] = {}
    for label in LABELS:
        window = by_card.rolling(SPANS[label], closed="both")
        rolled[f"card_txn_count_{label}"] = window.count().to_numpy()
        rolled[f"card_amount_sum_{label}"] = window.sum().to_numpy()
        rolled[f"card_amount_mean_{label}"] = window.mean().to_numpy()
        rolled[f"card_amount_max_{label}"] = window.max().to_numpy()
    return rolled


def _all_rolling(events: Any, discretionary: tuple[str, ...], delay: int) -> dict[str, Any]:
    """Every window aggregate of the full build, with groupby-rolling and groupby-shift: the 16
    card aggregates, std 30d, history (earliest event in 90d), discretionary and total spend
    14d and 90d, previous transaction (seconds, km), card+category count 30d, card+merchant
    visits 90d and the merchant's matured label counts over whole days."""
    import numpy as np
    import pandas as pd

    rolled = _card_rolling(events)
    indexed = events.set_index("event_time")
    indexed["disc_amount"] = np.where(indexed["category"].isin(discretionary),
                                      indexed["amount"], 0.0)  # fmt: skip
    indexed["seconds"] = (events["event_time"].to_numpy().astype("datetime64[s]")
                          .astype(np.int64).astype(float))  # fmt: skip
    indexed["amount_squared"] = indexed["amount"] ** 2
    by_card = indexed.groupby("card_id", sort=False)
    # As DuckDB computes it: from the window's count, sum and sum of squares (pandas' own
    # rolling std updates a variance as events enter and leave, which drifts by up to tens of
    # percent after a large amount leaves the window).
    count, total = rolled["card_txn_count_30d"], rolled["card_amount_sum_30d"]
    squares = by_card["amount_squared"].rolling("30D", closed="both").sum().to_numpy()
    rolled["card_amount_std_30d"] = np.sqrt(np.maximum(squares / count - (total / count) ** 2, 0))
    earliest = by_card["seconds"].rolling("90D", closed="both").min().to_numpy()
    rolled["card_history_days"] = (indexed["seconds"].to_numpy() - earliest) / 86400
    for days in (14, 90):
        rolled[f"card_disc_spend_{days}d"] = (
            by_card["disc_amount"].rolling(f"{days}D", closed="both").sum().to_numpy()
        )
        rolled[f"card_spend_{days}d"] = (
            by_card["amount"].rolling(f"{days}D", closed="both").sum().to_numpy()
        )

    # Previous transaction of the card (frame order: time, then hash(transaction_id)).
    previous = events.groupby("card_id", sort=False)[
        ["event_time", "merchant_lat", "merchant_long"]
    ].shift(1)
    recent = (previous["event_time"] >= events["event_time"] - pd.Timedelta(days=90)).to_numpy()
    gap = (events["event_time"] - previous["event_time"]).dt.total_seconds().to_numpy()
    rolled["card_seconds_since_previous"] = np.where(recent, gap, np.nan)
    lat1, long1 = np.radians(previous["merchant_lat"]), np.radians(previous["merchant_long"])
    lat2, long2 = np.radians(events["merchant_lat"]), np.radians(events["merchant_long"])
    km = 2 * 6371.0088 * np.arcsin(np.sqrt(
        np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2)
        * np.sin((long2 - long1) / 2) ** 2
    ))  # fmt: skip
    rolled["card_km_from_previous"] = np.where(recent, km.to_numpy(), np.nan)

    # Card + category (30 days) and card + merchant (90 days, earlier visits): row order is
    # restored through the frame's integer index.
    for keys, span, name, minus in ((["card_id", "category"], "30D", "card_category_count_30d", 0),
                                    (["card_id", "merchant"], "90D", "card_merchant_visits_90d",
                                     1)):  # fmt: skip
        # Sorted by the keys (stable: same-second rows keep their order), so that the group
        # results come out in the sorted frame's order; then put back in the frame's.
        ordered = events[[*keys, "event_time", "amount"]].sort_values(
            [*keys, "event_time"], kind="stable"
        )
        counts = (
            ordered.set_index("event_time")
            .groupby(keys, sort=True)["amount"]
            .rolling(span, closed="both")
            .count()
        )
        if not np.array_equal(counts.index.get_level_values("event_time"),
                              ordered["event_time"].to_numpy()):  # fmt: skip
            raise RuntimeError(f"groupby-rolling by {keys} did not keep the sorted order")
        values = np.empty(len(events))
        values[ordered.index.to_numpy()] = counts.to_numpy() - minus
        rolled[name] = values

    # Merchant risk: labels per merchant and day, summed over the days [d - span - delay,
    # d - delay - 1] of each event's day d: rolling sums over a complete day grid, shifted.
    day = events["event_time"].dt.floor("D")
    daily = events.assign(day=day).groupby(["merchant", "day"])["label"].agg(["count", "sum"])
    merchants = daily.index.get_level_values("merchant").unique()
    days = pd.date_range(day.min() - pd.Timedelta(days=1), day.max())
    grid = daily.reindex(pd.MultiIndex.from_product([merchants, days], names=["merchant", "day"]),
                         fill_value=0)  # fmt: skip
    by_merchant = grid.groupby(level="merchant", sort=False)
    keys = pd.MultiIndex.from_arrays([events["merchant"], day])
    for label, span in (("1d", 1), ("7d", 7), ("30d", 30)):
        sums = by_merchant.rolling(span, min_periods=1).sum().droplevel(0)
        shifted = sums.groupby(level="merchant", sort=False).shift(delay + 1).fillna(0)
        at = shifted.reindex(keys)
        rolled[f"merchant_labelled_count_{label}"] = at["count"].to_numpy()
        rolled[f"merchant_positive_count_{label}"] = at["sum"].to_numpy()
    return rolled


def _align_peers(events: Any, rolled: dict[str, Any]) -> tuple[Any, float, int]:
    """pandas' rolling frame ends at the row itself; DuckDB's RANGE frame ends at the row's
    last peer (same key, same event_time). Give every peer its group's last value: only the
    rows that share a key and second with another change."""
    started = time.perf_counter()
    frame = events[["transaction_id"]].copy()
    for name, values in rolled.items():
        frame[name] = values
    peers = {("card_id",): [n for n in rolled if n in CARD_RANGE],
             ("card_id", "category"): ["card_category_count_30d"],
             ("card_id", "merchant"): ["card_merchant_visits_90d"]}  # fmt: skip
    same_second = 0
    for keys, names in peers.items():
        names = [n for n in names if n in frame]
        columns = [*keys, "event_time"]
        shared = events.duplicated(columns, keep=False).to_numpy()
        same_second = same_second or int(shared.sum())
        if names and shared.any():
            last = events.loc[shared, columns].join(frame.loc[shared, names])
            frame.loc[shared, names] = last.groupby(columns, sort=False)[names].transform("last")
    return frame, time.perf_counter() - started, same_second


def phase_pandas(folder: Path, limit: str) -> dict:
    """The 16 card aggregates alone, then every window aggregate of the full build, with
    pandas groupby-rolling; both checked against the DuckDB table on every row."""
    from mlplatform.settings import get_settings

    registry = _registry()
    events, duck, read_seconds = _read_events(folder, limit, ALL_WINDOW_FEATURES)
    # Timed: the computations only, each from the sorted frame to one array per aggregate in
    # the frame's row order (group results come out in it: the frame is sorted by card).
    started, cpu = time.perf_counter(), time.process_time()
    card16 = _card_rolling(events)
    seconds_16, cpu_16 = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    rolled = _all_rolling(events, registry.discretionary_categories,
                          get_settings().label_delay_days)  # fmt: skip
    seconds_all, cpu_all = time.perf_counter() - started, time.process_time() - cpu

    aligned_16, _, same_second = _align_peers(events, card16)
    aligned, peer_seconds, _ = _align_peers(events, rolled)
    raw = _disagreements(events[["transaction_id"]].assign(**rolled), duck, ALL_WINDOW_FEATURES)
    return {
        "rows": len(events),
        "feature_rows": len(duck),
        "read_seconds": read_seconds,
        "seconds": seconds_16,
        "cpu_seconds": cpu_16,
        "seconds_all": seconds_all,
        "cpu_seconds_all": cpu_all,
        "aggregates_all": len(rolled),
        "peer_seconds": peer_seconds,
        "same_second_rows": same_second,
        "disagree_rolling": raw,
        "disagree_16": _disagreements(aligned_16, duck, WINDOW_FEATURES),
        "disagree_all": _disagreements(aligned, duck, ALL_WINDOW_FEATURES),
    }


def _disagreements(pandas_values: Any, duck: Any, columns: tuple[str, ...]) -> dict[str, int]:
    """Rows per column where pandas and DuckDB differ, plus rows missing on either side.
    Counts, maxima and label counts exact; sums, means, history and the previous
    transaction's seconds and km within 1e-9 relative; std within 1e-6 relative or 1e-4
    absolute (E[x^2] - E[x]^2 in doubles loses digits when the std is small against the mean:
    one transaction gives ~1e-6 instead of 0)."""
    import numpy as np

    joined = pandas_values.merge(duck, on="transaction_id", how="outer", suffixes=("_pd", "_db"),
                                 indicator=True)  # fmt: skip
    out = {"unmatched_rows": int((joined["_merge"] != "both").sum())}
    joined = joined[joined["_merge"] == "both"]
    for name in columns:
        left = joined[f"{name}_pd"].to_numpy(dtype=float)
        right = joined[f"{name}_db"].to_numpy(dtype=float)
        if name in EXACT:
            same = (left == right) | (np.isnan(left) & np.isnan(right))
        else:
            rtol, atol = (1e-6, 1e-4) if name == "card_amount_std_30d" else (1e-9, 1e-6)
            same = np.isclose(left, right, rtol=rtol, atol=atol, equal_nan=True)
        out[name] = int((~same).sum())
    return out


PHASES = {
    "prepare": phase_prepare,
    "windows": phase_windows,
    "full": phase_full,
    "daily": phase_daily,
    "pandas": phase_pandas,
}


def _run_phase(name: str, folder: Path, limit: str, *args: object) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--folder", str(folder),
         "--memory-limit", limit, *(str(a) for a in args)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prepared(folder: Path, wanted: dict) -> bool:
    marker = folder / MARKER
    return (
        _warehouse(folder).exists() and marker.exists() and json.loads(marker.read_text()) == wanted
    )


def _prepare(folder: Path, args: argparse.Namespace) -> dict | None:
    """Build the warehouse unless one built with the same options is there (then None)."""
    wanted = {"cards": args.cards, "days": args.days, "seed": args.seed}
    if _prepared(folder, wanted):
        return None
    (folder / MARKER).unlink(missing_ok=True)
    for stale in (_warehouse(folder), folder / "warehouse.duckdb.wal"):
        stale.unlink(missing_ok=True)
    shutil.rmtree(folder / "landing", ignore_errors=True)
    prep = _run_phase("prepare", folder, args.memory_limit, "--cards", args.cards, "--days",
                      args.days, "--seed", args.seed)  # fmt: skip
    (folder / MARKER).write_text(json.dumps(wanted))
    return prep


def _mark(met: bool) -> str:
    return "met" if met else "NOT met"


def report(args: argparse.Namespace, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prep = _prepare(folder, args)
    # Order matters: the 16-aggregate build recreates the table with its columns only; the full
    # build recreates it with every feature; the daily build then replaces its last day; pandas
    # is checked against the full table.
    load_before = os.getloadavg()[0]
    windows = _run_phase("windows", folder, args.memory_limit)
    full = _run_phase("full", folder, args.memory_limit)
    daily = _run_phase("daily", folder, args.memory_limit)
    pdx = _run_phase("pandas", folder, args.memory_limit)
    load_after = os.getloadavg()[0]

    print(f"{date.today()}  {args.cards:,} cards x {args.days} days (seed {args.seed}), "
          f"{full['rows']:,} transactions, {full['days']}, DuckDB memory limit "
          f"{args.memory_limit}, warehouse {_warehouse(folder)}")  # fmt: skip
    print(f"load average (1 min) {load_before:.2f} before, {load_after:.2f} after, on "
          f"{os.cpu_count()} cores: DuckDB uses every core, pandas one, so other work on the "
          "machine slows DuckDB's seconds most; 'cpu s' (all threads) moves much less")  # fmt: skip
    if prep is None:
        print("warehouse reused (generation and ingestion skipped)")
    else:
        print(f"prepare (not in the figures): generation {prep['generated']:,} rows in "
              f"{prep['generate_seconds']:.1f} s; ingestion + curation of {prep['rows']:,} rows "
              f"in {prep['ingest_seconds']:.1f} s")  # fmt: skip
    rate_16 = pdx["rows"] / pdx["seconds"]
    rate_all = pdx["rows"] / pdx["seconds_all"]
    n_all = pdx["aggregates_all"]
    rows = [
        (f"pandas, {n_all} window aggregates", n_all, pdx["rows"], pdx["seconds_all"],
         pdx["cpu_seconds_all"], rate_all, pdx["peak_mb"]),
        ("DuckDB full feature build", full["features"], full["rows"], full["seconds"],
         full["cpu_seconds"], rate_all, full["peak_mb"]),
        ("DuckDB daily build, last day", daily["features"], daily["rows"], daily["seconds"],
         daily["cpu_seconds"], rate_all, daily["peak_mb"]),
        ("pandas, 16 card aggregates", 16, pdx["rows"], pdx["seconds"], pdx["cpu_seconds"],
         rate_16, pdx["peak_mb"]),
        ("DuckDB same 16 aggregates", windows["features"], windows["rows"], windows["seconds"],
         windows["cpu_seconds"], rate_16, windows["peak_mb"]),
    ]  # fmt: skip
    print(f"{'measurement':<34}{'features':>9}{'rows':>11}{'seconds':>9}{'cpu s':>7}"
          f"{'rows/s':>11}{'vs pandas':>11}{'peak MB':>9}")  # fmt: skip
    for name, features, n, seconds, cpu, reference, peak in rows:
        rate = n / seconds
        print(f"{name:<34}{features:>9}{n:>11,}{seconds:>9.2f}{cpu:>7.1f}{rate:>11,.0f}"
              f"{rate / reference:>10.2f}x{peak:>9,.0f}")  # fmt: skip
    print(
        f"(vs pandas: rows/s over the pandas row of the same aggregates: all {n_all} for the "
        "full and daily builds, the 16 for the 16. pandas: reading the rows took "
        f"{pdx['read_seconds']:.2f} s, aligning same-second peers {pdx['peer_seconds']:.2f} s; "
        f"neither is in its figure. Daily build: reads curated rows from {daily['read_from']})"
    )

    agree = pdx["feature_rows"] == pdx["rows"]
    for label, checked in (("16 card aggregates", pdx["disagree_16"]),
                           (f"all {n_all} window aggregates", pdx["disagree_all"])):  # fmt: skip
        ok = agree and not any(checked.values())
        print(
            f"agree, {label}: {'yes' if ok else 'no'} — pandas vs features.card_features on "
            f"all {pdx['rows']:,} rows (counts, maxima and label counts exact, the rest within "
            "1e-9 relative, std 1e-6 relative or 1e-4 absolute), after giving same-second "
            "peers their last peer's value"
        )
        for name in (n for n, bad in checked.items() if bad):
            print(f"  disagree after alignment: {name}: {checked[name]:,} rows")
    raw = pdx["disagree_rolling"]
    print(
        f"  {pdx['same_second_rows']:,} rows share their card and second with another; "
        f"pandas rolling alone differs on {max(raw.values()):,} rows (worst column)"
    )

    full_rate = full["rows"] / full["seconds"]
    speedup, speedup_16 = full_rate / rate_all, full_rate / rate_16
    print(f"targets (full feature build): >= {TARGET_SPEEDUP:.0f}x pandas ({n_all} aggregates): "
          f"{speedup:.2f}x {_mark(speedup >= TARGET_SPEEDUP)} (vs pandas' 16 alone: "
          f"{speedup_16:.2f}x); >= {TARGET_ROWS_PER_S:,} rows/s: {full_rate:,.0f} "
          f"{_mark(full_rate >= TARGET_ROWS_PER_S)}; peak < {TARGET_PEAK_MB:,} MB: "
          f"{full['peak_mb']:,.0f} MB {_mark(full['peak_mb'] < TARGET_PEAK_MB)}")  # fmt: skip


def main() -> None:
    from mlplatform.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="build (or reuse) the warehouse here")
    parser.add_argument(
        "--memory-limit",
        default=get_settings().duckdb_memory_limit,
        help="DuckDB memory limit (default: MLPLATFORM_DUCKDB_MEMORY_LIMIT)",
    )
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # child process: one phase, JSON on the last line
        extra = (args.cards, args.days, args.seed) if args.phase == "prepare" else ()
        result = PHASES[args.phase](args.folder, *extra, args.memory_limit)
        print(json.dumps({**result, "peak_mb": _peak_mb()}))
        return
    if args.workdir:
        report(args, args.workdir)
        return
    with tempfile.TemporaryDirectory() as scratch:
        report(args, Path(scratch))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()

"""Compute cost of a step (wall time, CPU time, peak memory) and ``monitoring.compute_cost``.

:class:`CostMeter` measures a block of code in this process. CPU time is user + system time
of the process (every thread: DuckDB's and LightGBM's workers included) plus that of the child
processes it waited for during the block (e.g. the champion's smoke test). Peak memory is the
process's peak resident set size during the block: on Linux the kernel's high-water mark
(``VmHWM``), reset when the block starts by writing ``5`` to ``/proc/self/clear_refs``; where
that is not permitted, a thread samples the resident size every 10 ms (a peak shorter than that
can be missed); without ``/proc`` it is unknown (None). The figure includes what the process
held before the block (the interpreter and its libraries). Steps of one process run one at a
time (Dagster's executors), so the process-wide figures belong to the step.

A finished step's figures are written as one small JSON file (:func:`write_cost_record`), which
needs no warehouse; :func:`load_compute_cost` loads the files into the table and removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import duckdb

from mlplatform.warehouse.connection import read_sql, transactions

TABLE = "monitoring.compute_cost"
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATM = Path("/proc/self/statm")
_SAMPLE_SECONDS = 0.01


@dataclass(frozen=True)
class ComputeCost:
    """What a block of code cost: seconds of wall time and of CPU time, peak MB (MiB) or None."""

    seconds: float
    cpu_seconds: float
    peak_mb: float | None


@dataclass(frozen=True)
class CostRecord:
    """One row of ``monitoring.compute_cost``: an asset's materialization in a run."""

    run_id: str
    asset: str
    partition: str | None  # the partition key, "first..last" for a range, None if unpartitioned
    seconds: float
    cpu_seconds: float
    peak_mb: float | None
    rows: int | None
    recorded_at: str  # ISO timestamp, UTC


class CostMeter:
    """``with CostMeter() as meter: ...``; then ``meter.cost`` is what the block cost."""

    def __init__(self) -> None:
        self.cost: ComputeCost | None = None
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> CostMeter:
        if not _reset_high_water_mark():
            self._sampler = _RssSampler() if _STATM.exists() else None
        self._wall = time.perf_counter()
        self._cpu = _cpu_seconds()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._wall
        cpu_seconds = _cpu_seconds() - self._cpu
        peak_kb = self._sampler.stop() if self._sampler else _status_kb("VmHWM")
        self.cost = ComputeCost(seconds, cpu_seconds, None if peak_kb is None else peak_kb / 1024)


def write_cost_record(folder: Path, record: CostRecord) -> Path:
    """Write ``record`` as ``folder/<key hash>.json``, atomically (a retried step of the same
    run, asset and partition replaces its record); the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    key = "\0".join((record.run_id, record.asset, record.partition or ""))
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(asdict(record)), encoding="utf-8")
    partial.replace(path)
    return path


def load_compute_cost(conn: duckdb.DuckDBPyConnection, folder: Path) -> int:
    """Load the records in ``folder`` into ``monitoring.compute_cost`` (replacing rows of the
    same run, asset and partition: loading twice changes nothing), then remove their files;
    the number of records loaded."""
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        return 0
    for attempt in transactions(conn):
        with attempt:
            conn.execute(read_sql("stage_compute_cost"), [[str(f) for f in files]])
            conn.execute(
                f"DELETE FROM {TABLE} AS c USING cost_records AS r WHERE c.run_id = r.run_id "
                "AND c.asset = r.asset AND c.partition IS NOT DISTINCT FROM r.partition"
            )
            conn.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM cost_records")
            conn.execute("DROP TABLE cost_records")
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


def cost_record(
    cost: ComputeCost, *, run_id: str, asset: str, partition: str | None, rows: int | None
) -> CostRecord:
    """The record of a materialization that cost ``cost``, stamped now."""
    return CostRecord(
        run_id=run_id,
        asset=asset,
        partition=partition,
        seconds=cost.seconds,
        cpu_seconds=cost.cpu_seconds,
        peak_mb=cost.peak_mb,
        rows=rows,
        recorded_at=datetime.now(UTC).replace(tzinfo=None).isoformat(),
    )


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak resident size of this process; False where not permitted."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (e.g. VmHWM), None without it."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


class _RssSampler:
    """A daemon thread keeping the largest resident size seen, every 10 ms."""

    def __init__(self) -> None:
        self._page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
        self._peak_kb = self._rss_kb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _rss_kb(self) -> int:
        return int(_STATM.read_text().split()[1]) * self._page_kb

    def _run(self) -> None:
        while not self._done.wait(_SAMPLE_SECONDS):
            self._peak_kb = max(self._peak_kb, self._rss_kb())

    @property
    def peak_kb(self) -> int:
        """The largest resident size seen so far, in kB."""
        return self._peak_kb

    def stop(self) -> int:
        """Stop sampling; the peak resident size seen, in kB."""
        self._done.set()
        self._thread.join()
        return max(self._peak_kb, self._rss_kb())

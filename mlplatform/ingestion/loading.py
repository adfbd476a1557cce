"""Validated, idempotent loading of daily landing files into ``raw.transactions``.

A file that is not a CSV of the contract is rejected whole (:class:`FileRejected`); rows that
break a rule go to ``raw.quarantine`` with file, line, rule and their PII masked; the rest load.
Loading a partition replaces exactly that partition, in one transaction; a range of partitions
is loaded in batches, each in one transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd

from mlplatform.contract import Contract
from mlplatform.ingestion.files import FileRejected
from mlplatform.ingestion.log import FileOutcome, log_frame, log_rejection
from mlplatform.ingestion.quarantine import quarantine_frame
from mlplatform.ingestion.row_rules import (
    generated_ids_sql,
    pseudonyms_sql,
    typed_columns,
    violation,
)
from mlplatform.ingestion.staging import (
    STAGING,
    batch_select,
    drop_staging,
    prepare_rows,
    stage_batch,
)
from mlplatform.warehouse.connection import insertion_order, read_sql, transactions
from mlplatform.warehouse.pii import hmac_pads

# A range is loaded in batches of consecutive partitions of about this many bytes of landing
# files, each batch in one transaction: the fixed cost of a load is paid once per batch, and
# the staged text of a batch (in memory, spilled beyond DuckDB's memory limit) stays bounded.
_BATCH_BYTES = 256 << 20
# ... and of at most this many partitions: each staged file holds about half a MB of DuckDB's
# memory whatever its size (its tables, line map, rejects), so 2,000 days of a sparse history
# in one batch ran out of a 1 GB memory limit.
_BATCH_DAYS = 250


@dataclass(frozen=True)
class IngestionResult:
    """A loaded partition: per-file outcomes, quarantine counts by rule and a preview."""

    partition_date: date
    files: tuple[FileOutcome, ...]
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)


def ingest_partition(
    conn: duckdb.DuckDBPyConnection,
    *,
    files: list[Path],
    partition_date: date,
    contract: Contract,
    pii_key: bytes,
    max_amount: float,
    max_line_bytes: int,
    run_id: str | None = None,
) -> IngestionResult:
    """Load a partition's landing files into ``raw.transactions``, replacing the partition.

    Raises FileRejected (after logging it in ``raw.ingestion_log``) when a file is not a CSV of
    the contract; the partition's previous rows then stay as they were. Whatever happens, the
    connection keeps no staging table (they hold clear card numbers and names).
    """
    loaded, rejected = ingest_partitions(
        conn,
        {partition_date: files},
        contract=contract,
        pii_key=pii_key,
        max_amount=max_amount,
        max_line_bytes=max_line_bytes,
        run_id=run_id,
    )
    if rejected:
        raise rejected[partition_date]
    return loaded[partition_date]


def ingest_partitions(
    conn: duckdb.DuckDBPyConnection,
    partitions: Mapping[date, Sequence[Path]],
    *,
    contract: Contract,
    pii_key: bytes,
    max_amount: float,
    max_line_bytes: int,
    run_id: str | None = None,
) -> tuple[dict[date, IngestionResult], dict[date, FileRejected]]:
    """Load a range of partitions, each replaced whole, with the outcome of loading them in
    date order one after another (an id loaded for an earlier day is refused on a later one).

    Consecutive partitions are loaded in batches of about ``_BATCH_BYTES`` of files (at most
    ``_BATCH_DAYS`` partitions), each in one transaction. Returns the loaded partitions and,
    for each partition with a file that is not a CSV of the contract, the rejection (logged
    in ``raw.ingestion_log``; that partition stays as it was, the others load).
    """
    days = sorted(partitions)
    for day in days:
        if not partitions[day]:
            raise FileNotFoundError(f"no landing file for partition {day}")
    loaded: dict[date, IngestionResult] = {}
    rejected: dict[date, FileRejected] = {}
    sizes = {day: sum(path.stat().st_size for path in partitions[day]) for day in days}
    for batch in consecutive_batches(sizes, _BATCH_BYTES, max_days=_BATCH_DAYS):
        results, rejections = _ingest_batch(
            conn,
            {day: list(partitions[day]) for day in batch},
            contract=contract,
            pii_key=pii_key,
            max_amount=max_amount,
            max_line_bytes=max_line_bytes,
            run_id=run_id,
        )
        loaded.update(results)
        rejected.update(rejections)
    return loaded, rejected


def consecutive_batches(
    sizes: Mapping[date, int], limit: int, *, max_days: int | None = None
) -> Iterator[list[date]]:
    """The partitions (date order) in consecutive batches, each closed once its sizes sum to
    ``limit`` or more, or it holds ``max_days`` partitions: a batch holds at least one."""
    batch: list[date] = []
    total = 0
    for day in sorted(sizes):
        batch.append(day)
        total += sizes[day]
        if total >= limit or len(batch) == max_days:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def _ingest_batch(
    conn: duckdb.DuckDBPyConnection,
    partitions: dict[date, list[Path]],
    *,
    contract: Contract,
    pii_key: bytes,
    max_amount: float,
    max_line_bytes: int,
    run_id: str | None,
) -> tuple[dict[date, IngestionResult], dict[date, FileRejected]]:
    """Load consecutive partitions in one transaction (see :func:`ingest_partitions`)."""
    started = datetime.now()
    n_files = sum(len(files) for files in partitions.values())
    conn.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {STAGING}")
    try:
        staged, rejected = stage_batch(conn, partitions, contract, max_line_bytes)
        for partition_date, rejection in rejected.items():
            log_rejection(conn, rejection, partition_date, started, run_id)
        if not staged:
            return {}, rejected
        days = sorted({s.partition_date for s in staged})
        for s in staged:
            prepare_rows(conn, s)
        conn.execute(
            "CREATE OR REPLACE TEMP VIEW batch AS "
            + " UNION ALL ".join(batch_select(s, contract) for s in staged)
        )
        # `checked` is a union of one small table per file: in order, DuckDB would type it on
        # one thread. Nothing reads it by position (staging, whose rowids are line order, is
        # done).
        with insertion_order(conn, preserve=False):
            conn.execute(
                read_sql("check_rows").format(
                    typed_columns=typed_columns(contract),
                    violation=violation(contract, max_amount),
                )
            )
        conn.execute(pseudonyms_sql(), hmac_pads(pii_key))
        if contract.generated_id:
            conn.execute(generated_ids_sql())
        conn.execute(read_sql("flag_duplicate_ids"), {"days": days})
        now = datetime.now()
        quarantine = quarantine_frame(conn, staged, contract, pii_key, now)
        loaded_counts = dict(
            conn.execute(
                "SELECT file_id, count(*) FILTER (WHERE violation IS NULL) FROM checked GROUP BY 1"
            ).fetchall()
        )
        quarantined_counts = Counter(quarantine["file_id"])
        outcomes: dict[date, list[FileOutcome]] = {day: [] for day in days}
        for s in staged:
            outcomes[s.partition_date].append(
                FileOutcome(
                    file=s.path.name,
                    sha256=s.inspection.sha256,
                    size_bytes=s.inspection.size_bytes,
                    rows_read=s.rows + len(s.rejects),
                    rows_loaded=int(loaded_counts.get(s.file_id, 0)),
                    rows_quarantined=quarantined_counts[s.file_id],
                    status="loaded",
                )
            )
        finished = datetime.now()
        log = log_frame(outcomes, started, finished, run_id)
        conn.register("quarantine_frame", quarantine.drop(columns="file_id"))
        conn.register("log_frame", log)
        params = {"days": days}
        try:
            for attempt in transactions(conn):
                with attempt:
                    conn.execute(
                        "DELETE FROM raw.transactions WHERE list_contains($days, partition_date)",
                        params,
                    )
                    conn.execute(
                        "DELETE FROM raw.quarantine WHERE list_contains($days, partition_date)",
                        params,
                    )
                    conn.execute(read_sql("insert_raw_transactions"), {"ingested_at": now})
                    conn.execute("INSERT INTO raw.quarantine SELECT * FROM quarantine_frame")
                    conn.execute("INSERT INTO raw.ingestion_log SELECT * FROM log_frame")
        finally:
            conn.unregister("quarantine_frame")
            conn.unregister("log_frame")
        reasons: dict[date, Counter[str]] = {day: Counter() for day in days}
        for day, reason in zip(quarantine["partition_date"], quarantine["reason"], strict=True):
            reasons[pd.Timestamp(day).date()][reason] += 1
        return {
            day: IngestionResult(
                partition_date=day,
                files=tuple(outcomes[day]),
                quarantine_reasons=dict(reasons[day]),
            )
            for day in days
        }, rejected
    finally:
        drop_staging(conn, range(n_files))
        conn.execute(f"DETACH DATABASE IF EXISTS {STAGING}")

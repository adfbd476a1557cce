"""Ingestion: landing files into the raw and curated tables (no Dagster), one job a module.

- :mod:`~mlplatform.ingestion.files`: a partition's landing files, their date, bytes and header
- :mod:`~mlplatform.ingestion.staging`: files parsed by DuckDB's CSV reader, canonical columns
- :mod:`~mlplatform.ingestion.line_numbers`: the physical line of every record
- :mod:`~mlplatform.ingestion.row_rules`: typing and the landing rules (shared with serving)
- :mod:`~mlplatform.ingestion.duckdb_functions`: DuckDB's functions of those rules and of
  curation, in Python (for serving's rows)
- :mod:`~mlplatform.ingestion.quarantine`: rule breakers with their personal data masked
- :mod:`~mlplatform.ingestion.loading`: partitions replaced whole, in batched transactions
- :mod:`~mlplatform.ingestion.log`: ``raw.ingestion_log``, and when a day's file is due
- :mod:`~mlplatform.ingestion.history_import`: a history extract split into daily files
- :mod:`~mlplatform.ingestion.curation`: ``curated.transactions`` and the card reference
- :mod:`~mlplatform.ingestion.quality`: Great Expectations rules of the loaded transactions
- :mod:`~mlplatform.ingestion.contract_check`: a dry run of a mapping on a sample

The SQL these modules run lives in ``mlplatform/warehouse/sql/`` (``read_sql``).
"""

from mlplatform.ingestion.contract_check import ContractCheck, check_sample
from mlplatform.ingestion.curation import (
    CurationResult,
    ReferenceResult,
    curate_partition,
    curate_partitions,
    expected_curated_rows,
    load_card_reference,
)
from mlplatform.ingestion.files import (
    FileInspection,
    FileRejected,
    inspect_file,
    landing_files,
    landing_files_by_day,
    partition_date_of,
)
from mlplatform.ingestion.history_import import ImportResult, RejectedRow, import_history
from mlplatform.ingestion.loading import IngestionResult, ingest_partition, ingest_partitions
from mlplatform.ingestion.log import FileOutcome, landing_due_at, landing_due_day, loaded_files
from mlplatform.ingestion.quality import (
    ExpectationOutcome,
    QualityReport,
    Rule,
    transaction_rules,
    validate_days,
    validate_frame,
)

__all__ = [
    "ContractCheck",
    "CurationResult",
    "ExpectationOutcome",
    "FileInspection",
    "FileOutcome",
    "FileRejected",
    "ImportResult",
    "IngestionResult",
    "QualityReport",
    "ReferenceResult",
    "RejectedRow",
    "Rule",
    "check_sample",
    "curate_partition",
    "curate_partitions",
    "expected_curated_rows",
    "import_history",
    "ingest_partition",
    "ingest_partitions",
    "inspect_file",
    "landing_due_at",
    "landing_due_day",
    "landing_files",
    "landing_files_by_day",
    "load_card_reference",
    "loaded_files",
    "partition_date_of",
    "transaction_rules",
    "validate_days",
    "validate_frame",
]

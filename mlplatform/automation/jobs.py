"""Jobs: what runs together."""

import dagster as dg

from mlplatform.assets.curation import curated_transactions
from mlplatform.assets.ingestion import card_reference, raw_transactions
from mlplatform.assets.partitions import daily_partitions

daily_ingestion_job = dg.define_asset_job(
    "daily_ingestion",
    selection=dg.AssetSelection.assets(raw_transactions, curated_transactions),
    partitions_def=daily_partitions,
    description="Validate one day's landing file(s) into raw, then curate them.",
)
reference_data_job = dg.define_asset_job(
    "reference_data",
    selection=dg.AssetSelection.assets(card_reference),
    description="Reload the card reference data.",
)

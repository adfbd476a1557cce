"""Column lists of the warehouse tables that checks and previews rely on (match create_schema)."""

RAW_TRANSACTION_COLUMNS = (
    "transaction_id", "event_time", "partition_date", "card_id", "merchant", "category", "amount",
    "gender", "city", "state", "zip", "city_pop", "job", "birth_year", "home_lat", "home_long",
    "merchant_lat", "merchant_long", "label", "source_file", "source_line", "ingested_at",
)  # fmt: skip
CURATED_TRANSACTION_COLUMNS = (
    "transaction_id", "event_time", "partition_date", "card_id", "merchant", "category", "amount",
    "gender", "city", "state", "zip", "city_pop", "job", "birth_year", "home_lat", "home_long",
    "merchant_lat", "merchant_long", "label", "credit_limit", "income_band", "hour", "weekday",
    "is_weekend", "age", "home_merchant_km", "source_file", "source_line",
)  # fmt: skip

"""DuckDB access and the SQL of ingestion, curation, features and target (no Dagster)."""

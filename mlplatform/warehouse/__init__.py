"""DuckDB access: the connection, the tables, the SQL files (of ingestion, curation, features
and targets) and the targets (no Dagster)."""

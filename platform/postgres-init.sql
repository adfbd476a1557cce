-- platform/compose.yaml: the Postgres container creates the `dagster` database (POSTGRES_DB);
-- MLflow's backend store and the warehouse's DuckLake catalog get a database each (Dagster and
-- MLflow both have a table named `runs`).
CREATE DATABASE mlflow OWNER mlplatform;
-- The DuckLake warehouse's catalog (MLPLATFORM_WAREHOUSE); its tables are Parquet files.
CREATE DATABASE lake OWNER mlplatform;

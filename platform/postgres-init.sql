-- platform/compose.yaml: the Postgres container creates the `dagster` database (POSTGRES_DB);
-- MLflow's backend store gets a database of its own (both have a table named `runs`).
CREATE DATABASE mlflow OWNER mlplatform;

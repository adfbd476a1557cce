-- The compute-cost records in the JSON files $1 (one object each, monitoring/compute_cost.py)
-- as the temporary table cost_records, one row per run, asset and partition.
CREATE OR REPLACE TEMP TABLE cost_records AS
SELECT run_id, asset, partition, seconds, cpu_seconds, peak_mb, rows, recorded_at
FROM read_json($1, format = 'unstructured', columns = {
    run_id: 'VARCHAR', asset: 'VARCHAR', partition: 'VARCHAR', seconds: 'DOUBLE',
    cpu_seconds: 'DOUBLE', peak_mb: 'DOUBLE', rows: 'BIGINT', recorded_at: 'TIMESTAMP'
})
QUALIFY row_number() OVER (PARTITION BY run_id, asset, partition ORDER BY recorded_at DESC) = 1

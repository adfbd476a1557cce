-- monitoring.serving_log rows of the day $day from its prediction-log files ($paths: JSON Lines
-- written by `mlplatform serve`, a file per process, one object per scored transaction per
-- model). The `event`
-- object (the request's feature inputs) is not read; lines of another day are not loaded.
INSERT INTO monitoring.serving_log
SELECT request_id,
       timezone('UTC', logged_at) AS logged_at,
       event_time,
       partition_date,
       card_id,
       transaction_id,
       model_name,
       model_version,
       role,
       returned,
       score,
       decision,
       validation_ms,
       features_ms,
       model_ms
FROM read_json(
    $paths,
    format = 'newline_delimited',
    ignore_errors = true,  -- a line a killed process cut short: counted by the loader
    columns = {
        request_id: 'VARCHAR', logged_at: 'TIMESTAMPTZ', event_time: 'TIMESTAMP',
        partition_date: 'DATE', card_id: 'VARCHAR', transaction_id: 'VARCHAR',
        model_name: 'VARCHAR', model_version: 'VARCHAR', role: 'VARCHAR', returned: 'BOOLEAN',
        score: 'DOUBLE', decision: 'BOOLEAN', validation_ms: 'DOUBLE', features_ms: 'DOUBLE',
        model_ms: 'DOUBLE'
    }
)
WHERE partition_date = $day

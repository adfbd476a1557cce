-- Types every staged landing row and names the first rule it breaks (NULL: a good row).
-- The typed columns and the rule CASE are generated from the contract (ingestion.py).
CREATE OR REPLACE TEMP TABLE checked AS
WITH typed AS (
    SELECT
        b.*,
        {typed_columns}
    FROM batch AS b
),
ruled AS (
    SELECT *, {violation} AS violation FROM typed
),
-- ids seen more than once among rule-abiding rows: only those need ranking
repeated AS (
    SELECT transaction_id FROM ruled WHERE violation IS NULL
    GROUP BY transaction_id HAVING count(*) > 1
),
firsts AS (
    SELECT transaction_id, arg_min(file || ':' || line, (file_id, row_idx)) AS first_seen,
           min((file_id, row_idx)) AS first_position
    FROM ruled SEMI JOIN repeated USING (transaction_id)
    WHERE violation IS NULL
    GROUP BY transaction_id
)
SELECT
    -- the typed values replace their text; names and street are never needed again
    r.* EXCLUDE (violation, event_time, amount, city_pop, home_lat, home_long, merchant_lat,
                 merchant_long, label, birth_date, first_name, last_name, street),
    CASE
        WHEN r.violation IS NOT NULL THEN r.violation
        WHEN f.first_position IS NOT NULL AND (r.file_id, r.row_idx) <> f.first_position THEN {{
            'rule': 'duplicate_id', 'column': 'transaction_id',
            'detail': 'first seen at ' || f.first_seen
        }}
        WHEN r.transaction_id IN (
            SELECT transaction_id FROM raw.transactions WHERE partition_date <> $partition_date
        ) THEN {{
            'rule': 'id_loaded_for_other_day', 'column': 'transaction_id',
            'detail': 'already in raw.transactions for another partition'
        }}
    END AS violation
FROM ruled AS r
LEFT JOIN firsts AS f USING (transaction_id);

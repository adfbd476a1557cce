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
ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY transaction_id, violation IS NULL ORDER BY file_id, row_idx
        ) AS id_rank,
        first_value(file || ':' || line) OVER (
            PARTITION BY transaction_id, violation IS NULL ORDER BY file_id, row_idx
        ) AS first_seen
    FROM ruled
)
SELECT
    * EXCLUDE (violation, id_rank, first_seen),
    CASE
        WHEN violation IS NOT NULL THEN violation
        WHEN id_rank > 1 THEN {{
            'rule': 'duplicate_id', 'column': 'transaction_id',
            'detail': 'first seen at ' || first_seen
        }}
        WHEN transaction_id IN (
            SELECT transaction_id FROM raw.transactions WHERE partition_date <> $partition_date
        ) THEN {{
            'rule': 'id_loaded_for_other_day', 'column': 'transaction_id',
            'detail': 'already in raw.transactions for another partition'
        }}
    END AS violation
FROM ranked;

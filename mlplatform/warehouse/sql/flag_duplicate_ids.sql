-- Among rows that broke no rule, every copy of a transaction id after its first in the same
-- partition (in file and line order) is a duplicate. Then ids loaded for another partition
-- are refused, with the outcome of loading the batch's partitions ($days) one after another
-- in date order: a row is refused when raw.transactions holds its id for a partition not
-- replaced before its own (outside the batch, or later in it), or when the row of an earlier
-- partition of the batch with that id loads. Both touch only the few rows concerned.
UPDATE checked AS c
SET violation = {
    'rule': 'duplicate_id', 'column': 'transaction_id', 'detail': 'first seen at ' || f.first_seen
}
FROM (
    SELECT partition_date, transaction_id,
           arg_min(file || ':' || line, (file_id, row_idx)) AS first_seen,
           min((file_id, row_idx)) AS first_position
    FROM checked
    WHERE violation IS NULL AND (partition_date, transaction_id) IN (
        SELECT (partition_date, transaction_id) FROM checked WHERE violation IS NULL
        GROUP BY ALL HAVING count(*) > 1
    )
    GROUP BY ALL
) AS f
WHERE c.transaction_id = f.transaction_id
  AND c.partition_date = f.partition_date
  AND c.violation IS NULL
  AND (c.file_id, c.row_idx) <> f.first_position;

UPDATE checked AS c
SET violation = {
    'rule': 'id_loaded_for_other_day', 'column': 'transaction_id',
    'detail': 'already in raw.transactions for another partition'
}
FROM (
    WITH previous AS (  -- ids of the batch already in raw, and their partitions
        SELECT r.transaction_id, r.partition_date
        FROM raw.transactions AS r
        SEMI JOIN checked AS c ON c.transaction_id = r.transaction_id AND c.violation IS NULL
    ),
    candidates AS (  -- good rows whose id is in raw or in another partition of the batch
        SELECT c.partition_date, c.transaction_id,
               coalesce(bool_or(
                   NOT list_contains($days, p.partition_date)
                   OR p.partition_date > c.partition_date
               ), false) AS held_elsewhere
        FROM checked AS c
        LEFT JOIN previous AS p ON p.transaction_id = c.transaction_id
        WHERE c.violation IS NULL AND (
            c.transaction_id IN (SELECT transaction_id FROM previous)
            OR c.transaction_id IN (
                SELECT transaction_id FROM checked WHERE violation IS NULL
                GROUP BY transaction_id HAVING count(*) > 1
            )
        )
        GROUP BY ALL
    )
    SELECT partition_date, transaction_id FROM (
        SELECT *, bool_or(NOT held_elsewhere) OVER (
            PARTITION BY transaction_id ORDER BY partition_date
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS loaded_earlier
        FROM candidates
    )
    WHERE held_elsewhere OR coalesce(loaded_earlier, false)
) AS f
WHERE c.transaction_id = f.transaction_id
  AND c.partition_date = f.partition_date
  AND c.violation IS NULL;

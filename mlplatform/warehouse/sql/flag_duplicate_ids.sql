-- Among rows that broke no rule, every copy of a transaction id after its first in the same
-- partition (in file and line order) is a duplicate. Then ids loaded for another partition
-- are refused, with the outcome of loading the batch's partitions ($days) one after another
-- in date order: a row is refused when raw.transactions holds its id for a partition not
-- replaced before its own (outside the batch, or later in it), or when the row of an earlier
-- partition of the batch with that id loads. Both touch only the few rows concerned.
CREATE OR REPLACE TEMP TABLE repeated_ids AS  -- ids on more than one good row of the batch
SELECT transaction_id FROM checked WHERE violation IS NULL GROUP BY ALL HAVING count(*) > 1;

UPDATE checked AS c
SET violation = {
    'rule': 'duplicate_id', 'column': 'transaction_id', 'detail': 'first seen at ' || f.first_seen
}
FROM (
    SELECT partition_date, transaction_id,
           arg_min(file || ':' || line, (file_id, row_idx)) AS first_seen,
           min((file_id, row_idx)) AS first_position
    FROM checked
    WHERE violation IS NULL AND transaction_id IN (SELECT transaction_id FROM repeated_ids)
    GROUP BY ALL
    HAVING count(*) > 1
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
    WITH elsewhere AS (  -- good rows whose id raw holds for another partition, and that one
        SELECT c.partition_date, c.transaction_id, r.partition_date AS held_for
        FROM checked AS c
        JOIN raw.transactions AS r ON r.transaction_id = c.transaction_id
        WHERE c.violation IS NULL AND r.partition_date <> c.partition_date
    ),
    candidates AS (  -- such rows, and rows whose id is on another partition of the batch
        SELECT c.partition_date, c.transaction_id,
               coalesce(bool_or(
                   NOT list_contains($days, e.held_for) OR e.held_for > c.partition_date
               ), false) AS held_elsewhere
        FROM checked AS c
        LEFT JOIN elsewhere AS e
            ON e.partition_date = c.partition_date AND e.transaction_id = c.transaction_id
        WHERE c.violation IS NULL AND (
            c.transaction_id IN (SELECT transaction_id FROM elsewhere)
            OR c.transaction_id IN (SELECT transaction_id FROM repeated_ids)
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

-- Among rows that broke no rule, every copy of a transaction id after its first (in file and
-- line order) is a duplicate; ids loaded for another partition are refused. Both touch only
-- the few rows concerned.
UPDATE checked AS c
SET violation = {
    'rule': 'duplicate_id', 'column': 'transaction_id', 'detail': 'first seen at ' || f.first_seen
}
FROM (
    SELECT transaction_id, arg_min(file || ':' || line, (file_id, row_idx)) AS first_seen,
           min((file_id, row_idx)) AS first_position
    FROM checked
    WHERE violation IS NULL AND transaction_id IN (
        SELECT transaction_id FROM checked WHERE violation IS NULL
        GROUP BY transaction_id HAVING count(*) > 1
    )
    GROUP BY transaction_id
) AS f
WHERE c.transaction_id = f.transaction_id
  AND c.violation IS NULL
  AND (c.file_id, c.row_idx) <> f.first_position;

UPDATE checked
SET violation = {
    'rule': 'id_loaded_for_other_day', 'column': 'transaction_id',
    'detail': 'already in raw.transactions for another partition'
}
WHERE violation IS NULL
  AND transaction_id IN (
      SELECT r.transaction_id FROM raw.transactions AS r
      SEMI JOIN checked AS c ON c.transaction_id = r.transaction_id
      WHERE r.partition_date <> $partition_date
  );

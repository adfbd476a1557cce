-- Every scored row of the days $start..$end (ml.predictions) with its target from {targets}:
-- `matured` is false and `target` NULL while the label has not matured, and for a row that
-- ml.targets does not have yet (it is rebuilt by the asset `target_labels`). The card comes as
-- its 64-bit hash: card precision@k groups by it, and numbers leave DuckDB faster than strings.
SELECT p.partition_date,
       hash(p.card_id) AS card,
       p.score,
       coalesce(t.matured, false) AS matured,
       t.target
FROM ml.predictions AS p
LEFT JOIN {targets} AS t USING (transaction_id)
WHERE p.partition_date BETWEEN $start AND $end

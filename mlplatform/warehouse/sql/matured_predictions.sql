-- Every scored row of the days $start..$end (ml.predictions) with its target from {targets}:
-- `matured` is false and `target` NULL while the label has not matured, and for a row that
-- ml.targets does not have yet (it is rebuilt by the asset `target_labels`).
SELECT p.partition_date,
       p.card_id,
       p.score,
       p.model_version,
       p.dataset_version,
       coalesce(t.matured, false) AS matured,
       t.target
FROM ml.predictions AS p
LEFT JOIN {targets} AS t USING (transaction_id)
WHERE p.partition_date BETWEEN $start AND $end

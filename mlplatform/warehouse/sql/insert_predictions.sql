-- ml.predictions rows of the days $start..$end: the keys of each feature row joined (by its
-- rowid, `row_key`) to its score in `scored` (registered by serving/batch.py), with the
-- decision at the model's threshold.
INSERT INTO ml.predictions
SELECT f.transaction_id,
       f.card_id,
       f.partition_date,
       s.score,
       s.score >= $threshold AS decision,
       $model_name AS model_name,
       $model_version AS model_version,
       $dataset_version AS dataset_version,
       $scored_at AS scored_at
FROM features.card_features AS f
JOIN scored AS s ON f.rowid = s.row_key
WHERE f.partition_date BETWEEN $start AND $end

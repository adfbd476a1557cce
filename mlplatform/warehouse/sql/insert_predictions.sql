-- ml.predictions rows of one chunk of scored feature rows: their keys and score in `scored`
-- (an Arrow table registered by serving/batch.py), with the decision at the model's threshold.
INSERT INTO ml.predictions
SELECT transaction_id,
       card_id,
       partition_date,
       score,
       score >= $threshold AS decision,
       $model_name AS model_name,
       $model_version AS model_version,
       $dataset_version AS dataset_version,
       $scored_at AS scored_at
FROM scored

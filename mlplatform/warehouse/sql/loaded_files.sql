-- The files of each partition's current load: the rows of its latest loaded batch. A rejected
-- file leaves its partition as it was, so rejections do not replace what is loaded.
SELECT partition_date, file, sha256
FROM raw.ingestion_log
WHERE status = 'loaded'
QUALIFY finished_at = max(finished_at) OVER (PARTITION BY partition_date)

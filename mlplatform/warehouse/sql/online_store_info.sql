-- The online store's one-row online.store_info: when it was written, what it holds, from where.
CREATE TABLE store.online.store_info AS
SELECT $written_at::TIMESTAMP AS written_at,
       min(event_time) AS first_event_time,
       max(event_time) AS last_event_time,
       count(*) AS events,
       count(DISTINCT card_id) AS cards,
       $lookback_days::INTEGER AS lookback_days,
       $source_warehouse::VARCHAR AS source_warehouse
FROM store.curated.transactions

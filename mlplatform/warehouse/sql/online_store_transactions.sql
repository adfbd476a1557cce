-- The online store's curated.transactions: every curated event since $since (the lookback
-- of the online features before the last event), sorted by card and time so that a card's
-- history sits in few row groups. Same columns and types as the warehouse's table.
CREATE TABLE store.curated.transactions AS
SELECT *
FROM curated.transactions
WHERE event_time >= $since
ORDER BY card_id, event_time, transaction_id

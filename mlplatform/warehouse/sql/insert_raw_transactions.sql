-- The batch's good rows, PII pseudonymised (card) or reduced (birth year), into raw.
INSERT INTO raw.transactions
SELECT
    c.transaction_id,
    c.event_time_ts,
    c.partition_date,
    p.card_id,
    c.merchant,
    c.category,
    c.amount_num,
    c.gender,
    c.city,
    c.state,
    c.zip,
    c.city_pop_num,
    c.job,
    c.birth_year_num,
    c.home_lat_num,
    c.home_long_num,
    c.merchant_lat_num,
    c.merchant_long_num,
    c.label_num,
    c.file,
    c.line,
    $ingested_at
FROM checked AS c
JOIN pseudonyms AS p ON p.card_number = c.card_number
WHERE c.violation IS NULL;


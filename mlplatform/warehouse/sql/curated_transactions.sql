-- Partitions ($days, from $first to $last) of curated.transactions from raw: the same event
-- submitted twice (same card, time, amount and merchant under another id) kept once; text,
-- categories and coordinates normalised; reference data joined; calendar, age and distance
-- derived. Raw text is already trimmed at ingestion; regexes run only on values that need them.
INSERT INTO curated.transactions
WITH repeated AS (  -- hashes of events seen more than once: an integer hash aggregate, no sort
    SELECT hash(partition_date, card_id, event_time, amount, merchant) AS event_hash
    FROM raw.transactions
    WHERE partition_date BETWEEN $first AND $last AND list_contains($days, partition_date)
    GROUP BY ALL
    HAVING count(*) > 1
),
later_copies AS (  -- of events with such a hash, every copy after the first (file and line
    -- order), copies told apart by their values: a hash collision merges nothing
    SELECT source_file, source_line FROM (
        SELECT t.source_file, t.source_line, row_number() OVER (
            PARTITION BY t.partition_date, t.card_id, t.event_time, t.amount,
                coalesce(t.merchant, '')
            ORDER BY t.source_file, t.source_line
        ) AS copy_number
        FROM raw.transactions AS t
        WHERE t.partition_date BETWEEN $first AND $last
          AND list_contains($days, t.partition_date)
          AND hash(t.partition_date, t.card_id, t.event_time, t.amount, t.merchant)
              IN (SELECT event_hash FROM repeated)
    )
    WHERE copy_number > 1
),
deduplicated AS (
    SELECT * FROM raw.transactions AS t
    ANTI JOIN later_copies AS l
        ON t.source_file = l.source_file AND t.source_line = l.source_line
    WHERE t.partition_date BETWEEN $first AND $last AND list_contains($days, t.partition_date)
)
SELECT
    d.transaction_id,
    d.event_time,
    d.partition_date,
    d.card_id,
    CASE WHEN regexp_matches(d.merchant, '\s\s|[\t\n\r]')
        THEN regexp_replace(d.merchant, '\s+', ' ', 'g') ELSE d.merchant END AS merchant,
    CASE WHEN regexp_matches(d.category, '[^a-z_]')
        THEN regexp_replace(lower(d.category), '[\s-]+', '_', 'g') ELSE d.category END
        AS category,
    round(d.amount, 2) AS amount,
    CASE upper(d.gender)
        WHEN 'F' THEN 'F' WHEN 'FEMALE' THEN 'F' WHEN 'M' THEN 'M' WHEN 'MALE' THEN 'M'
    END AS gender,
    CASE WHEN regexp_matches(d.city, '\s\s|[\t\n\r]')
        THEN regexp_replace(d.city, '\s+', ' ', 'g') ELSE d.city END AS city,
    upper(d.state) AS state,
    d.zip,
    d.city_pop,
    lower(d.job) AS job,
    d.birth_year,
    round(d.home_lat, 6) AS home_lat,
    round(d.home_long, 6) AS home_long,
    round(d.merchant_lat, 6) AS merchant_lat,
    round(d.merchant_long, 6) AS merchant_long,
    d.label,
    r.credit_limit,
    r.income_band,
    hour(d.event_time) AS hour,
    isodow(d.event_time) AS weekday,
    isodow(d.event_time) >= 6 AS is_weekend,
    year(d.event_time) - d.birth_year AS age,
    haversine_km(d.home_lat, d.home_long, d.merchant_lat, d.merchant_long) AS home_merchant_km,
    d.source_file,
    d.source_line
FROM deduplicated AS d
LEFT JOIN raw.card_reference AS r ON r.card_id = d.card_id;

-- One partition of curated.transactions from raw: the same event submitted twice (same card,
-- time, amount and merchant under another id) kept once; text, categories and coordinates
-- normalised; reference data joined; calendar, age and distance derived.
INSERT INTO curated.transactions
WITH day AS (
    SELECT * FROM raw.transactions WHERE partition_date = $partition_date
),
deduplicated AS (
    SELECT * FROM day
    QUALIFY row_number() OVER (
        PARTITION BY card_id, event_time, amount, coalesce(merchant, '')
        ORDER BY source_file, source_line
    ) = 1
)
SELECT
    d.transaction_id,
    d.event_time,
    d.partition_date,
    d.card_id,
    nullif(regexp_replace(trim(d.merchant), '\s+', ' ', 'g'), '') AS merchant,
    nullif(regexp_replace(lower(trim(d.category)), '[\s-]+', '_', 'g'), '') AS category,
    round(d.amount, 2) AS amount,
    CASE upper(trim(d.gender))
        WHEN 'F' THEN 'F' WHEN 'FEMALE' THEN 'F' WHEN 'M' THEN 'M' WHEN 'MALE' THEN 'M'
    END AS gender,
    nullif(regexp_replace(trim(d.city), '\s+', ' ', 'g'), '') AS city,
    nullif(upper(trim(d.state)), '') AS state,
    nullif(trim(d.zip), '') AS zip,
    d.city_pop,
    nullif(lower(trim(d.job)), '') AS job,
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
    2 * 6371.0088 * asin(sqrt(
        pow(sin(radians(d.merchant_lat - d.home_lat) / 2), 2)
        + cos(radians(d.home_lat)) * cos(radians(d.merchant_lat))
        * pow(sin(radians(d.merchant_long - d.home_long) / 2), 2)
    )) AS home_merchant_km,
    d.source_file,
    d.source_line
FROM deduplicated AS d
LEFT JOIN raw.card_reference AS r ON r.card_id = d.card_id
ORDER BY d.event_time, d.transaction_id;

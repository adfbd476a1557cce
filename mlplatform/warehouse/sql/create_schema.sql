-- The warehouse's tables (idempotent). Column meanings: ARCHITECTURE.md, "Interfaces".
-- Ids, card pseudonyms and merchant names take many distinct values: zstd stores them a little
-- larger than DuckDB's default (dictionary + FSST) but writes them about twice as fast
-- (a 1.19M-row day: warehouse 191 -> 215 MB, ingestion + curation 0.7 s faster; bench/README.md).
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS curated;
CREATE SCHEMA IF NOT EXISTS features;
CREATE SCHEMA IF NOT EXISTS ml;
CREATE SCHEMA IF NOT EXISTS monitoring;

CREATE TABLE IF NOT EXISTS raw.transactions (
    transaction_id VARCHAR USING COMPRESSION zstd NOT NULL,
    event_time TIMESTAMP NOT NULL,
    partition_date DATE NOT NULL,
    card_id VARCHAR USING COMPRESSION zstd NOT NULL,  -- keyed pseudonym of the card number (HMAC)
    merchant VARCHAR USING COMPRESSION zstd,
    category VARCHAR,
    amount DOUBLE NOT NULL,
    gender VARCHAR,
    city VARCHAR,
    state VARCHAR,
    zip VARCHAR,
    city_pop BIGINT,
    job VARCHAR,
    birth_year INTEGER,                -- birth date reduced to its year
    home_lat DOUBLE,
    home_long DOUBLE,
    merchant_lat DOUBLE,
    merchant_long DOUBLE,
    label INTEGER,
    source_file VARCHAR NOT NULL,
    source_line BIGINT NOT NULL,
    ingested_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS raw.quarantine (
    partition_date DATE NOT NULL,
    file VARCHAR NOT NULL,
    line BIGINT NOT NULL,              -- physical line in the file (the header is line 1)
    reason VARCHAR NOT NULL,           -- the first rule the row broke
    column_name VARCHAR,
    detail VARCHAR,
    raw_line VARCHAR,                  -- the line as received, PII fields masked
    quarantined_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS raw.ingestion_log (
    partition_date DATE NOT NULL,
    file VARCHAR NOT NULL,
    sha256 VARCHAR,
    size_bytes BIGINT,
    rows_read BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    status VARCHAR NOT NULL,           -- loaded | rejected
    error VARCHAR,
    run_id VARCHAR,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS raw.card_reference (
    card_id VARCHAR USING COMPRESSION zstd NOT NULL,
    credit_limit DOUBLE,
    income_band VARCHAR,
    source_file VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS curated.transactions (
    transaction_id VARCHAR USING COMPRESSION zstd NOT NULL,
    event_time TIMESTAMP NOT NULL,
    partition_date DATE NOT NULL,
    card_id VARCHAR USING COMPRESSION zstd NOT NULL,
    merchant VARCHAR USING COMPRESSION zstd,
    category VARCHAR,
    amount DOUBLE NOT NULL,
    gender VARCHAR,
    city VARCHAR,
    state VARCHAR,
    zip VARCHAR,
    city_pop BIGINT,
    job VARCHAR,
    birth_year INTEGER,
    home_lat DOUBLE,
    home_long DOUBLE,
    merchant_lat DOUBLE,
    merchant_long DOUBLE,
    label INTEGER,
    credit_limit DOUBLE,
    income_band VARCHAR,
    hour TINYINT NOT NULL,
    weekday TINYINT NOT NULL,          -- ISO: Monday 1 .. Sunday 7
    is_weekend BOOLEAN NOT NULL,
    age INTEGER,                       -- years, from the birth year
    home_merchant_km DOUBLE,           -- great-circle distance home -> merchant
    source_file VARCHAR NOT NULL,
    source_line BIGINT NOT NULL
);

-- Every champion decision: automatic promotions and rejections, rollbacks, manual promotions.
CREATE TABLE IF NOT EXISTS ml.promotion_log (
    decided_at TIMESTAMP NOT NULL,
    model_name VARCHAR NOT NULL,
    decision VARCHAR NOT NULL,         -- promoted | rejected | rollback | manual_promotion
    version VARCHAR,                   -- the registered version decided on
    family VARCHAR,
    champion_before VARCHAR,           -- the champion version when the decision was made
    champion_after VARCHAR,
    dataset_version VARCHAR,
    average_precision DOUBLE,          -- the challenger's, on the holdout
    calibration_error DOUBLE,
    champion_average_precision DOUBLE, -- the champion's, on the same holdout
    ap_difference_lower DOUBLE,        -- paired bootstrap lower bound (challenger - champion)
    ap_difference_mean DOUBLE,
    reason VARCHAR NOT NULL,
    actor VARCHAR NOT NULL             -- the Dagster run id, or cli:<user>
);

-- The champion's score of every curated transaction of a day (asset `predictions`).
CREATE TABLE IF NOT EXISTS ml.predictions (
    transaction_id VARCHAR USING COMPRESSION zstd NOT NULL,
    card_id VARCHAR USING COMPRESSION zstd NOT NULL,  -- the card pseudonym
    partition_date DATE NOT NULL,
    score DOUBLE NOT NULL,             -- calibrated probability of the positive class
    decision BOOLEAN NOT NULL,         -- score >= the model's threshold
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    dataset_version VARCHAR,           -- the master-table snapshot the model was trained on
    scored_at TIMESTAMP NOT NULL
);

-- The REST service's prediction log, one row per scored transaction per model (asset
-- `serving_log`, from $MLPLATFORM_HOME/serving/predictions-YYYY-MM-DD.jsonl).
CREATE TABLE IF NOT EXISTS monitoring.serving_log (
    request_id VARCHAR NOT NULL,
    logged_at TIMESTAMP NOT NULL,      -- UTC
    event_time TIMESTAMP NOT NULL,
    partition_date DATE NOT NULL,      -- the event's day
    card_id VARCHAR NOT NULL,          -- the card pseudonym
    transaction_id VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    role VARCHAR NOT NULL,             -- champion | canary | shadow
    returned BOOLEAN NOT NULL,         -- whether this score was the answer
    score DOUBLE NOT NULL,
    decision BOOLEAN NOT NULL,
    validation_ms DOUBLE,
    features_ms DOUBLE,
    model_ms DOUBLE
);

-- The train split's distribution of each kept feature, one set of rows per dataset version
-- (asset `training_reference_profile`; mlplatform/monitoring/profile.py). Numbers: quantile
-- bins (bin i holds (lower, upper]; -1 holds the missing values); categories: one row per value.
CREATE TABLE IF NOT EXISTS ml.training_reference_profile (
    dataset_version VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,             -- numeric | categorical
    bin INTEGER,                       -- numbers only
    category VARCHAR,                  -- categories only (NULL: missing)
    lower DOUBLE,
    upper DOUBLE,
    count BIGINT NOT NULL,
    share DOUBLE NOT NULL,             -- of the feature's rows, missing included
    mean DOUBLE,                       -- numbers: mean of the bin's train values
    std DOUBLE,                        -- numbers: the feature's train standard deviation
    n_distinct BIGINT                  -- numbers: distinct train values
);
-- Profiles written before they were kept per dataset version lack these columns.
ALTER TABLE ml.training_reference_profile ADD COLUMN IF NOT EXISTS mean DOUBLE;
ALTER TABLE ml.training_reference_profile ADD COLUMN IF NOT EXISTS std DOUBLE;
ALTER TABLE ml.training_reference_profile ADD COLUMN IF NOT EXISTS n_distinct BIGINT;

-- Each elected model version's holdout score distribution, binned like the numeric features
-- (asset `champion_model`): the reference of prediction drift.
CREATE TABLE IF NOT EXISTS ml.champion_score_profile (
    model_version VARCHAR NOT NULL,
    dataset_version VARCHAR NOT NULL,
    bin INTEGER NOT NULL,
    lower DOUBLE,
    upper DOUBLE,
    count BIGINT NOT NULL,
    share DOUBLE NOT NULL,
    mean DOUBLE,
    std DOUBLE,
    n_distinct BIGINT
);

-- Each elected model version's feature importance (shares summing to 1; rank 1 the largest).
CREATE TABLE IF NOT EXISTS ml.champion_feature_importance (
    model_version VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    importance DOUBLE NOT NULL,
    rank INTEGER NOT NULL
);

-- Drift of each model feature (kind numeric | categorical, asset `data_drift`) and of the
-- score (kind prediction, asset `prediction_drift`) per day, against the reference of the
-- champion that scored the day.
CREATE TABLE IF NOT EXISTS monitoring.drift (
    partition_date DATE NOT NULL,
    feature VARCHAR NOT NULL,          -- a feature, or score / served_score
    kind VARCHAR NOT NULL,
    psi DOUBLE,
    distance DOUBLE,
    distance_name VARCHAR NOT NULL,    -- wasserstein_normed | jensen_shannon
    threshold DOUBLE NOT NULL,         -- of the distance
    p_value DOUBLE,                    -- chi-square of the day's bins vs the reference shares
    drifted BOOLEAN NOT NULL,
    reference_dataset_version VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,    -- the champion that scored the day
    rows BIGINT NOT NULL,
    effective_rows DOUBLE,             -- what the test counts the rows as (clustered: fewer)
    computed_at TIMESTAMP NOT NULL
);
-- Drift rows written before the test counted clustered rows lack it.
ALTER TABLE monitoring.drift ADD COLUMN IF NOT EXISTS effective_rows DOUBLE;

-- The champion's performance on each day's matured labels (asset `model_performance`): one row
-- per day, judged or with the reason it is not (labels not matured, too few positives, ...).
CREATE TABLE IF NOT EXISTS monitoring.performance (
    partition_date DATE NOT NULL,
    model_version VARCHAR,             -- the version that scored the day (ml.predictions)
    dataset_version VARCHAR,
    rows BIGINT NOT NULL,              -- scored rows of the day
    matured BIGINT NOT NULL,           -- of which the target has matured (ml.targets)
    positives BIGINT NOT NULL,         -- matured positives
    average_precision DOUBLE,          -- on the matured rows; NULL when undefined (one class)
    roc_auc DOUBLE,
    calibration_error DOUBLE,          -- expected calibration error, 10 equal-width bins
    card_precision_at_k DOUBLE,        -- k = MLPLATFORM_CARD_PRECISION_K
    holdout_average_precision DOUBLE,  -- the champion's, on its holdout (MLflow registry)
    holdout_roc_auc DOUBLE,
    holdout_calibration_error DOUBLE,
    ap_drop DOUBLE,                    -- holdout_average_precision - average_precision
    judged BOOLEAN NOT NULL,           -- every row matured and enough positives
    degraded BOOLEAN,                  -- judged and ap_drop > MLPLATFORM_PERFORMANCE_AP_MARGIN
    reason VARCHAR NOT NULL,
    computed_at TIMESTAMP NOT NULL
);

-- Wall time, CPU time and peak memory of every asset materialization (`assets/cost.py`).
CREATE TABLE IF NOT EXISTS monitoring.compute_cost (
    run_id VARCHAR NOT NULL,
    asset VARCHAR NOT NULL,
    partition VARCHAR,                 -- the partition key, `first..last` for a range, NULL if none
    seconds DOUBLE NOT NULL,           -- wall time of the asset's computation
    cpu_seconds DOUBLE NOT NULL,       -- user + system CPU of the process (all threads) and of
                                       -- the child processes it waited for
    peak_mb DOUBLE,                    -- peak resident memory of the process during the step
    rows BIGINT,                       -- the materialization's dagster/row_count, when it has one
    recorded_at TIMESTAMP NOT NULL
);

-- ml.targets: every curated transaction's target and when it matures (Python fills the fields).
-- revenge_spending, for a transaction at T on a card, in a discretionary category:
--   B = mean daily discretionary spend over (T - baseline, T - recent] (over the days of history
--       the card has in that span), R = the same over (T - recent, T), S = discretionary spend
--       over [T, T + horizon); 1 when the card has min_history days of history, R <= ratio x B
--       and S >= max(multiple x B, min burst). Open ends are one microsecond short.
-- label: the contract's label column, known label_delay after the transaction.
-- A target is NULL until it matures (its horizon has passed at as_of): never a guessed 0.
CREATE OR REPLACE TABLE ml.targets AS
WITH events AS (
    SELECT transaction_id, card_id, event_time, partition_date, credit_limit, label,
        category IN ({discretionary}) AS is_discretionary,
        CASE WHEN category IN ({discretionary}) THEN amount::DECIMAL(18, 2) ELSE 0 END
            AS disc_amount
    FROM curated.transactions
),
windowed AS (
    SELECT *,
        min(event_time) OVER (PARTITION BY card_id) AS first_seen,
        coalesce(sum(disc_amount) OVER (card RANGE BETWEEN INTERVAL '{baseline_open}'
            PRECEDING AND INTERVAL '{recent}' PRECEDING), 0) AS baseline_spend,
        coalesce(sum(disc_amount) OVER (card RANGE BETWEEN INTERVAL '{recent_open}'
            PRECEDING AND INTERVAL '1 microsecond' PRECEDING), 0) AS recent_spend,
        coalesce(sum(disc_amount) OVER (card RANGE BETWEEN CURRENT ROW
            AND INTERVAL '{horizon_open}' FOLLOWING), 0) AS burst_spend
    FROM events
    WINDOW card AS (PARTITION BY card_id ORDER BY event_time)
),
measured AS (
    SELECT *,
        event_time - first_seen >= INTERVAL '{min_history}' AS has_history,
        baseline_spend / nullif(epoch(event_time - INTERVAL '{recent}')
            - epoch(greatest(event_time - INTERVAL '{baseline}', first_seen)), 0) * 86400
            AS baseline_daily,
        recent_spend / {recent_days} AS recent_daily,
        CASE WHEN credit_limit > 0 THEN {burst_share} * credit_limit ELSE {burst_amount} END
            AS min_burst,
        event_time + INTERVAL '{maturity}' AS matures_at
    FROM windowed
)
SELECT transaction_id, card_id, event_time, partition_date,
    is_discretionary, has_history, baseline_daily, recent_daily, burst_spend::DOUBLE AS burst_spend,
    min_burst, matures_at, matures_at <= $as_of AS matured,
    CASE WHEN matures_at <= $as_of THEN {target} END AS target
FROM measured;

-- Types every staged landing row and names the first rule it breaks (NULL: a good row), in
-- one streaming pass; duplicate ids are flagged afterwards (flag_duplicate_ids.sql).
-- The typed columns and the rule CASE are generated from the contract (ingestion/row_rules.py).
CREATE OR REPLACE TEMP TABLE checked AS
WITH typed AS (
    SELECT
        b.*,
        {typed_columns}
    FROM batch AS b
)
SELECT
    -- the typed values replace their text; names and street are never needed again
    * EXCLUDE (event_time, amount, city_pop, home_lat, home_long, merchant_lat, merchant_long,
               label, birth_date, first_name, last_name, street),
    {violation} AS violation
FROM typed;

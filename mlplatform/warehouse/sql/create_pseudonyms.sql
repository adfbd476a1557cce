-- The pseudonym of every card number of the checked rows (the card number itself never
-- reaches a table): {card_id} is the keyed hash of pii.card_pseudonym_sql.
CREATE OR REPLACE TEMP TABLE pseudonyms AS
SELECT card_number, {card_id} AS card_id
FROM (SELECT DISTINCT card_number FROM checked WHERE card_number IS NOT NULL);

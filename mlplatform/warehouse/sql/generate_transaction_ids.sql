-- The transaction id of a source without one (`transaction_id: generated`): a hash of the
-- row's mapped values (the card as its pseudonym, so the id reveals no card number) and of
-- its occurrence among the identical rows of its file, in line order. Re-delivering a file
-- gives the same ids; two identical purchases in one file stay two rows with two ids; the
-- same row delivered again in another file of the day is a duplicate_id.
-- {values} is the list of the checked row's canonical values (ingestion/row_rules.py).
UPDATE checked AS c
SET transaction_id = g.transaction_id
FROM (
    SELECT file_id, row_idx,
           left(sha256(to_json(values) || '#' || row_number() OVER (
               PARTITION BY file_id, values ORDER BY line
           )), 32) AS transaction_id
    FROM (
        SELECT c.file_id, c.row_idx, c.line, {values} AS values
        FROM checked AS c
        LEFT JOIN pseudonyms AS p ON p.card_number = c.card_number
    )
) AS g
WHERE c.file_id = g.file_id AND c.row_idx = g.row_idx;

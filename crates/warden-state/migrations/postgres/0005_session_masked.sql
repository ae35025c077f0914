-- How many values the gateway masked in each session, by detector: a JSON object such as {"email": 3, "column": 2},
-- or NULL when it masked none.
ALTER TABLE sessions ADD COLUMN masked text;

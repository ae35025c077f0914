-- What warden decided about each statement before forwarding it. NULL on statements no guard judged.
-- decision: 'allowed' or 'denied'; classes, tables, policies: JSON arrays of strings (text, as in SQLite).
ALTER TABLE statements ADD COLUMN decision text;
ALTER TABLE statements ADD COLUMN classes text;
ALTER TABLE statements ADD COLUMN tables text;
ALTER TABLE statements ADD COLUMN policies text;

-- What warden decided about each statement before forwarding it. NULL on statements no guard judged.
-- decision: 'allowed' or 'denied'; classes, tables, policies: JSON arrays of strings.
ALTER TABLE statements ADD COLUMN decision TEXT;
ALTER TABLE statements ADD COLUMN classes TEXT;
ALTER TABLE statements ADD COLUMN tables TEXT;
ALTER TABLE statements ADD COLUMN policies TEXT;

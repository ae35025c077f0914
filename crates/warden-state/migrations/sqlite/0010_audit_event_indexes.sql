-- No reader looks audit events up by identity or connection (sessions are, and a session's events by session_id), so
-- these two indexes only cost the writer: each event wrote five index entries, now three.
DROP INDEX audit_events_identity;
DROP INDEX audit_events_connection;

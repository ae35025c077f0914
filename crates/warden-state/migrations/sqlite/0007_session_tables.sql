-- Which tables each session's statements touched, for `warden sessions list --table`: the name as the analyzer
-- records it (schema-qualified, "public.customers") and the table's own name after the schema ("customers"), one row
-- per (table, session), written by the writer in the transaction that inserts the statements. Sessions are also
-- listed by their token's run and node labels.
CREATE TABLE session_tables (
    table_name TEXT NOT NULL,
    name       TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (table_name, session_id)
) STRICT;
CREATE INDEX session_tables_name ON session_tables (name, session_id);
CREATE INDEX session_tables_session ON session_tables (session_id);

INSERT OR IGNORE INTO session_tables (table_name, name, session_id)
SELECT DISTINCT touched.value, substr(touched.value, instr(touched.value, '.') + 1), statements.session_id
FROM statements, json_each(statements.tables) AS touched
WHERE statements.tables IS NOT NULL AND json_valid(statements.tables);

CREATE INDEX sessions_run ON sessions (run, started_at);
CREATE INDEX sessions_node ON sessions (node, started_at);

-- Retention (`[audit] retention`): the pruner deletes sessions that ended before its cutoff, reads the
-- `audit.pruned` events (the pruning marks) and the checkpoints before its cutoff (compared as bytes) on every pass.
CREATE INDEX sessions_ended_at ON sessions (ended_at);
CREATE INDEX audit_events_pruned ON audit_events (chain, seq) WHERE kind = 'audit.pruned';
CREATE INDEX audit_checkpoints_at ON audit_checkpoints (at);

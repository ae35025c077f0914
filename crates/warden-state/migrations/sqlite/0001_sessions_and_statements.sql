-- Sessions and the statements they ran. Timestamps are INTEGER microseconds since the Unix epoch, UTC.

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    identity TEXT NOT NULL,
    connection TEXT NOT NULL,
    client_address TEXT NOT NULL,
    user_name TEXT NOT NULL,
    application_name TEXT,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    end_reason TEXT,
    -- Kept by the writer, in the transaction that inserts the statements.
    statement_count INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Listing is newest first, optionally for one identity or connection, or only the active sessions.
CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX sessions_identity ON sessions (identity, started_at);
CREATE INDEX sessions_connection ON sessions (connection, started_at);
CREATE INDEX sessions_active ON sessions (started_at) WHERE ended_at IS NULL;

CREATE TABLE statements (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    text TEXT NOT NULL,
    rows INTEGER,
    error TEXT,
    PRIMARY KEY (session_id, seq)
) STRICT;

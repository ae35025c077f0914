-- Sessions and the statements they ran, shared by several gateways.

CREATE TABLE sessions (
    id text PRIMARY KEY,
    identity text NOT NULL,
    connection text NOT NULL,
    client_address text NOT NULL,
    user_name text NOT NULL,
    application_name text,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    end_reason text,
    -- Kept by the writer, in the transaction that inserts the statements.
    statement_count bigint NOT NULL DEFAULT 0
);

-- Listing is newest first, optionally for one identity or connection, or only the active sessions.
CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX sessions_identity ON sessions (identity, started_at);
CREATE INDEX sessions_connection ON sessions (connection, started_at);
CREATE INDEX sessions_active ON sessions (started_at) WHERE ended_at IS NULL;

CREATE TABLE statements (
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    started_at timestamptz NOT NULL,
    duration_us bigint NOT NULL,
    text text NOT NULL,
    rows bigint,
    error text,
    PRIMARY KEY (session_id, seq)
);

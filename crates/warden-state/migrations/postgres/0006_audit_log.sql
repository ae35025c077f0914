-- The tamper-evident audit log: every recorded event, hash-chained per gateway (chain), and signed checkpoints of
-- each chain's head. Append-only: warden never updates or deletes these rows.
CREATE TABLE audit_events (
    chain      TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    at         TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    session_id TEXT,
    identity   TEXT,
    connection TEXT,
    run        TEXT,
    node       TEXT,
    body       TEXT    NOT NULL,
    prev       TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_session ON audit_events (session_id);
CREATE INDEX audit_events_identity ON audit_events (identity, at);
CREATE INDEX audit_events_connection ON audit_events (connection, at);

CREATE TABLE audit_checkpoints (
    chain     TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    head      TEXT    NOT NULL,
    at        TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    signature TEXT    NOT NULL,
    PRIMARY KEY (chain, seq)
);

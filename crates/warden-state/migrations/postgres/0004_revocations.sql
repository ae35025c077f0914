-- Revoked identities, tokens and sessions. Append-only; every gateway sharing the store polls for rows past the
-- last id it has seen.
CREATE TABLE revocations (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('identity', 'token', 'session')),
    subject text NOT NULL,
    reason text,
    revoked_by text NOT NULL,
    revoked_at timestamptz NOT NULL
);

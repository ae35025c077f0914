-- Revoked identities, tokens and sessions. Append-only; every gateway sharing the store polls for rows past the
-- last id it has seen.
CREATE TABLE revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('identity', 'token', 'session')),
    subject TEXT NOT NULL,
    reason TEXT,
    revoked_by TEXT NOT NULL,
    revoked_at INTEGER NOT NULL
) STRICT;

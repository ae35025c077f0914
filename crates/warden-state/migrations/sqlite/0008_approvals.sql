-- Approval requests (one statement, or a time-boxed grant) and their decisions. The columns are what lookups filter
-- on; `record` is the whole approval as JSON (votes, needed groups, statement, parameters), replaced with `version`
-- bumped on every change, so concurrent approvers on several gateways never overwrite each other's votes.
-- Timestamps are INTEGER microseconds since the Unix epoch, UTC.
CREATE TABLE approvals (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('statement', 'grant')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    identity TEXT NOT NULL,
    connection TEXT NOT NULL,
    fingerprint TEXT,
    requested_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
) STRICT;

CREATE INDEX approvals_lookup ON approvals (identity, connection, status, fingerprint);
CREATE INDEX approvals_status ON approvals (status, expires_at);
CREATE INDEX approvals_requested ON approvals (requested_at);

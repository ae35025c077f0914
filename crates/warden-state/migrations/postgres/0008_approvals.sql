-- Approval requests (one statement, or a time-boxed grant) and their decisions. The columns are what lookups filter
-- on; `record` is the whole approval as JSON (votes, needed groups, statement, parameters), replaced with `version`
-- bumped on every change, so concurrent approvers on several gateways never overwrite each other's votes.
CREATE TABLE approvals (
    id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('statement', 'grant')),
    status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    identity text NOT NULL,
    connection text NOT NULL,
    fingerprint text,
    requested_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    version bigint NOT NULL,
    record text NOT NULL
);

CREATE INDEX approvals_lookup ON approvals (identity, connection, status, fingerprint);
CREATE INDEX approvals_status ON approvals (status, expires_at);
CREATE INDEX approvals_requested ON approvals (requested_at);

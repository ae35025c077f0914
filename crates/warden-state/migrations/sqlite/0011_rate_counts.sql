-- Requests and tokens per connection, identity and five-second slot, as each gateway replica counted them: how
-- replicas sharing the store enforce a per-minute rate limit together. Each replica adds what it counted about once a
-- second and reads the others' slots of the last minute; rows older than two minutes are deleted.
CREATE TABLE rate_counts (
    connection TEXT    NOT NULL,
    slot       INTEGER NOT NULL,
    identity   TEXT    NOT NULL,
    replica    TEXT    NOT NULL,
    requests   INTEGER NOT NULL,
    tokens     INTEGER NOT NULL,
    PRIMARY KEY (connection, slot, identity, replica)
) STRICT;

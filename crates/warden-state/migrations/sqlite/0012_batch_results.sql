-- A batch runs its requests after it is created and reports their tokens only in its results. Read through warden,
-- the results' tokens are recorded on the request that read them (`batch_requests`: how many of the batch's requests
-- reported usage), once per batch: the first read recorded claims the batch here, and a later read of the same results
-- is recorded without tokens. `batch` is `<api>:<id>` (the Anthropic batch, the OpenAI output file).
CREATE TABLE batch_results (
    batch TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL
);
ALTER TABLE statements ADD COLUMN batch_requests INTEGER;

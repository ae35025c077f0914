-- What each LLM request used, from the provider's usage fields: the model asked for, and the input and output tokens
-- its answer reported. NULL on every other statement (SQL, plain HTTP); the tokens are NULL on an LLM request whose
-- answer reported none (a refusal, an upstream error).
ALTER TABLE statements ADD COLUMN model TEXT;
ALTER TABLE statements ADD COLUMN input_tokens INTEGER;
ALTER TABLE statements ADD COLUMN output_tokens INTEGER;

-- Budgets ask for the tokens one identity used on one connection since the start of a window (`warden usage` for those
-- of a period): the pair's sessions still open at that time (ended_at NULL or later), then each one's statements with
-- usage from that time on. The statements index is partial, so a statement without usage (every SQL statement) costs
-- nothing more to write, and holds the counts, so the sum reads the two indexes alone.
CREATE INDEX sessions_usage ON sessions (connection, identity, ended_at, id);
CREATE INDEX statements_tokens ON statements (session_id, started_at, input_tokens, output_tokens)
    WHERE input_tokens IS NOT NULL;

-- How each session authenticated: the credential kind (api_key, warden_token, oidc) and, for a warden token, its
-- id and workflow labels.
ALTER TABLE sessions ADD COLUMN credential text;
ALTER TABLE sessions ADD COLUMN token_id text;
ALTER TABLE sessions ADD COLUMN run text;
ALTER TABLE sessions ADD COLUMN node text;

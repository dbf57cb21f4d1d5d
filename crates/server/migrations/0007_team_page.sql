-- The team page: what each job was asked for, shown beside it, and the
-- page's sign-in sessions.
ALTER TABLE jobs ADD COLUMN prompt TEXT;
ALTER TABLE jobs ADD COLUMN input TEXT;  -- the input's URL, or a description of an uploaded file
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (key_id, created_at);

CREATE TABLE page_sessions (
    token_hash       BLOB    PRIMARY KEY,  -- SHA-256 of the cookie's token; the token is never stored
    key_id           INTEGER REFERENCES keys (id),  -- NULL: the admin
    credential_hash  BLOB    NOT NULL,     -- SHA-256 of the key or token signed in with
    csrf             TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL
);
CREATE INDEX page_sessions_by_expiry ON page_sessions (expires_at);

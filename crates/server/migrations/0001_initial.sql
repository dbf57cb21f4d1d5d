-- Team keys. Only the SHA-256 of a key is stored; `prefix` is its first
-- characters, enough for a person to tell keys apart in a listing.
CREATE TABLE keys (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    hash            BLOB    NOT NULL UNIQUE,
    prefix          TEXT    NOT NULL,
    allowed_models  TEXT,              -- JSON array of model ids; NULL allows every model
    rpm             INTEGER,           -- requests per minute; NULL is unlimited
    max_unfinished  INTEGER,           -- unfinished jobs at once; NULL is unlimited
    credit_budget   REAL,              -- NULL is unlimited
    credits_used    REAL    NOT NULL DEFAULT 0,
    enabled         INTEGER NOT NULL DEFAULT 1,
    revoked_at      INTEGER,           -- unix seconds; a revoked key never authenticates again
    created_at      INTEGER NOT NULL
);

-- Jobs, one row per accepted create. A row is written (status `pending`)
-- before the upstream is called, so a crash can never lose a billed job:
-- at worst it is left `pending` or `unknown`, which is reported, not retried.
CREATE TABLE jobs (
    local_id         TEXT    PRIMARY KEY,
    key_id           INTEGER NOT NULL REFERENCES keys (id),
    generation_id    TEXT    UNIQUE,   -- the upstream's id, once known
    status           TEXT    NOT NULL, -- pending | unknown | the upstream's status
    model            TEXT    NOT NULL,
    body             TEXT,             -- the generation as last reported upstream (JSON)
    idempotency_key  TEXT,
    request_hash     BLOB    NOT NULL, -- SHA-256 of the create body, for Idempotency-Key checks
    credits_charged  REAL,             -- set once, when the job finishes
    note             TEXT,             -- why a job is `unknown`
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (key_id, idempotency_key)
);

CREATE INDEX jobs_by_status ON jobs (status);

-- The PostgreSQL schema: the same tables as SQLite's migrations 0001–0006
-- build, in PostgreSQL's types. Times are unix seconds, except in
-- `webhook_deliveries` (unix milliseconds), as there.

-- Team keys. Only the SHA-256 of a key is stored; `prefix` is its first
-- characters, enough for a person to tell keys apart in a listing.
CREATE TABLE keys (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    hash            BYTEA   NOT NULL UNIQUE,
    prefix          TEXT    NOT NULL,
    allowed_models  TEXT,              -- JSON array of model ids; NULL allows every model
    rpm             BIGINT,            -- requests per minute; NULL is unlimited
    max_unfinished  BIGINT,            -- unfinished jobs at once; NULL is unlimited
    credit_budget   DOUBLE PRECISION,  -- NULL is unlimited
    credits_used    DOUBLE PRECISION NOT NULL DEFAULT 0,
    budget_period   TEXT,              -- NULL, 'day', 'week' or 'month'
    period_start    BIGINT,
    period_credits  DOUBLE PRECISION NOT NULL DEFAULT 0,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    revoked_at      BIGINT,            -- a revoked key never authenticates again
    created_at      BIGINT  NOT NULL,
    webhook_url     TEXT,
    webhook_secret  TEXT               -- signs deliveries; shown once, never listed
);

-- Jobs, one row per accepted create, written (status `pending`) before the
-- upstream is called, so a crash can never lose a billed job.
CREATE TABLE jobs (
    local_id         TEXT    PRIMARY KEY,
    seq              BIGINT  GENERATED ALWAYS AS IDENTITY, -- arrival order, for ties in listings
    key_id           BIGINT  NOT NULL REFERENCES keys (id),
    generation_id    TEXT    UNIQUE,   -- the upstream's id, once known
    status           TEXT    NOT NULL, -- pending | unknown | the upstream's status
    model            TEXT    NOT NULL,
    body             TEXT,             -- the generation as last reported upstream (JSON)
    idempotency_key  TEXT,
    request_hash     BYTEA   NOT NULL, -- SHA-256 of the create body
    credits_charged  DOUBLE PRECISION, -- set once, when the job finishes
    note             TEXT,             -- why a job is `unknown`
    receipt          TEXT,             -- the create answer's headers (JSON)
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    UNIQUE (key_id, idempotency_key)
);

CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_by_created ON jobs (created_at);
CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE generation_id IS NOT NULL AND credits_charged IS NULL;

-- Webhook deliveries, one row per attempt; see SQLite's 0002.
CREATE TABLE webhook_deliveries (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      TEXT    NOT NULL,
    attempt          BIGINT  NOT NULL,
    key_id           BIGINT  NOT NULL REFERENCES keys (id),
    generation_id    TEXT    NOT NULL,
    event            TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    state            TEXT    NOT NULL, -- pending | delivered | failed | cancelled
    due_at           BIGINT  NOT NULL,
    url              TEXT,
    response_status  BIGINT,
    error            TEXT,
    attempted_at     BIGINT,
    duration_ms      BIGINT,
    created_at       BIGINT  NOT NULL,
    UNIQUE (delivery_id, attempt)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (generation_id);

-- What the server learned of each model's job durations.
CREATE TABLE model_timings (
    model       TEXT    PRIMARY KEY,
    timing      TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- A counter bumped by every change to a key's identity or settings (not by
-- charging it), by any process; each change is also announced on the
-- `aimlvid_keys` channel, for servers that listen.
CREATE TABLE key_changes (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  BIGINT  NOT NULL
);
INSERT INTO key_changes (id, version) VALUES (1, 0);

CREATE FUNCTION aimlvid_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE key_changes SET version = version + 1;
    PERFORM pg_notify('aimlvid_keys', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER keys_inserted_or_deleted AFTER INSERT OR DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION aimlvid_key_changed();

CREATE TRIGGER keys_changed
    AFTER UPDATE OF name, hash, allowed_models, rpm, max_unfinished, credit_budget, budget_period, enabled,
        revoked_at, webhook_url, webhook_secret ON keys
    FOR EACH ROW EXECUTE FUNCTION aimlvid_key_changed();

-- A key's webhook: where its finished jobs are announced, and the secret
-- that signs them. The secret is kept as is because signing needs it; it
-- is shown once, when issued, and never listed or returned again.
ALTER TABLE keys ADD COLUMN webhook_url TEXT;
ALTER TABLE keys ADD COLUMN webhook_secret TEXT;

-- Webhook deliveries, one row per attempt. A delivery's first attempt is
-- inserted in the transaction that finishes (and charges) its job, so no
-- finished job's webhook is lost to a crash; each failed attempt inserts the
-- next one, due after a backoff, in the transaction that records the failure.
-- Rows still `pending` at start-up are delivered then.
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      TEXT    NOT NULL, -- shared by a delivery's attempts; sent as X-Aimlvid-Delivery
    attempt          INTEGER NOT NULL, -- 1, 2, ...
    key_id           INTEGER NOT NULL REFERENCES keys (id),
    generation_id    TEXT    NOT NULL,
    event            TEXT    NOT NULL, -- the job's final status
    body             TEXT    NOT NULL, -- the JSON sent: the job as members read it
    state            TEXT    NOT NULL, -- pending | delivered | failed | cancelled
    due_at           INTEGER NOT NULL, -- unix milliseconds
    url              TEXT,             -- where the attempt was sent
    response_status  INTEGER,
    error            TEXT,             -- why it failed, without the URL
    attempted_at     INTEGER,          -- unix milliseconds
    duration_ms      INTEGER,
    created_at       INTEGER NOT NULL, -- unix milliseconds
    UNIQUE (delivery_id, attempt)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries (generation_id);

-- What the server learned of each model's job durations, so that a restart
-- keeps polling each model on the schedule it has learned.
CREATE TABLE model_timings (
    model       TEXT    PRIMARY KEY,
    timing      TEXT    NOT NULL, -- JSON, as the server's scheduler writes it
    updated_at  INTEGER NOT NULL
);

-- A counter bumped by every change to a key's identity or settings (not by
-- charging it), by any process: a running server compares it several times
-- a second and reloads its keys only when it moved.
CREATE TABLE key_changes (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO key_changes (id, version) VALUES (1, 0);

CREATE TRIGGER keys_inserted AFTER INSERT ON keys
BEGIN
    UPDATE key_changes SET version = version + 1;
END;

CREATE TRIGGER keys_changed
AFTER UPDATE OF name, hash, allowed_models, rpm, max_unfinished, credit_budget, enabled, revoked_at,
    webhook_url, webhook_secret ON keys
BEGIN
    UPDATE key_changes SET version = version + 1;
END;

CREATE TRIGGER keys_deleted AFTER DELETE ON keys
BEGIN
    UPDATE key_changes SET version = version + 1;
END;

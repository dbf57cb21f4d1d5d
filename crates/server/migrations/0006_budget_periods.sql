-- A key's budget may renew each day, week or month (UTC), like the
-- upstream's own keys: `period_credits` is what was spent since
-- `period_start` (unix seconds); `credits_used` stays the lifetime figure.
ALTER TABLE keys ADD COLUMN budget_period TEXT; -- NULL, 'day', 'week' or 'month'
ALTER TABLE keys ADD COLUMN period_start INTEGER;
ALTER TABLE keys ADD COLUMN period_credits REAL NOT NULL DEFAULT 0;

DROP TRIGGER keys_changed;
CREATE TRIGGER keys_changed
AFTER UPDATE OF name, hash, allowed_models, rpm, max_unfinished, credit_budget, budget_period, enabled,
    revoked_at, webhook_url, webhook_secret ON keys
BEGIN
    UPDATE key_changes SET version = version + 1;
END;

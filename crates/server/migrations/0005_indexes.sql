-- Reads at start and on a cache miss that must not scan every job ever made:
-- the most recent jobs, and the unfinished ones (an id, no charge yet).
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (created_at) WHERE generation_id IS NOT NULL AND credits_charged IS NULL;

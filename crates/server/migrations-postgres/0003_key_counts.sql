-- Limits counted in the database, so that they hold across replicas: a
-- key's unfinished jobs and the credits they hold against its budget, each
-- job's hold beside it. A create takes its place with one conditional
-- update of its key's row; its end (or its refusal) gives it back.
ALTER TABLE keys ADD COLUMN unfinished BIGINT NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN reserved DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN reserved DOUBLE PRECISION NOT NULL DEFAULT 0;
UPDATE keys SET unfinished = (SELECT COUNT(*) FROM jobs WHERE jobs.key_id = keys.id AND credits_charged IS NULL);

-- Which replica follows an unfinished job, and until when: a replica
-- renews its leases while it lives; a job whose lease lapsed (its replica
-- died) is taken over by another.
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE generation_id IS NOT NULL AND credits_charged IS NULL;

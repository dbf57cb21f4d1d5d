-- A create whose outcome is unknown keeps its key's place and budget hold
-- until it is resolved; one the upstream's logs still do not show after the
-- lookup window gives them back, once. This marks that it did.
ALTER TABLE jobs ADD COLUMN hold_released INTEGER NOT NULL DEFAULT 0;

-- A create whose outcome is unknown keeps its key's place and budget hold
-- until it is resolved; one the upstream's logs still do not show after the
-- lookup window gives them back, once (whichever replica looks it up). This
-- marks that it did, so that a later find takes them again.
ALTER TABLE jobs ADD COLUMN hold_released BOOLEAN NOT NULL DEFAULT FALSE;

-- OpenAI's videos API: what each job was asked for, kept so that a video
-- reads back its own duration and size, can be remixed, and hidden.
-- `params`: the create body as sent upstream (JSON), with any media sent
-- inline (`data:`) replaced by null; `inline_media` names those parameters
-- (their data is never stored). `remixed_from`: the video (generation id)
-- this one remixes. `hidden_at`: unix seconds, when its member deleted it
-- (the record stays, for billing, reconciliation and the admin).
ALTER TABLE jobs ADD COLUMN params TEXT;
ALTER TABLE jobs ADD COLUMN inline_media TEXT;
ALTER TABLE jobs ADD COLUMN remixed_from TEXT;
ALTER TABLE jobs ADD COLUMN hidden_at INTEGER;

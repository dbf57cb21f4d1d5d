-- The shape a key's webhook deliveries take: 'aimlvid' (the job's JSON,
-- signed with X-Aimlvid-Signature) or 'openai' (OpenAI's video events,
-- signed per Standard Webhooks). Applied when a delivery is made, so a
-- change reaches the deliveries still pending, like a new URL does.
ALTER TABLE keys ADD COLUMN webhook_format TEXT NOT NULL DEFAULT 'aimlvid';

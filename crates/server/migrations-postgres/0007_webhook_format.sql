-- The shape a key's webhook deliveries take; see SQLite's 0010.
ALTER TABLE keys ADD COLUMN webhook_format TEXT NOT NULL DEFAULT 'aimlvid';

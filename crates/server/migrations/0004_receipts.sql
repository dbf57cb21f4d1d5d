-- What the upstream's answer to a create said in its headers: the
-- inference id and what the call cost (JSON: inference_id, credits, usd).
ALTER TABLE jobs ADD COLUMN receipt TEXT;

-- Operating a fleet: paused deliveries, FIFO endpoints, encrypted custom headers, replay records.

-- Deliveries of a paused endpoint are parked in their own state, outside the claim index, so a
-- paused endpoint's backlog costs the claim nothing and keeps its schedule (run_at) for resume.
ALTER TABLE webhook.deliveries DROP CONSTRAINT deliveries_state_valid;
ALTER TABLE webhook.deliveries
    ADD CONSTRAINT deliveries_state_valid CHECK (state IN ('pending', 'running', 'paused'));

-- Opt-in strict FIFO: one delivery in flight at a time, in enqueue (id) order; a failing head
-- blocks the ones behind it.
ALTER TABLE webhook.endpoints ADD COLUMN ordered boolean NOT NULL DEFAULT false;

-- Custom request headers, sealed like secrets (AES-256-GCM, endpoint id as associated data):
-- they often carry credentials.
CREATE TABLE webhook.endpoint_headers (
    endpoint_id uuid NOT NULL REFERENCES webhook.endpoints (id) ON DELETE CASCADE,
    name        text NOT NULL,
    key_id      text NOT NULL,
    ciphertext  bytea NOT NULL,
    PRIMARY KEY (endpoint_id, name),
    CONSTRAINT endpoint_headers_name_valid CHECK (name ~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$'),
    CONSTRAINT endpoint_headers_ciphertext_length CHECK (octet_length(ciphertext) > 28)
);
CREATE INDEX endpoint_headers_key_id_idx ON webhook.endpoint_headers (key_id);

-- A replayed dead letter points at the delivery that replaced it; replaying again is a no-op.
ALTER TABLE webhook.dead_letters ADD COLUMN replayed_as bigint;

-- FIFO heads are found by (endpoint_id, id); backlog and pause queries need endpoint_id only.
DROP INDEX webhook.deliveries_endpoint_idx;
CREATE INDEX deliveries_endpoint_idx ON webhook.deliveries (endpoint_id, id);

-- The leader's sweep of parked deliveries whose endpoint was resumed.
CREATE INDEX deliveries_paused_idx ON webhook.deliveries (endpoint_id) WHERE state = 'paused';

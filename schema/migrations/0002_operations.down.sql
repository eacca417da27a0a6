DROP INDEX IF EXISTS webhook.deliveries_paused_idx;
DROP INDEX webhook.deliveries_endpoint_idx;
CREATE INDEX deliveries_endpoint_idx ON webhook.deliveries (endpoint_id, run_at);
ALTER TABLE webhook.dead_letters DROP COLUMN replayed_as;
DROP TABLE webhook.endpoint_headers;
ALTER TABLE webhook.endpoints DROP COLUMN ordered;
UPDATE webhook.deliveries SET state = 'pending' WHERE state = 'paused';
ALTER TABLE webhook.deliveries DROP CONSTRAINT deliveries_state_valid;
ALTER TABLE webhook.deliveries ADD CONSTRAINT deliveries_state_valid CHECK (state IN ('pending', 'running'));

CREATE INDEX IF NOT EXISTS deliveries_lease_idx ON webhook.deliveries (lease_expires_at) WHERE state = 'running';
DROP INDEX IF EXISTS webhook.deliveries_lease_expiry_idx;

DROP TABLE IF EXISTS webhook.endpoint_client_identities;
DROP INDEX IF EXISTS webhook.endpoints_open_circuits_idx;
ALTER TABLE webhook.endpoints
    DROP CONSTRAINT endpoints_circuit_state_valid,
    DROP COLUMN circuit_state,
    DROP COLUMN circuit_open_until,
    DROP COLUMN circuit_cooldown_ms,
    DROP COLUMN circuit_probe_delivery,
    DROP COLUMN circuit_changed_at;

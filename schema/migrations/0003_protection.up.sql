-- Fleet-wide endpoint protection: the circuit breaker's shared state lives on the endpoint row, so
-- every worker honours it. Workers trip it (closed → open); the leader turns an open circuit whose
-- cool-down has passed into half-open with exactly one probe delivery; the probe's completion
-- closes it or opens it again with a doubled cool-down.
ALTER TABLE webhook.endpoints
    ADD COLUMN circuit_state text NOT NULL DEFAULT 'closed',
    ADD COLUMN circuit_open_until timestamptz,
    ADD COLUMN circuit_cooldown_ms integer,
    ADD COLUMN circuit_probe_delivery bigint,
    ADD COLUMN circuit_changed_at timestamptz,
    ADD CONSTRAINT endpoints_circuit_state_valid CHECK (circuit_state IN ('closed', 'open', 'half_open'));

-- The leader finds circuits due for a probe.
CREATE INDEX endpoints_open_circuits_idx ON webhook.endpoints (circuit_open_until) WHERE circuit_state <> 'closed';

-- Optional client certificate (mTLS) per endpoint: certificate chain and private key in PEM,
-- sealed like secrets (AES-256-GCM, endpoint id as associated data).
CREATE TABLE webhook.endpoint_client_identities (
    endpoint_id uuid PRIMARY KEY REFERENCES webhook.endpoints (id) ON DELETE CASCADE,
    key_id      text NOT NULL,
    ciphertext  bytea NOT NULL,
    CONSTRAINT endpoint_client_identities_ciphertext_length CHECK (octet_length(ciphertext) > 28)
);
CREATE INDEX endpoint_client_identities_key_id_idx ON webhook.endpoint_client_identities (key_id);

//! The statements of endpoint administration, named; see `crate::sql` for how they are checked.

pub(super) const INSERT_ENDPOINT: &str = r#"
INSERT INTO webhook.endpoints (id, url, event_types, description, rate_limit_per_second, rate_limit_burst,
                               max_in_flight, timeout_ms, ordered, application_id, uid, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, '00000000-0000-0000-0000-000000000000'::uuid), $11,
        coalesce($12, '{}'::jsonb))
"#;
pub(super) const DELETE_IDENTITY: &str = "DELETE FROM webhook.endpoint_client_identities WHERE endpoint_id = $1";
pub(super) const DELETE_HEADERS: &str = "DELETE FROM webhook.endpoint_headers WHERE endpoint_id = $1";
pub(super) const UPDATE_ENDPOINT: &str = r#"
UPDATE webhook.endpoints
SET url = coalesce($2, url), event_types = coalesce($3, event_types), description = coalesce($4, description),
    rate_limit_per_second = CASE WHEN $14 THEN $5 ELSE rate_limit_per_second END, rate_limit_burst = coalesce($6, rate_limit_burst),
    max_in_flight = coalesce($7, max_in_flight), timeout_ms = coalesce($8, timeout_ms), ordered = coalesce($9, ordered),
    uid = CASE WHEN $10 THEN $11 ELSE uid END, metadata = coalesce($12, metadata), updated_at = now()
WHERE id = $1 AND ($13::uuid IS NULL OR application_id = $13)
"#;
pub(super) const LOCK_STATE: &str = "SELECT state FROM webhook.endpoints WHERE id = $1 FOR UPDATE";
/// `$4`/`$5`: the operational event the change emits, if any, and its data
/// (docs/operational-events.md), in the statement that makes the change.
pub(super) const SET_STATE: &str = r#"
WITH changed AS (
    UPDATE webhook.endpoints SET state = $2, state_reason = $3, state_changed_at = now(), updated_at = now()
    WHERE id = $1
    RETURNING id
)
SELECT webhook.operational_event($4, id, $5) FROM changed WHERE $4::text IS NOT NULL
"#;
pub(super) const PARK_DELIVERIES: &str =
    "UPDATE webhook.deliveries SET state = 'paused' WHERE endpoint_id = $1 AND state = 'pending'";
pub(super) const UNPARK_DELIVERIES: &str =
    "UPDATE webhook.deliveries SET state = 'pending' WHERE endpoint_id = $1 AND state = 'paused'";
pub(super) const LOCK_ENDPOINT: &str = "SELECT id FROM webhook.endpoints WHERE id = $1 FOR UPDATE";
pub(super) const BACKLOG: &str = "SELECT count(*) FROM webhook.deliveries WHERE endpoint_id = $1";
pub(super) const DELETE_DELIVERIES: &str = "DELETE FROM webhook.deliveries WHERE endpoint_id = $1";
pub(super) const DELETE_ENDPOINT: &str = "DELETE FROM webhook.endpoints WHERE id = $1";
pub(super) const EXPIRY: &str = "SELECT now() + make_interval(secs => $1)";
pub(super) const EXPIRE_SECRETS: &str =
    "UPDATE webhook.endpoint_secrets SET expires_at = least(coalesce(expires_at, $2), $2) WHERE endpoint_id = $1";
pub(super) const INSERT_SECRET: &str =
    "INSERT INTO webhook.endpoint_secrets (endpoint_id, key_id, ciphertext) VALUES ($1, $2, $3)";
pub(super) const INSERT_HEADER: &str =
    "INSERT INTO webhook.endpoint_headers (endpoint_id, key_id, ciphertext, name) VALUES ($1, $2, $3, $4)";
pub(super) const INSERT_IDENTITY: &str =
    "INSERT INTO webhook.endpoint_client_identities (endpoint_id, key_id, ciphertext) VALUES ($1, $2, $3)";

/// The channel is `engine::wake`'s; the payload the endpoint's id.
pub(super) const NOTIFY_CHANGED: &str = "SELECT pg_notify('webhook_endpoints', $1::uuid::text)";

/// Every statement of endpoint administration, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("notify_changed", NOTIFY_CHANGED),
    ("insert_endpoint", INSERT_ENDPOINT),
    ("delete_identity", DELETE_IDENTITY),
    ("delete_headers", DELETE_HEADERS),
    ("update_endpoint", UPDATE_ENDPOINT),
    ("lock_state", LOCK_STATE),
    ("set_state", SET_STATE),
    ("park_deliveries", PARK_DELIVERIES),
    ("unpark_deliveries", UNPARK_DELIVERIES),
    ("lock_endpoint", LOCK_ENDPOINT),
    ("backlog", BACKLOG),
    ("delete_deliveries", DELETE_DELIVERIES),
    ("delete_endpoint", DELETE_ENDPOINT),
    ("expiry", EXPIRY),
    ("expire_secrets", EXPIRE_SECRETS),
    ("insert_secret", INSERT_SECRET),
    ("insert_header", INSERT_HEADER),
    ("insert_identity", INSERT_IDENTITY),
];

//! What operators read about endpoints: the list, and `endpoint show`'s health view.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::policy::states::{CircuitState, EndpointState};

/// An endpoint as listed.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EndpointSummary {
    pub id: Uuid,
    pub application_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub state: EndpointState,
    pub state_reason: Option<String>,
    pub ordered: bool,
    pub created_at: DateTime<Utc>,
    pub backlog: i64,
}

const LIST: &str = r#"
SELECT e.id, e.application_id, e.url, e.event_types, e.description, e.state, e.state_reason, e.ordered, e.created_at,
       (SELECT count(*) FROM webhook.deliveries d WHERE d.endpoint_id = e.id) AS backlog
FROM webhook.endpoints e
WHERE ($1::uuid IS NULL OR e.application_id = $1)
ORDER BY e.created_at, e.id
"#;

/// Every endpoint (of `application`, if given) with its backlog.
///
/// # Errors
/// The database error.
pub async fn list(pool: &PgPool, application: Option<Uuid>) -> Result<Vec<EndpointSummary>, sqlx::Error> {
    sqlx::query_as(LIST).bind(application).fetch_all(pool).await
}

/// An endpoint's settings and health.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EndpointDetail {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub state: EndpointState,
    pub state_reason: Option<String>,
    pub state_changed_at: DateTime<Utc>,
    pub rate_limit_per_second: Option<i32>,
    pub rate_limit_burst: Option<i32>,
    pub max_in_flight: Option<i32>,
    pub timeout_ms: Option<i32>,
    pub ordered: bool,
    /// The fleet's circuit: `closed`, `open` (until `circuit_open_until`) or `half_open`.
    pub circuit_state: CircuitState,
    pub circuit_open_until: Option<DateTime<Utc>>,
    pub header_names: Vec<String>,
    pub secrets: i64,
    pub secret_expiries: Vec<DateTime<Utc>>,
    /// Deliveries waiting (pending, running or paused).
    pub backlog: i64,
    pub paused_deliveries: i64,
    pub dead_letters: i64,
    pub attempts_last_hour: i64,
    pub delivered_last_hour: i64,
    /// delivered / attempts over the last hour; `None` without attempts.
    pub success_ratio_last_hour: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

const SHOW: &str = r#"
SELECT e.id, e.url, e.event_types, e.description, e.state, e.state_reason, e.state_changed_at,
       e.rate_limit_per_second, e.rate_limit_burst, e.max_in_flight, e.timeout_ms, e.ordered,
       e.circuit_state, e.circuit_open_until,
       coalesce((SELECT array_agg(h.name ORDER BY h.name) FROM webhook.endpoint_headers h WHERE h.endpoint_id = e.id), '{}') AS header_names,
       (SELECT count(*) FROM webhook.endpoint_secrets s WHERE s.endpoint_id = e.id AND (s.expires_at IS NULL OR s.expires_at > now())) AS secrets,
       coalesce((SELECT array_agg(s.expires_at ORDER BY s.expires_at) FROM webhook.endpoint_secrets s
                 WHERE s.endpoint_id = e.id AND s.expires_at > now()), '{}') AS secret_expiries,
       (SELECT count(*) FROM webhook.deliveries d WHERE d.endpoint_id = e.id) AS backlog,
       (SELECT count(*) FROM webhook.deliveries d WHERE d.endpoint_id = e.id AND d.state = 'paused') AS paused_deliveries,
       (SELECT count(*) FROM webhook.dead_letters x WHERE x.endpoint_id = e.id AND x.replayed_as IS NULL) AS dead_letters,
       a.attempts AS attempts_last_hour, a.delivered AS delivered_last_hour,
       CASE WHEN a.attempts > 0 THEN a.delivered::float8 / a.attempts END AS success_ratio_last_hour,
       l.error AS last_error, l.attempted_at AS last_error_at
FROM webhook.endpoints e
CROSS JOIN LATERAL (
    SELECT count(*) AS attempts, count(*) FILTER (WHERE outcome = 'delivered') AS delivered
    FROM webhook.delivery_attempts WHERE endpoint_id = e.id AND attempted_at > now() - interval '1 hour'
) a
LEFT JOIN LATERAL (
    SELECT error, attempted_at FROM webhook.delivery_attempts
    WHERE endpoint_id = e.id AND error IS NOT NULL ORDER BY attempted_at DESC LIMIT 1
) l ON true
WHERE e.id = $1
"#;

/// One endpoint's settings and health, or `None` if there is no such endpoint.
///
/// # Errors
/// The database error.
pub async fn show(pool: &PgPool, id: Uuid) -> Result<Option<EndpointDetail>, sqlx::Error> {
    sqlx::query_as(SHOW).bind(id).fetch_optional(pool).await
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("list", LIST), ("show", SHOW)];

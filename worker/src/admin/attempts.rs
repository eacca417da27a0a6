//! The attempt history of an application's messages and endpoints, newest first.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin::ids;
use crate::admin::page::{Page, PageRequest};
use crate::policy::states::DeliveryOutcome;

/// One recorded attempt.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub delivery_id: i64,
    pub attempt: i32,
    pub message_id: String,
    pub endpoint_id: Uuid,
    /// The endpoint's URL now (the history does not keep the URL of each attempt).
    pub url: String,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub outcome: DeliveryOutcome,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub forensics: Forensics,
}

/// What the history recorded about an attempt's connection (all empty for attempts made by a
/// worker older than migration 0006, and for attempts that sent nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Forensics {
    /// The address dialled (through the egress proxy: the one the proxy was asked to CONNECT to).
    pub remote_ip: Option<String>,
    pub dns_ms: Option<i32>,
    /// TCP (and CONNECT through the proxy), plus the TLS handshake when `tls_ms` is empty.
    pub connect_ms: Option<i32>,
    pub tls_ms: Option<i32>,
    pub first_byte_ms: Option<i32>,
    /// Sent over a pooled connection: no DNS, connect or TLS of its own.
    pub connection_reused: Option<bool>,
    pub via_proxy: Option<bool>,
    /// `name: value` lines, at most 1 KiB.
    pub response_headers: Option<String>,
}

/// The forensics columns, for the SELECT lists of this module and `deliveries`.
macro_rules! forensics_columns {
    ($a:literal) => {
        concat!(
            "host(",
            $a,
            ".remote_ip) AS remote_ip, ",
            $a,
            ".dns_ms, ",
            $a,
            ".connect_ms, ",
            $a,
            ".tls_ms, ",
            $a,
            ".first_byte_ms, ",
            $a,
            ".connection_reused, ",
            $a,
            ".via_proxy, ",
            $a,
            ".response_headers"
        )
    };
}
pub(crate) use forensics_columns;

impl Attempt {
    /// `atmpt_<delivery>_<attempt>`.
    pub fn public_id(&self) -> String {
        ids::attempt_id(self.delivery_id, self.attempt)
    }
}

// `$2`/`$3` select by message or by endpoint; `$4`/`$5` are the iterator's attempt.
const LIST: &str = concat!(
    r#"
SELECT a.delivery_id, a.attempt, a.message_id, a.endpoint_id, e.url, a.attempted_at, a.duration_ms,
       a.outcome, a.status_code, a.error, a.response_excerpt, "#,
    forensics_columns!("a"),
    r#"
FROM webhook.delivery_attempts a
JOIN webhook.endpoints e ON e.id = a.endpoint_id
WHERE e.application_id = $1
  AND ($2::text IS NULL OR a.message_id = $2)
  AND ($3::uuid IS NULL OR a.endpoint_id = $3)
  AND ($4::bigint IS NULL OR (a.attempted_at, a.delivery_id, a.attempt) <
       (SELECT p.attempted_at, p.delivery_id, p.attempt FROM webhook.delivery_attempts p
        WHERE p.delivery_id = $4 AND p.attempt = $5 LIMIT 1))
ORDER BY a.attempted_at DESC, a.delivery_id DESC, a.attempt DESC
LIMIT $6
"#
);

/// What to list attempts of.
#[derive(Debug, Clone, Copy)]
pub enum Of<'a> {
    Message(&'a str),
    Endpoint(Uuid),
}

/// A page of `application`'s attempts of one message or one endpoint.
///
/// # Errors
/// The database error.
pub async fn list(
    pool: &PgPool,
    application: Uuid,
    of: Of<'_>,
    page: &PageRequest,
) -> Result<Page<Attempt>, sqlx::Error> {
    let (message, endpoint) = match of {
        Of::Message(id) => (Some(id), None),
        Of::Endpoint(id) => (None, Some(id)),
    };
    let after = page.iterator.as_deref().and_then(ids::parse_attempt);
    let rows: Vec<Attempt> = sqlx::query_as(LIST)
        .bind(application)
        .bind(message)
        .bind(endpoint)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    Ok(Page::of(rows, page, Attempt::public_id))
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("list", LIST)];

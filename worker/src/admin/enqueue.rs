//! Enqueueing an event through the producers' own SQL function, `webhook.enqueue()`: the same
//! statement a producer runs in its transaction, so the CLI takes exactly their path.

use sqlx::PgPool;
use uuid::Uuid;

/// Why an event was not enqueued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Payload(serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An event to fan out.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub event_type: &'a str,
    /// JSON, sent byte for byte.
    pub payload: &'a str,
    /// A key seen before makes the call a no-op.
    pub idempotency_key: Option<&'a str>,
    /// Deliver to this endpoint only.
    pub endpoint: Option<Uuid>,
    /// The application (id or uid); default: the endpoint's, else the default application.
    pub app: Option<&'a str>,
}

/// What `webhook.enqueue()` did.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Enqueued {
    pub message_id: String,
    /// Deliveries created (one per subscribed endpoint).
    pub deliveries: i32,
    /// The idempotency key was seen before: nothing was enqueued.
    pub duplicate: bool,
}

const ENQUEUE: &str = "SELECT message_id, deliveries, duplicate FROM webhook.enqueue($1, $2::json, $3, $4, $5)";

/// Whether `payload` is JSON (the database would refuse it otherwise, with a vaguer message).
///
/// # Errors
/// [`Error::Payload`] with the parser's position and reason.
pub fn check_payload(payload: &str) -> Result<(), Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(payload).map(|_| ()).map_err(Error::Payload)
}

/// Fans `event` out to every active endpoint subscribed to its type (or to its one endpoint).
///
/// # Errors
/// [`Error::Payload`] for a payload that is not JSON (nothing is sent to the database), or the
/// database error.
pub async fn enqueue(pool: &PgPool, event: &Event<'_>) -> Result<Enqueued, Error> {
    check_payload(event.payload)?;
    Ok(sqlx::query_as(ENQUEUE)
        .bind(event.event_type)
        .bind(event.payload)
        .bind(event.idempotency_key)
        .bind(event.endpoint)
        .bind(event.app)
        .fetch_one(pool)
        .await?)
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("enqueue", ENQUEUE)];

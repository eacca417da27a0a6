//! Messages of an application: send one (through `webhook.enqueue()`, the SQL producers' own path,
//! so both are fanned out and signed identically), read one, list them, resend one to an
//! endpoint. Messages come from the message store, which keeps them for
//! `WEBHOOK_MESSAGE_RETENTION`; a plain `INSERT` into the queue has no stored message.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin::ids;
use crate::admin::page::{Page, PageRequest};

/// Why a message operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no message {0} in this application")]
    NotFound(String),
    #[error("no endpoint {0} in this application")]
    EndpointNotFound(String),
    #[error("the payload is not valid JSON")]
    Payload(#[source] serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub event_type: &'a str,
    /// JSON, signed and sent byte for byte.
    pub payload: &'a str,
    /// The producer's id for the event (Svix `eventId`).
    pub event_id: Option<&'a str>,
    /// A key seen before in this application makes the call return the first message.
    pub idempotency_key: Option<&'a str>,
}

/// A stored message.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Message {
    pub id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    /// The payload's exact text.
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// What sending did.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    /// Deliveries created (0 for a duplicate).
    pub deliveries: i32,
    /// The idempotency key was seen before: `message` is the first one.
    pub duplicate: bool,
}

#[derive(sqlx::FromRow)]
struct SentRow {
    message_id: String,
    deliveries: i32,
    duplicate: bool,
    event_type: Option<String>,
    event_id: Option<String>,
    payload: Option<String>,
    created_at: DateTime<Utc>,
}

// The message row a fresh call inserts is not visible to this statement's own join; its fields
// are the arguments, and its created_at is now() (the same transaction timestamp).
const SEND: &str = r#"
SELECT e.message_id, e.deliveries, e.duplicate, m.event_type, m.event_id, m.payload::text AS payload,
       coalesce(m.created_at, now()) AS created_at
FROM webhook.enqueue($1, $2::json, $3, NULL, $4, $5) e
LEFT JOIN webhook.messages m ON e.duplicate AND m.id = e.message_id
"#;

const GET: &str = r#"
SELECT id, event_type, event_id, payload::text AS payload, created_at
FROM webhook.messages WHERE id = $1 AND application_id = $2
"#;

const LIST: &str = r#"
SELECT id, event_type, event_id, payload::text AS payload, created_at
FROM webhook.messages
WHERE application_id = $1
  AND ($2::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM webhook.messages WHERE id = $2 AND application_id = $1))
  AND ($3::text[] IS NULL OR event_type = ANY ($3))
ORDER BY created_at DESC, id DESC
LIMIT $4
"#;

const RESEND: &str = r#"
INSERT INTO webhook.deliveries (message_id, endpoint_id, event_type, payload)
SELECT m.id, e.id, m.event_type, m.payload
FROM webhook.messages m JOIN webhook.endpoints e ON e.application_id = m.application_id
WHERE m.id = $1 AND m.application_id = $2 AND e.id = $3
RETURNING id
"#;

const ENDPOINT_IN_APP: &str = "SELECT id FROM webhook.endpoints WHERE id = $1 AND application_id = $2";

/// Sends `message` to `application`'s subscribed endpoints.
///
/// # Errors
/// [`Error::Payload`] for a payload that is not JSON (nothing is sent), or the database error.
pub async fn send(pool: &PgPool, application: Uuid, message: &NewMessage<'_>) -> Result<Sent, Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(message.payload).map_err(Error::Payload)?;
    let row: SentRow = sqlx::query_as(SEND)
        .bind(message.event_type)
        .bind(message.payload)
        .bind(message.idempotency_key)
        .bind(ids::app_id(application))
        .bind(message.event_id)
        .fetch_one(pool)
        .await?;
    let stored = Message {
        id: row.message_id,
        event_type: row.event_type.unwrap_or_else(|| message.event_type.to_owned()),
        event_id: if row.duplicate { row.event_id } else { message.event_id.map(str::to_owned) },
        payload: row.payload.unwrap_or_else(|| message.payload.to_owned()),
        created_at: row.created_at,
    };
    Ok(Sent { message: stored, deliveries: row.deliveries, duplicate: row.duplicate })
}

/// Message `id` of `application`.
///
/// # Errors
/// [`Error::NotFound`] (also when it belongs to another application), or the database error.
pub async fn get(pool: &PgPool, application: Uuid, id: &str) -> Result<Message, Error> {
    let found: Option<Message> = sqlx::query_as(GET).bind(id).bind(application).fetch_optional(pool).await?;
    found.ok_or_else(|| Error::NotFound(id.to_owned()))
}

/// A page of `application`'s messages, newest first, optionally of some event types only.
///
/// # Errors
/// The database error.
pub async fn list(
    pool: &PgPool,
    application: Uuid,
    event_types: Option<&[String]>,
    page: &PageRequest,
) -> Result<Page<Message>, Error> {
    let rows: Vec<Message> = sqlx::query_as(LIST)
        .bind(application)
        .bind(page.iterator.as_deref())
        .bind(event_types)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    Ok(Page::of(rows, page, |m| m.id.clone()))
}

/// Sends message `id` of `application` again to `endpoint` (a new delivery, same `webhook-id`).
/// Returns the new delivery's id.
///
/// # Errors
/// [`Error::NotFound`], [`Error::EndpointNotFound`], or the database error.
pub async fn resend(pool: &PgPool, application: Uuid, id: &str, endpoint: Uuid) -> Result<i64, Error> {
    let inserted: Option<i64> =
        sqlx::query_scalar(RESEND).bind(id).bind(application).bind(endpoint).fetch_optional(pool).await?;
    if let Some(delivery) = inserted {
        return Ok(delivery);
    }
    let endpoint_known: Option<Uuid> =
        sqlx::query_scalar(ENDPOINT_IN_APP).bind(endpoint).bind(application).fetch_optional(pool).await?;
    match endpoint_known {
        Some(_) => Err(Error::NotFound(id.to_owned())),
        None => Err(Error::EndpointNotFound(ids::endpoint_id(endpoint))),
    }
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] =
    &[("send", SEND), ("get", GET), ("list", LIST), ("resend", RESEND), ("endpoint_in_app", ENDPOINT_IN_APP)];

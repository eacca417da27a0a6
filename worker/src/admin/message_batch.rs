//! Sending many messages in one statement and one commit: what the management API does with
//! the messages that arrive while an earlier batch is being written, so that a busy API pays one
//! round trip, one plan and one WAL flush per batch instead of per message.
//!
//! The statement applies `webhook.enqueue()`'s rules (schema/migrations/0005): each message is
//! stored once in the message store and fanned out to its application's endpoints that are not
//! disabled and are subscribed to its type, in one statement. Messages with an idempotency key
//! are not batched: they take [`super::messages::send`], whose key check needs the row lock of
//! `webhook.enqueue()`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin::ids::{self, Kind, Scope};
use crate::admin::messages::{Error, Message, Sent};

/// One message for the application `reference` names (`app_…`, a uuid or a uid), sent for a
/// caller of `scope`.
#[derive(Debug, Clone)]
pub struct Batched {
    pub reference: String,
    pub scope: Scope,
    pub event_type: String,
    /// JSON, signed and sent byte for byte.
    pub payload: String,
    pub event_id: Option<String>,
}

// Deliveries are inserted in the batch's order, so a client that waits for each answer before
// sending the next sees its messages queued in its order. An application the caller may not see
// matches no row, like an unknown one.
const SEND_BATCH: &str = r#"
WITH input AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[])
        WITH ORDINALITY AS i(app_id, app_uid, scope, msg_id, event_type, payload, event_id, n)
), target AS (
    SELECT i.n, i.msg_id, i.event_type, i.payload::json AS payload, i.event_id, a.id AS application_id
    FROM input i
    JOIN webhook.applications a
      ON a.id = coalesce(i.app_id, (SELECT b.id FROM webhook.applications b WHERE b.uid = i.app_uid))
    WHERE i.scope IS NULL OR a.id = i.scope
), stored AS (
    INSERT INTO webhook.messages (id, application_id, event_type, event_id, payload)
    SELECT msg_id, application_id, event_type, event_id, payload FROM target
), subscribers AS (
    -- The batch's applications' endpoints, read once per batch. Joined per message instead, the
    -- planner scanned every endpoint of every tenant once per message: with 1,100 endpoints in
    -- the database, ingest for one application fell from ~12,000 to ~4,000 messages/s.
    SELECT e.id, e.application_id, e.event_types
    FROM webhook.endpoints e
    WHERE e.application_id = ANY (ARRAY(SELECT DISTINCT t.application_id FROM target t))
      AND e.state <> 'disabled'
), fanned AS (
    INSERT INTO webhook.deliveries (message_id, endpoint_id, event_type, payload)
    SELECT t.msg_id, e.id, t.event_type, t.payload
    FROM target t
    JOIN subscribers e ON e.application_id = t.application_id
    WHERE cardinality(e.event_types) = 0 OR t.event_type = ANY (e.event_types)
    ORDER BY t.n, e.id
    RETURNING message_id
)
SELECT t.msg_id, coalesce(c.deliveries, 0)::integer AS deliveries, now() AS created_at
FROM target t
LEFT JOIN (SELECT message_id, count(*) AS deliveries FROM fanned GROUP BY message_id) c ON c.message_id = t.msg_id
"#;

#[derive(sqlx::FromRow)]
struct SentRow {
    msg_id: String,
    deliveries: i32,
    created_at: DateTime<Utc>,
}

/// Sends every message of `batch` in one statement. Returns, in `batch`'s order, what was sent,
/// or `None` for a message whose application does not exist or is outside its caller's scope
/// (nothing is stored for it).
///
/// # Errors
/// The database error, for the whole batch (nothing of it is stored).
pub async fn send_batch(pool: &PgPool, batch: &[Batched]) -> Result<Vec<Option<Sent>>, Error> {
    let ids: Vec<String> = batch.iter().map(|_| format!("msg_{}", Uuid::new_v4().simple())).collect();
    let (mut app_ids, mut app_uids) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
    for message in batch {
        // A NUL byte cannot be bound as text; such a reference names no application.
        let reference = message.reference.replace('\0', "\u{fffd}");
        match ids::parse(Kind::Application, &reference) {
            Some(id) => (app_ids.push(Some(id)), app_uids.push(None)),
            None => (app_ids.push(None), app_uids.push(Some(reference))),
        };
    }
    let rows: Vec<SentRow> = sqlx::query_as(SEND_BATCH)
        .bind(&app_ids)
        .bind(&app_uids)
        .bind(batch.iter().map(|m| m.scope.application()).collect::<Vec<_>>())
        .bind(&ids)
        .bind(batch.iter().map(|m| m.event_type.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|m| m.event_id.as_deref()).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
    let mut sent: std::collections::HashMap<String, SentRow> =
        rows.into_iter().map(|r| (r.msg_id.clone(), r)).collect();
    Ok(batch
        .iter()
        .zip(ids)
        .map(|(message, id)| {
            sent.remove(&id).map(|row| Sent {
                message: Message {
                    id: row.msg_id,
                    event_type: message.event_type.clone(),
                    event_id: message.event_id.clone(),
                    payload: message.payload.clone(),
                    created_at: row.created_at,
                },
                deliveries: row.deliveries,
                duplicate: false,
            })
        })
        .collect())
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("send_batch", SEND_BATCH)];

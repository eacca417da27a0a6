//! What operators do with deliveries: list them, look at one with its attempts, replay dead
//! letters. A replay is a new delivery with the same message id (`webhook-id`); the dead letter
//! records what replaced it, so replaying twice is a no-op.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin::attempts::{Forensics, forensics_columns};

/// Why a delivery command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no delivery with id {0}")]
    NotFound(i64),
    #[error("delivery {0} was delivered; delivered payloads are not kept, so it cannot be replayed")]
    AlreadyDelivered(i64),
    #[error("delivery {id} is still in the queue ({state}); there is nothing to replay")]
    StillQueued { id: i64, state: String },
    #[error("endpoint {0} is disabled; enable it before replaying its deliveries")]
    EndpointDisabled(Uuid),
    #[error("state must be one of pending, scheduled, running, paused, dead, replayed, delivered; got {0:?}")]
    State(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Filters of `delivery list`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub endpoint: Option<Uuid>,
    /// Only deliveries to this application's endpoints.
    pub application: Option<Uuid>,
    pub state: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// One listed delivery. `at` is when it was enqueued, or when it was delivered for `delivered`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Listed {
    pub id: i64,
    pub message_id: String,
    pub endpoint_id: Uuid,
    pub event_type: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

const STATES: &[&str] = &["pending", "scheduled", "running", "paused", "dead", "replayed", "delivered"];

const LIST: &str = r#"
SELECT * FROM (
    SELECT id, message_id, endpoint_id, event_type,
           CASE WHEN state = 'pending' AND run_at > now() THEN 'scheduled' ELSE state END AS state,
           attempt AS attempts, created_at AS at, run_at AS next_attempt_at, last_error
    FROM webhook.deliveries
    UNION ALL
    SELECT delivery_id, message_id, endpoint_id, event_type,
           CASE WHEN replayed_as IS NULL THEN 'dead' ELSE 'replayed' END, attempts, enqueued_at, NULL, last_error
    FROM webhook.dead_letters
    UNION ALL
    SELECT delivery_id, message_id, endpoint_id, NULL, 'delivered', attempt, attempted_at, NULL, NULL
    FROM webhook.delivery_attempts WHERE outcome = 'delivered'
) x
WHERE ($1::uuid IS NULL OR endpoint_id = $1)
  AND ($2::text IS NULL OR state = $2)
  AND ($3::text IS NULL OR event_type = $3)
  AND ($4::timestamptz IS NULL OR at >= $4)
  AND ($5::timestamptz IS NULL OR at < $5)
  AND ($7::uuid IS NULL OR endpoint_id IN (SELECT e.id FROM webhook.endpoints e WHERE e.application_id = $7))
ORDER BY at DESC, id DESC
LIMIT $6
"#;

/// Deliveries matching `filter`, newest first.
///
/// # Errors
/// [`Error::State`] for an unknown state, or the database error.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Listed>, Error> {
    if let Some(state) = &filter.state
        && !STATES.contains(&state.as_str())
    {
        return Err(Error::State(state.clone()));
    }
    Ok(sqlx::query_as(LIST)
        .bind(filter.endpoint)
        .bind(&filter.state)
        .bind(&filter.event_type)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.limit)
        .bind(filter.application)
        .fetch_all(pool)
        .await?)
}

/// One attempt of a delivery.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AttemptRecord {
    pub attempt: i32,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub worker_id: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub forensics: Forensics,
}

/// A delivery with its history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Detail {
    pub id: i64,
    pub message_id: String,
    pub endpoint_id: Uuid,
    pub event_type: Option<String>,
    pub state: String,
    /// `None` once delivered (payloads of delivered deliveries are not kept).
    pub payload_bytes: Option<i64>,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub replayed_as: Option<i64>,
    pub attempts: Vec<AttemptRecord>,
}

type Current = (
    String,
    Uuid,
    Option<String>,
    String,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<i64>,
);

const CURRENT: &str = r#"
SELECT message_id, endpoint_id, event_type,
       CASE WHEN state = 'pending' AND run_at > now() THEN 'scheduled' ELSE state END,
       octet_length(payload::text)::bigint, created_at, run_at, last_error, NULL::bigint
FROM webhook.deliveries WHERE id = $1
UNION ALL
SELECT message_id, endpoint_id, event_type, CASE WHEN replayed_as IS NULL THEN 'dead' ELSE 'replayed' END,
       octet_length(payload::text)::bigint, enqueued_at, NULL, last_error, replayed_as
FROM webhook.dead_letters WHERE delivery_id = $1
"#;

const ATTEMPTS: &str = concat!(
    "SELECT a.attempt, a.attempted_at, a.duration_ms, a.outcome, a.status_code, a.error, a.response_excerpt, \
     a.worker_id, ",
    forensics_columns!("a"),
    " FROM webhook.delivery_attempts a WHERE a.delivery_id = $1 ORDER BY a.attempted_at, a.attempt"
);

/// The delivery `id` with every recorded attempt.
///
/// # Errors
/// [`Error::NotFound`] or the database error.
pub async fn show(pool: &PgPool, id: i64) -> Result<Detail, Error> {
    let current: Option<Current> = sqlx::query_as(CURRENT).bind(id).fetch_optional(pool).await?;
    let attempts: Vec<AttemptRecord> = sqlx::query_as(ATTEMPTS).bind(id).fetch_all(pool).await?;
    if let Some((
        message_id,
        endpoint_id,
        event_type,
        state,
        payload_bytes,
        enqueued_at,
        next,
        last_error,
        replayed_as,
    )) = current
    {
        return Ok(Detail {
            id,
            message_id,
            endpoint_id,
            event_type,
            state,
            payload_bytes,
            enqueued_at,
            next_attempt_at: next,
            last_error,
            replayed_as,
            attempts,
        });
    }
    let delivered: Option<(String, Uuid)> = sqlx::query_as(DELIVERED).bind(id).fetch_optional(pool).await?;
    let (message_id, endpoint_id) = delivered.ok_or(Error::NotFound(id))?;
    Ok(Detail {
        id,
        message_id,
        endpoint_id,
        event_type: None,
        state: "delivered".into(),
        payload_bytes: None,
        enqueued_at: None,
        next_attempt_at: None,
        last_error: None,
        replayed_as: None,
        attempts,
    })
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Replayed {
    /// (dead letter id, new delivery id)
    pub replayed: Vec<(i64, i64)>,
    /// Dead letters that had been replayed before (left alone).
    pub already_replayed: Vec<(i64, i64)>,
    /// Dead letters skipped because their endpoint is disabled or gone.
    pub skipped_disabled: Vec<i64>,
}

/// Replays the dead letter `id`.
///
/// # Errors
/// [`Error::NotFound`], [`Error::AlreadyDelivered`], [`Error::StillQueued`],
/// [`Error::EndpointDisabled`] or the database error.
pub async fn replay_one(pool: &PgPool, id: i64) -> Result<Replayed, Error> {
    let detail = show(pool, id).await?;
    match detail.state.as_str() {
        "delivered" => return Err(Error::AlreadyDelivered(id)),
        "dead" | "replayed" => {}
        state => return Err(Error::StillQueued { id, state: state.to_owned() }),
    }
    let result = replay(pool, &[id]).await?;
    if let Some(skipped) = result.skipped_disabled.first() {
        debug_assert_eq!(*skipped, id);
        return Err(Error::EndpointDisabled(detail.endpoint_id));
    }
    Ok(result)
}

/// Replays the dead letters of `endpoint` and/or failed in `[since, until)`.
///
/// # Errors
/// The database error.
pub async fn replay_matching(
    pool: &PgPool,
    endpoint: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Replayed, Error> {
    let ids: Vec<i64> =
        sqlx::query_scalar(DEAD_LETTER_IDS).bind(endpoint).bind(since).bind(until).fetch_all(pool).await?;
    let mut total = Replayed::default();
    for chunk in ids.chunks(500) {
        let part = replay(pool, chunk).await?;
        total.replayed.extend(part.replayed);
        total.already_replayed.extend(part.already_replayed);
        total.skipped_disabled.extend(part.skipped_disabled);
    }
    Ok(total)
}

/// Replays dead letters `ids` in one transaction; each row is locked, so concurrent replays of
/// the same dead letter create one delivery.
async fn replay(pool: &PgPool, ids: &[i64]) -> Result<Replayed, Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(i64, Option<i64>, Option<String>)> =
        sqlx::query_as(LOCK_DEAD_LETTERS).bind(ids).fetch_all(&mut *tx).await?;
    let mut result = Replayed::default();
    for (id, replayed_as, endpoint_state) in rows {
        if let Some(previous) = replayed_as {
            result.already_replayed.push((id, previous));
            continue;
        }
        if endpoint_state.as_deref().is_none_or(|state| state == "disabled") {
            result.skipped_disabled.push(id);
            continue;
        }
        let new_id: i64 = sqlx::query_scalar(REPLAY).bind(id).fetch_one(&mut *tx).await?;
        result.replayed.push((id, new_id));
    }
    tx.commit().await?;
    Ok(result)
}

const DELIVERED: &str = "SELECT message_id, endpoint_id FROM webhook.delivery_attempts WHERE delivery_id = $1 AND outcome = 'delivered' LIMIT 1";
const DEAD_LETTER_IDS: &str = "SELECT delivery_id FROM webhook.dead_letters WHERE ($1::uuid IS NULL OR endpoint_id = $1) AND ($2::timestamptz IS NULL OR failed_at >= $2) AND ($3::timestamptz IS NULL OR failed_at < $3) ORDER BY delivery_id";
const LOCK_DEAD_LETTERS: &str = "SELECT x.delivery_id, x.replayed_as, e.state FROM webhook.dead_letters x LEFT JOIN webhook.endpoints e ON e.id = x.endpoint_id WHERE x.delivery_id = ANY($1) ORDER BY x.delivery_id FOR UPDATE OF x";
const REPLAY: &str = "WITH new AS (INSERT INTO webhook.deliveries (message_id, endpoint_id, event_type, payload) SELECT message_id, endpoint_id, event_type, payload FROM webhook.dead_letters WHERE delivery_id = $1 RETURNING id) UPDATE webhook.dead_letters SET replayed_as = new.id, replayed_at = now() FROM new WHERE delivery_id = $1 RETURNING new.id";

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("list", LIST),
    ("current", CURRENT),
    ("attempts", ATTEMPTS),
    ("delivered", DELIVERED),
    ("dead_letter_ids", DEAD_LETTER_IDS),
    ("lock_dead_letters", LOCK_DEAD_LETTERS),
    ("replay", REPLAY),
];

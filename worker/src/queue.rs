//! All delivery-queue SQL: one function per statement, each stating its locking and fencing
//! invariant. This module makes no decisions; `attempt` and `retry` do.
//!
//! Invariants:
//! - A claim commits before any HTTP request is made; no transaction is ever open during HTTP.
//! - Every claim and every lease reap bumps `lease_token`. A completion presents the token it was
//!   claimed with and applies only to a row still `running` under that token, so a stale worker
//!   (its lease expired and was reaped or re-claimed) can never overwrite a newer attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A delivery this worker holds a lease on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub message_id: String,
    pub endpoint_id: Uuid,
    pub event_type: String,
    /// 1-based number of the attempt about to be made.
    pub attempt: i32,
    pub lease_token: i64,
    pub created_at: DateTime<Utc>,
    pub payload_bytes: i64,
    /// `None` when the payload is larger than the limit given to [`claim_batch`] (not fetched).
    pub payload: Option<String>,
}

const CLAIM_BATCH: &str = r#"
WITH ready AS MATERIALIZED (
    SELECT d.id
    FROM webhook.deliveries d
    WHERE d.state = 'pending' AND d.run_at <= now()
      -- FIFO endpoints: only the oldest delivery of the endpoint (its head) is claimable, so one is
      -- in flight at a time and a failing head, rescheduled, blocks the ones behind it. Unordered
      -- endpoints pay one primary-key probe of the small endpoints table.
      AND NOT EXISTS (
          SELECT 1 FROM webhook.endpoints e
          WHERE e.id = d.endpoint_id AND e.ordered
            AND d.id <> (SELECT min(h.id) FROM webhook.deliveries h WHERE h.endpoint_id = d.endpoint_id)
      )
    ORDER BY d.run_at, d.id
    LIMIT $1
    FOR NO KEY UPDATE OF d SKIP LOCKED
)
UPDATE webhook.deliveries d
SET state = 'running',
    attempt = d.attempt + 1,
    lease_token = d.lease_token + 1,
    leased_by = $2,
    lease_expires_at = now() + make_interval(secs => $3)
FROM ready
WHERE d.id = ready.id
RETURNING d.id, d.message_id, d.endpoint_id, d.event_type, d.attempt, d.lease_token, d.created_at,
          octet_length(d.payload::text)::bigint AS payload_bytes,
          CASE WHEN octet_length(d.payload::text) <= $4 THEN d.payload::text END AS payload
"#;

/// Claims up to `limit` ready deliveries, oldest `run_at` first, leasing them to `worker_id` for
/// `lease`. Rows locked by another claimer are skipped, so concurrent workers never claim the same
/// row. Payloads over `max_payload_bytes` are not fetched.
///
/// # Errors
/// The database error; nothing was claimed then.
pub async fn claim_batch(
    pool: &PgPool,
    worker_id: &str,
    limit: usize,
    lease: Duration,
    max_payload_bytes: usize,
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    sqlx::query_as(CLAIM_BATCH)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(worker_id)
        .bind(lease.as_secs_f64())
        .bind(i64::try_from(max_payload_bytes).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
}

/// What a completion does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delete the row; the attempt history keeps the record.
    Delivered,
    /// Back to pending at `run_at`, the attempt spent.
    Retry,
    /// Move to the dead letters.
    Dead,
    /// Back to pending at `run_at` with the attempt given back (nothing was sent, or the worker is
    /// shutting down). Not recorded in the attempt history.
    Release,
    /// Parked as `paused` with the attempt given back (its endpoint is paused). Not recorded in the
    /// attempt history.
    Hold,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Dead => "dead",
            Self::Release => "release",
            Self::Hold => "hold",
        }
    }
}

/// The result of one attempt, ready to persist.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: i64,
    pub lease_token: i64,
    pub message_id: String,
    pub endpoint_id: Uuid,
    pub attempt: i32,
    pub action: Action,
    /// For `Retry` and `Release`.
    pub run_at: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// Bounded outcome label for the history (`delivered`, `retried`, `dead`, `failed`, `refused`…).
    pub outcome: &'static str,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// Set when the receiver asked to be disabled (410): the reason recorded on the endpoint.
    pub disable_endpoint: Option<String>,
}

const COMPLETE_BATCH: &str = r#"
WITH r AS (
    SELECT *
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::integer[],
                $7::uuid[], $8::text[], $9::integer[], $10::timestamptz[], $11::integer[], $12::text[],
                $13::text[], $14::text[])
      AS r(id, lease_token, action, run_at, error, status_code, endpoint_id, message_id, attempt,
           attempted_at, duration_ms, outcome, response_excerpt, disable_reason)
), delivered AS (
    DELETE FROM webhook.deliveries d USING r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action = 'delivered'
    RETURNING d.id
), retried AS (
    UPDATE webhook.deliveries d
    SET state = 'pending', run_at = r.run_at, last_error = r.error, last_status = r.status_code,
        leased_by = NULL, lease_expires_at = NULL
    FROM r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action = 'retry'
    RETURNING d.id
), released AS (
    UPDATE webhook.deliveries d
    -- A hold parks the row only if the endpoint is still paused by the database's account (the
    -- worker's endpoint cache may be a moment behind a resume).
    SET state = CASE WHEN r.action = 'hold'
                      AND EXISTS (SELECT 1 FROM webhook.endpoints e WHERE e.id = d.endpoint_id AND e.state = 'paused')
                     THEN 'paused' ELSE 'pending' END,
        run_at = r.run_at, attempt = greatest(d.attempt - 1, 0), leased_by = NULL, lease_expires_at = NULL
    FROM r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action IN ('release', 'hold')
    RETURNING d.id
), dead AS (
    DELETE FROM webhook.deliveries d USING r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action = 'dead'
    RETURNING d.id, d.message_id, d.endpoint_id, d.event_type, d.payload, d.attempt, d.created_at,
              r.error, r.status_code
), buried AS (
    INSERT INTO webhook.dead_letters
        (delivery_id, message_id, endpoint_id, event_type, payload, attempts, enqueued_at, last_error, last_status)
    SELECT id, message_id, endpoint_id, event_type, payload, attempt, created_at,
           coalesce(error, 'no error recorded'), status_code
    FROM dead
    ON CONFLICT (delivery_id) DO NOTHING
), history AS (
    INSERT INTO webhook.delivery_attempts
        (delivery_id, message_id, endpoint_id, attempt, attempted_at, duration_ms, outcome, status_code,
         error, response_excerpt, worker_id)
    SELECT id, message_id, endpoint_id, attempt, attempted_at, duration_ms, outcome, status_code,
           error, response_excerpt, $15
    FROM r
    WHERE action NOT IN ('release', 'hold')
), disabled AS (
    UPDATE webhook.endpoints e
    SET state = 'disabled', state_reason = r.disable_reason, state_changed_at = now(), updated_at = now()
    FROM r
    WHERE e.id = r.endpoint_id AND r.disable_reason IS NOT NULL AND e.state <> 'disabled'
    RETURNING e.id
)
SELECT (SELECT count(*) FROM delivered) + (SELECT count(*) FROM retried)
     + (SELECT count(*) FROM released) + (SELECT count(*) FROM dead) AS applied
"#;

/// Applies a batch of completions in one statement and records every attempt (not releases) in
/// the history. Each row changes only if it is still `running` under the completion's lease token;
/// returns how many rows did (the rest were stale: their lease had expired).
///
/// # Errors
/// The database error; nothing was applied then, and the caller may retry the same batch.
pub async fn complete_batch(pool: &PgPool, worker_id: &str, batch: &[Completion]) -> Result<i64, sqlx::Error> {
    let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
    let tokens: Vec<i64> = batch.iter().map(|c| c.lease_token).collect();
    let actions: Vec<&str> = batch.iter().map(|c| c.action.as_str()).collect();
    let run_ats: Vec<DateTime<Utc>> = batch.iter().map(|c| c.run_at).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|c| c.error.as_deref()).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|c| c.status_code).collect();
    let endpoints: Vec<Uuid> = batch.iter().map(|c| c.endpoint_id).collect();
    let messages: Vec<&str> = batch.iter().map(|c| c.message_id.as_str()).collect();
    let attempts: Vec<i32> = batch.iter().map(|c| c.attempt).collect();
    let attempted: Vec<DateTime<Utc>> = batch.iter().map(|c| c.attempted_at).collect();
    let durations: Vec<i32> = batch.iter().map(|c| c.duration_ms).collect();
    let outcomes: Vec<&str> = batch.iter().map(|c| c.outcome).collect();
    let excerpts: Vec<Option<&str>> = batch.iter().map(|c| c.response_excerpt.as_deref()).collect();
    let disables: Vec<Option<&str>> = batch.iter().map(|c| c.disable_endpoint.as_deref()).collect();
    sqlx::query_scalar(COMPLETE_BATCH)
        .bind(ids)
        .bind(tokens)
        .bind(actions)
        .bind(run_ats)
        .bind(errors)
        .bind(statuses)
        .bind(endpoints)
        .bind(messages)
        .bind(attempts)
        .bind(attempted)
        .bind(durations)
        .bind(outcomes)
        .bind(excerpts)
        .bind(disables)
        .bind(worker_id)
        .fetch_one(pool)
        .await
}

const REAP_EXPIRED_LEASES: &str = r#"
WITH expired AS MATERIALIZED (
    SELECT id
    FROM webhook.deliveries
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR NO KEY UPDATE SKIP LOCKED
), requeued AS (
    UPDATE webhook.deliveries d
    SET state = 'pending', run_at = now(), lease_token = d.lease_token + 1,
        last_error = format('the lease of worker %s expired at %s before the attempt completed',
                            coalesce(d.leased_by, 'unknown'), d.lease_expires_at),
        leased_by = NULL, lease_expires_at = NULL
    FROM expired
    WHERE d.id = expired.id AND d.attempt < $2
    RETURNING d.id
), dead AS (
    DELETE FROM webhook.deliveries d USING expired
    WHERE d.id = expired.id AND d.attempt >= $2
    RETURNING d.id, d.message_id, d.endpoint_id, d.event_type, d.payload, d.attempt, d.created_at,
              format('the lease of worker %s expired during the last allowed attempt',
                     coalesce(d.leased_by, 'unknown')) AS error
), buried AS (
    INSERT INTO webhook.dead_letters
        (delivery_id, message_id, endpoint_id, event_type, payload, attempts, enqueued_at, last_error)
    SELECT id, message_id, endpoint_id, event_type, payload, attempt, created_at, error FROM dead
    ON CONFLICT (delivery_id) DO NOTHING
)
SELECT (SELECT count(*) FROM requeued) + (SELECT count(*) FROM dead)
"#;

/// Returns deliveries whose lease expired (their worker crashed or stalled) to the queue, at most
/// `limit` per call, bumping the lease token so the old holder can no longer complete them. A
/// delivery that already used its last attempt becomes a dead letter instead. Run by the leader.
///
/// # Errors
/// The database error; nothing was changed then.
pub async fn reap_expired_leases<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    limit: i64,
    max_attempts: u32,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(REAP_EXPIRED_LEASES)
        .bind(limit)
        .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
        .fetch_one(executor)
        .await
}

const UNPARK_RESUMED: &str = r#"
UPDATE webhook.deliveries d SET state = 'pending'
WHERE d.state = 'paused'
  AND NOT EXISTS (SELECT 1 FROM webhook.endpoints e WHERE e.id = d.endpoint_id AND e.state = 'paused')
"#;

/// Returns parked deliveries whose endpoint is no longer paused to the queue. `endpoint resume`
/// does this itself; this sweep, run by the leader, catches rows parked concurrently with the
/// resume by a worker whose endpoint cache was a moment behind. Returns how many rows moved.
///
/// # Errors
/// The database error.
pub async fn unpark_resumed<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(UNPARK_RESUMED).execute(executor).await?.rows_affected())
}

/// Every statement of this module, for the test that prepares them against the real schema.
pub const STATEMENTS: &[(&str, &str)] = &[
    ("claim_batch", CLAIM_BATCH),
    ("complete_batch", COMPLETE_BATCH),
    ("reap_expired_leases", REAP_EXPIRED_LEASES),
    ("unpark_resumed", UNPARK_RESUMED),
];

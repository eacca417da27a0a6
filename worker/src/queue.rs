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
    /// When it was due: with `id`, its position in the ready index (see [`ScanFrom`]).
    pub run_at: DateTime<Utc>,
    pub payload_bytes: i64,
    /// `None` when the payload is larger than the limit given to [`claim_batch`] (not fetched).
    pub payload: Option<String>,
}

const CLAIM_BATCH: &str = r#"
WITH ready AS MATERIALIZED (
    SELECT d.id
    FROM webhook.deliveries d
    WHERE d.state = 'pending' AND d.run_at <= now()
      -- Where the scan of the ready index starts (see ScanFrom): a seek, not a filter.
      AND (d.run_at, d.id) >= (coalesce($5::timestamptz, '-infinity'), coalesce($6::bigint, -9223372036854775808))
      -- One primary-key probe of the small endpoints table per candidate row decides two things:
      -- an endpoint whose circuit is not closed is skipped (except for its one probe delivery), and
      -- of a FIFO endpoint only the oldest delivery (its head) is claimable, so one is in flight at
      -- a time and a failing head, rescheduled, blocks the ones behind it. A row whose endpoint is
      -- unknown is claimable (and dead-lettered with the reason).
      -- It is a scalar subquery on purpose, not NOT EXISTS: Postgres turns NOT EXISTS into an anti
      -- join, which plans as a scan and sort of the whole queue (O(queue) per claim: 90 ms at 200k
      -- rows). A scalar subquery stays a per-row check on the ready index walked in order, so a
      -- claim reads about as many rows as it takes, whatever the backlog.
      AND (SELECT NOT ((e.circuit_state <> 'closed' AND d.id IS DISTINCT FROM e.circuit_probe_delivery)
                       OR (e.ordered AND d.id <> (SELECT min(h.id) FROM webhook.deliveries h
                                                  WHERE h.endpoint_id = d.endpoint_id)))
           FROM webhook.endpoints e WHERE e.id = d.endpoint_id) IS NOT FALSE
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
RETURNING d.id, d.message_id, d.endpoint_id, d.event_type, d.attempt, d.lease_token, d.created_at, d.run_at,
          octet_length(d.payload::text)::bigint AS payload_bytes,
          CASE WHEN octet_length(d.payload::text) <= $4 THEN d.payload::text END AS payload
"#;

/// Where a claim starts scanning the ready index, in its `(run_at, id)` order.
///
/// Every claimed row leaves a dead entry at the head of the ready index until vacuum removes it,
/// and a scan from the start steps over all of them: with millions of rows pending, autovacuum
/// takes minutes per pass and the dead head grows to hundreds of thousands of entries. A worker
/// therefore resumes where its previous batch began ([`ScanFrom::After`]) and starts from the
/// beginning ([`ScanFrom::Start`]) only now and then, so rows that became due behind its position
/// (a producer's long transaction, a closed circuit's backlog) wait at most until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanFrom {
    Start,
    /// At or after this `(run_at, id)`.
    After(DateTime<Utc>, i64),
}

/// A claimer's position in the ready index: where its next claim starts scanning. It follows the
/// claimer's own batches and goes back to the start every [`ScanPosition::REWIND`] and whenever a
/// claim comes back short. Pure: time comes in as an argument.
#[derive(Debug, Default)]
pub struct ScanPosition {
    from: Option<(DateTime<Utc>, i64)>,
    rewind_at: Option<tokio::time::Instant>,
}

impl ScanPosition {
    /// How long rows that became due behind the position may wait.
    pub const REWIND: Duration = Duration::from_secs(1);

    /// Where the next claim at `now` starts.
    pub fn scan_from(&self, now: tokio::time::Instant) -> ScanFrom {
        match (self.from, self.rewind_at) {
            (Some((run_at, id)), Some(rewind_at)) if now < rewind_at => ScanFrom::After(run_at, id),
            _ => ScanFrom::Start,
        }
    }

    /// Moves to the start of `batch` (claimed scanning from `scanned` at `now`), or back to the
    /// start of the index when the batch holds fewer rows than `asked`.
    pub fn claimed(&mut self, scanned: ScanFrom, batch: &[ClaimedDelivery], asked: usize, now: tokio::time::Instant) {
        if scanned == ScanFrom::Start {
            self.rewind_at = Some(now + Self::REWIND);
        }
        self.from = if batch.len() < asked { None } else { batch.iter().map(|d| (d.run_at, d.id)).min() };
    }
}

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
    let claim = Claim { worker_id, limit, lease, max_payload_bytes };
    claim_batch_from(pool, &claim, ScanFrom::Start).await
}

/// What one claim asks for.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub worker_id: &'a str,
    pub limit: usize,
    pub lease: Duration,
    pub max_payload_bytes: usize,
}

/// [`claim_batch`], scanning the ready index from `from`: rows before it are not considered.
///
/// # Errors
/// The database error; nothing was claimed then.
pub async fn claim_batch_from(
    pool: &PgPool,
    claim: &Claim<'_>,
    from: ScanFrom,
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    let (run_at, id) = match from {
        ScanFrom::Start => (None, None),
        ScanFrom::After(run_at, id) => (Some(run_at), Some(id)),
    };
    sqlx::query_as(CLAIM_BATCH)
        .bind(i64::try_from(claim.limit).unwrap_or(i64::MAX))
        .bind(claim.worker_id)
        .bind(claim.lease.as_secs_f64())
        .bind(i64::try_from(claim.max_payload_bytes).unwrap_or(i64::MAX))
        .bind(run_at)
        .bind(id)
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
), probed AS (
    -- A half-open circuit's probe decides: delivered closes it; a failed attempt opens it again
    -- with the cool-down doubled (up to $17 ms, starting from $16 ms).
    UPDATE webhook.endpoints e
    SET circuit_state = CASE WHEN r.action = 'delivered' THEN 'closed' ELSE 'open' END,
        circuit_cooldown_ms = CASE WHEN r.action = 'delivered' THEN NULL
                                   ELSE least(greatest(coalesce(e.circuit_cooldown_ms, 0) * 2, $16), $17) END,
        circuit_open_until = CASE WHEN r.action = 'delivered' THEN NULL
                                  ELSE now() + make_interval(secs => (least(greatest(coalesce(e.circuit_cooldown_ms, 0) * 2, $16), $17) / 1000.0)::float8) END,
        circuit_probe_delivery = NULL,
        circuit_changed_at = now()
    FROM r
    WHERE e.circuit_probe_delivery = r.id AND e.circuit_state = 'half_open' AND r.action IN ('delivered', 'retry', 'dead')
    RETURNING e.id, e.circuit_state, e.circuit_open_until
)
SELECT (SELECT count(*) FROM delivered) + (SELECT count(*) FROM retried)
     + (SELECT count(*) FROM released) + (SELECT count(*) FROM dead) AS applied,
       (SELECT count(*) FROM probed WHERE circuit_state = 'closed') AS closed,
       (SELECT array_agg(id) FROM probed WHERE circuit_state = 'open') AS reopened
"#;

/// What a completion batch did besides the rows themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Completed {
    /// Rows changed (the rest were stale).
    pub applied: i64,
    /// Circuits closed by a successful probe.
    pub closed: i64,
    /// Endpoints whose circuit a failed probe opened again: their backlog must be moved behind
    /// the new cool-down with [`defer_reopened_backlog`].
    pub reopened: Option<Vec<Uuid>>,
}

/// Applies a batch of completions in one statement and records every attempt (not releases) in
/// the history. Each row changes only if it is still `running` under the completion's lease token
/// (the rest were stale: their lease had expired). A completed probe closes or reopens its
/// circuit, with `cooldown` as the first and `max_cooldown` as the longest cool-down.
///
/// Moving a reopened endpoint's backlog is a separate statement ([`defer_reopened_backlog`]):
/// inside this one, even never executed, it cost 100–200 ms per batch with millions of rows
/// pending (measured by the benchmark's backlog phase), against about 1 ms for the rest.
///
/// # Errors
/// The database error; nothing was applied then, and the caller may retry the same batch.
pub async fn complete_batch(
    pool: &PgPool,
    worker_id: &str,
    batch: &[Completion],
    cooldown: Duration,
    max_cooldown: Duration,
) -> Result<Completed, sqlx::Error> {
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
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    sqlx::query_as(COMPLETE_BATCH)
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
        .bind(millis(cooldown))
        .bind(millis(max_cooldown))
        .fetch_one(pool)
        .await
}

const DEFER_REOPENED_BACKLOG: &str = r#"
UPDATE webhook.deliveries d
SET run_at = e.circuit_open_until
FROM webhook.endpoints e
WHERE e.id = ANY ($1::uuid[]) AND e.circuit_state = 'open'
  AND d.endpoint_id = e.id AND d.state = 'pending' AND d.run_at < e.circuit_open_until
"#;

/// Moves the waiting backlog of `endpoints` whose circuit is open behind their cool-down, out of
/// the claim's way (no attempt is spent). Called after a completion batch reopened circuits.
/// Returns the rows moved.
///
/// # Errors
/// The database error.
pub async fn defer_reopened_backlog(pool: &PgPool, endpoints: &[Uuid]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(DEFER_REOPENED_BACKLOG).bind(endpoints).execute(pool).await?.rows_affected())
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

const OPEN_CIRCUIT: &str = r#"
WITH opened AS (
    UPDATE webhook.endpoints
    SET circuit_state = 'open', circuit_open_until = now() + make_interval(secs => ($2 / 1000.0)::float8),
        circuit_cooldown_ms = $2, circuit_probe_delivery = NULL, circuit_changed_at = now()
    WHERE id = $1 AND circuit_state = 'closed'
    RETURNING id, circuit_open_until
), deferred AS (
    UPDATE webhook.deliveries d
    SET run_at = o.circuit_open_until
    FROM opened o
    WHERE d.endpoint_id = o.id AND d.state = 'pending' AND d.run_at < o.circuit_open_until
    RETURNING d.id
)
SELECT (SELECT count(*) FROM opened) > 0
"#;

/// Opens the circuit of `endpoint` for `cooldown` if it is closed, and moves its waiting backlog
/// behind the cool-down (no attempt is spent; the claim skips the endpoint meanwhile). Returns
/// whether this call opened it (another worker may have been first).
///
/// # Errors
/// The database error.
pub async fn open_circuit(pool: &PgPool, endpoint: Uuid, cooldown: Duration) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(OPEN_CIRCUIT)
        .bind(endpoint)
        .bind(i32::try_from(cooldown.as_millis()).unwrap_or(i32::MAX))
        .fetch_one(pool)
        .await
}

const PICK_PROBES: &str = r#"
WITH due AS (
    SELECT e.id,
           (SELECT d.id FROM webhook.deliveries d
            WHERE d.endpoint_id = e.id AND d.state = 'pending' ORDER BY d.run_at, d.id LIMIT 1) AS probe
    FROM webhook.endpoints e
    WHERE (e.circuit_state = 'open' AND e.circuit_open_until <= now())
       OR (e.circuit_state = 'half_open'
           AND NOT EXISTS (SELECT 1 FROM webhook.deliveries p WHERE p.id = e.circuit_probe_delivery))
), half AS (
    UPDATE webhook.endpoints e
    SET circuit_state = 'half_open', circuit_probe_delivery = due.probe, circuit_changed_at = now()
    FROM due
    WHERE e.id = due.id AND due.probe IS NOT NULL
    RETURNING e.id, due.probe
), due_now AS (
    UPDATE webhook.deliveries d SET run_at = now() FROM half WHERE d.id = half.probe AND d.state = 'pending'
)
SELECT count(*) FROM half
"#;

/// Turns every open circuit whose cool-down has passed (and every half-open circuit whose probe
/// vanished) into half-open with exactly one probe: the endpoint's oldest waiting delivery, made
/// due now. Circuits without waiting deliveries stay as they are until one arrives. Run by the
/// leader; returns how many circuits went half-open.
///
/// # Errors
/// The database error.
pub async fn pick_probes<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(PICK_PROBES).fetch_one(executor).await
}

const SPREAD_BACKLOG: &str = r#"
UPDATE webhook.deliveries d
SET run_at = now() + make_interval(secs => (s.rank * $2 / 1000.0)::float8)
FROM (
    SELECT id, row_number() OVER (ORDER BY run_at, id) AS rank
    FROM webhook.deliveries
    WHERE endpoint_id = $1 AND state = 'pending' AND run_at <= now() + make_interval(secs => $3)
) s
WHERE d.id = s.id AND d.state = 'pending'
"#;

/// Spreads the waiting backlog of a saturated endpoint over time, `interval_ms` apart in queue
/// order, so that it stops occupying the head of the queue (and every claim) while it waits for
/// its rate limit or in-flight cap. Rows already scheduled more than `horizon` ahead are left
/// alone. No attempt is spent. Returns the rows moved.
///
/// # Errors
/// The database error.
pub async fn spread_backlog(
    pool: &PgPool,
    endpoint: Uuid,
    interval_ms: f64,
    horizon: Duration,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(SPREAD_BACKLOG)
        .bind(endpoint)
        .bind(interval_ms)
        .bind(horizon.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected())
}

const NEXT_DUE: &str = r#"
SELECT min(run_at) FROM webhook.deliveries WHERE state = 'pending'
"#;

/// When the next pending delivery is due (`None`: nothing is pending). One probe of the claim
/// index; the dispatcher sleeps until then instead of a whole poll interval.
///
/// # Errors
/// The database error.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(NEXT_DUE).fetch_one(pool).await
}

/// Every statement of this module, for the test that prepares them against the real schema.
pub const STATEMENTS: &[(&str, &str)] = &[
    ("claim_batch", CLAIM_BATCH),
    ("complete_batch", COMPLETE_BATCH),
    ("defer_reopened_backlog", DEFER_REOPENED_BACKLOG),
    ("reap_expired_leases", REAP_EXPIRED_LEASES),
    ("unpark_resumed", UNPARK_RESUMED),
    ("open_circuit", OPEN_CIRCUIT),
    ("pick_probes", PICK_PROBES),
    ("spread_backlog", SPREAD_BACKLOG),
    ("next_due", NEXT_DUE),
];

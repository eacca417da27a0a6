//! Claiming: the one statement that leases ready deliveries, and where a worker's claims scan.

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

pub(super) const CLAIM_BATCH: &str = r#"
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

/// Claims up to `claim.limit` deliveries the way a worker does: from its `position` in the ready
/// index, and, when that comes back short, the rest from the start (rows may have become due
/// behind the position). The first batch is committed on its own, so a failure of the second
/// keeps it. Moves `position` on.
///
/// # Errors
/// The database error of the first claim; nothing was claimed then.
pub async fn claim_resuming(
    pool: &PgPool,
    claim: &Claim<'_>,
    position: &mut ScanPosition,
    now: tokio::time::Instant,
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    let from = position.scan_from(now);
    let mut batch = claim_batch_from(pool, claim, from).await?;
    let mut scanned = from;
    if batch.len() < claim.limit && from != ScanFrom::Start {
        let rest = Claim { limit: claim.limit - batch.len(), ..*claim };
        match claim_batch_from(pool, &rest, ScanFrom::Start).await {
            Ok(more) => {
                batch.extend(more);
                scanned = ScanFrom::Start;
            }
            Err(err) => tracing::debug!(error = %err, "Claiming from the start failed; keeping the first batch"),
        }
    }
    position.claimed(scanned, &batch, claim.limit, now);
    Ok(batch)
}

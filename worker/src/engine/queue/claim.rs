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
WITH window_rows AS MATERIALIZED (
    SELECT d.id, d.endpoint_id, d.run_at
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
), admitted AS MATERIALIZED (
    -- Admission at claim time: of each endpoint, no more rows than it may still start in this
    -- worker: its in-flight cap (its own, or $9; no cap at all when $9 is NULL), plus what it may
    -- queue in the worker ahead of a slot ($10), less what the worker holds ($8). The window is at
    -- most $1 rows, so this costs the same whatever the backlog. Rows left here are unlocked when
    -- the statement ends.
    SELECT w.id, w.endpoint_id, w.run_at,
           $9::integer IS NULL
           OR row_number() OVER (PARTITION BY w.endpoint_id ORDER BY w.run_at, w.id)
              -- The endpoint's own cap is a primary-key probe per window row, written as a scalar
              -- subquery so that it stays one (a join plans as a scan of every endpoint).
              <= coalesce((SELECT e.max_in_flight FROM webhook.endpoints e WHERE e.id = w.endpoint_id), $9::integer)
                 + coalesce(held.ahead, 0) - coalesce(held.n, 0) AS fits
    FROM window_rows w
    LEFT JOIN unnest($7::uuid[], $8::integer[], $10::integer[]) AS held(endpoint_id, n, ahead)
           ON held.endpoint_id = w.endpoint_id
), claimed AS (
    UPDATE webhook.deliveries d
    SET state = 'running',
        attempt = d.attempt + 1,
        lease_token = d.lease_token + 1,
        leased_by = $2,
        lease_expires_at = now() + make_interval(secs => $3)
    FROM admitted a
    WHERE d.id = a.id AND a.fits
    RETURNING d.id, d.endpoint_id, d.run_at, true AS claimed, d.message_id, d.event_type, d.attempt, d.lease_token,
              d.created_at, octet_length(d.payload::text)::bigint AS payload_bytes,
              CASE WHEN octet_length(d.payload::text) <= $4 THEN d.payload::text END AS payload
)
-- Every row of the window, claimed or left: the caller learns which endpoints were crowded and
-- whether the ready index ran out (fewer rows than $1) or the caps stopped the claim. A union,
-- not a join, so that the plan stays as cheap as the claim itself.
SELECT * FROM claimed
UNION ALL
SELECT a.id, a.endpoint_id, a.run_at, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM admitted a WHERE NOT a.fits
"#;

/// One row of a claim's window: claimed (every field set) or left for want of room.
#[derive(Debug, sqlx::FromRow)]
struct WindowRow {
    id: i64,
    endpoint_id: Uuid,
    run_at: DateTime<Utc>,
    claimed: bool,
    message_id: Option<String>,
    event_type: Option<String>,
    attempt: Option<i32>,
    lease_token: Option<i64>,
    created_at: Option<DateTime<Utc>>,
    payload_bytes: Option<i64>,
    payload: Option<String>,
}

impl WindowRow {
    fn delivery(self) -> Option<ClaimedDelivery> {
        if !self.claimed {
            return None;
        }
        Some(ClaimedDelivery {
            id: self.id,
            message_id: self.message_id?,
            endpoint_id: self.endpoint_id,
            event_type: self.event_type?,
            attempt: self.attempt?,
            lease_token: self.lease_token?,
            created_at: self.created_at?,
            run_at: self.run_at,
            payload_bytes: self.payload_bytes?,
            payload: self.payload,
        })
    }
}

/// How many more rows of each endpoint a claim may take for this worker: an endpoint's in-flight
/// cap (its own, or `default_cap`) plus what it may queue ahead, less what the worker holds.
#[derive(Debug, Clone, Default)]
pub struct Room {
    /// The endpoints this worker holds deliveries of.
    pub held: Vec<Held>,
    /// The cap of an endpoint that sets none.
    pub default_cap: u32,
}

/// What a worker holds of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub endpoint: Uuid,
    /// Deliveries in flight, reserved or queued for a slot.
    pub held: u32,
    /// How many it may hold beyond its cap, queued for a slot.
    pub ahead: u32,
}

impl Room {
    fn holding(&mut self, endpoint: Uuid, more: u32) {
        match self.held.iter_mut().find(|h| h.endpoint == endpoint) {
            Some(h) => h.held += more,
            None => self.held.push(Held { endpoint, held: more, ahead: 0 }),
        }
    }
}

/// What one claim (or a resuming pair of claims) did.
#[derive(Debug, Default)]
pub struct Claimed {
    pub deliveries: Vec<ClaimedDelivery>,
    /// Endpoints some of whose ready rows were left because they had no room: they are saturated
    /// in this worker and their rows sit in the claim's way.
    pub crowded: Vec<Uuid>,
    /// Rows the claim's window held (claimed or left); fewer than asked: the ready index ran out.
    pub scanned: usize,
    /// The smallest `(run_at, id)` of the window.
    pub start: Option<(DateTime<Utc>, i64)>,
}

impl Claimed {
    fn of(rows: Vec<WindowRow>) -> Self {
        let mut claimed =
            Self { scanned: rows.len(), start: rows.first().map(|r| (r.run_at, r.id)), ..Self::default() };
        for row in rows {
            let endpoint = row.endpoint_id;
            match row.delivery() {
                Some(delivery) => claimed.deliveries.push(delivery),
                None if !claimed.crowded.contains(&endpoint) => claimed.crowded.push(endpoint),
                None => {}
            }
        }
        claimed
    }

    fn extend(&mut self, more: Claimed) {
        self.deliveries.extend(more.deliveries);
        for endpoint in more.crowded {
            if !self.crowded.contains(&endpoint) {
                self.crowded.push(endpoint);
            }
        }
        self.scanned += more.scanned;
        self.start = match (self.start, more.start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

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
        let start = batch.iter().map(|d| (d.run_at, d.id)).min();
        self.scanned(scanned, start, batch.len(), asked, now);
    }

    /// Moves to `start`, the first row of a claim's window of `rows` rows (scanned from `scanned`
    /// at `now`), or back to the start of the index when the window held fewer rows than `asked`
    /// (the index ran out). Rows a claim left for want of room are in its window, so the next
    /// claim looks at them again.
    pub fn scanned(
        &mut self,
        scanned: ScanFrom,
        start: Option<(DateTime<Utc>, i64)>,
        rows: usize,
        asked: usize,
        now: tokio::time::Instant,
    ) {
        if scanned == ScanFrom::Start {
            self.rewind_at = Some(now + Self::REWIND);
        }
        self.from = if rows < asked { None } else { start };
    }
}

/// Claims up to `limit` ready deliveries, oldest `run_at` first, leasing them to `worker_id` for
/// `lease`. Rows locked by another claimer are skipped, so concurrent workers never claim the same
/// row. Payloads over `max_payload_bytes` are not fetched. No in-flight cap applies.
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
    /// Rows to look at and at most to take (the free slots).
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
    Ok(claim_window(pool, claim, None, from).await?.deliveries)
}

/// Looks at up to `claim.limit` ready rows from `from` and claims those that fit `room` (all of
/// them without one): of each endpoint no more than it may still start in this worker.
///
/// # Errors
/// The database error; nothing was claimed then.
pub async fn claim_window(
    pool: &PgPool,
    claim: &Claim<'_>,
    room: Option<&Room>,
    from: ScanFrom,
) -> Result<Claimed, sqlx::Error> {
    let (run_at, id) = match from {
        ScanFrom::Start => (None, None),
        ScanFrom::After(run_at, id) => (Some(run_at), Some(id)),
    };
    let held = room.map(|r| r.held.as_slice()).unwrap_or_default();
    let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let endpoints: Vec<Uuid> = held.iter().map(|h| h.endpoint).collect();
    let counts: Vec<i32> = held.iter().map(|h| int(h.held)).collect();
    let ahead: Vec<i32> = held.iter().map(|h| int(h.ahead)).collect();
    let rows: Vec<WindowRow> = sqlx::query_as(CLAIM_BATCH)
        .bind(i64::try_from(claim.limit).unwrap_or(i64::MAX))
        .bind(claim.worker_id)
        .bind(claim.lease.as_secs_f64())
        .bind(i64::try_from(claim.max_payload_bytes).unwrap_or(i64::MAX))
        .bind(run_at)
        .bind(id)
        .bind(endpoints)
        .bind(counts)
        .bind(room.map(|r| int(r.default_cap)))
        .bind(ahead)
        .fetch_all(pool)
        .await?;
    Ok(Claimed::of(rows))
}

/// Claims up to `claim.limit` deliveries the way a worker does: from its `position` in the ready
/// index, admitting of each endpoint only what fits its `room`, and, when the index ran out
/// behind the position, the rest from the start (rows may have become due behind it). The first
/// batch is committed on its own, so a failure of the second keeps it. Moves `position` on.
///
/// # Errors
/// The database error of the first claim; nothing was claimed then.
pub async fn claim_resuming(
    pool: &PgPool,
    claim: &Claim<'_>,
    room: Option<&Room>,
    position: &mut ScanPosition,
    now: tokio::time::Instant,
) -> Result<Claimed, sqlx::Error> {
    let from = position.scan_from(now);
    let mut claimed = claim_window(pool, claim, room, from).await?;
    let mut scanned = from;
    if claimed.scanned < claim.limit && claimed.deliveries.len() < claim.limit && from != ScanFrom::Start {
        let rest = Claim { limit: claim.limit - claimed.deliveries.len(), ..*claim };
        // What the first claim took counts against the caps of the second.
        let room = room.map(|room| {
            let mut room = room.clone();
            for delivery in &claimed.deliveries {
                room.holding(delivery.endpoint_id, 1);
            }
            room
        });
        match claim_window(pool, &rest, room.as_ref(), ScanFrom::Start).await {
            Ok(more) => {
                claimed.extend(more);
                scanned = ScanFrom::Start;
            }
            Err(err) => tracing::debug!(error = %err, "Claiming from the start failed; keeping the first batch"),
        }
    }
    position.scanned(scanned, claimed.start, claimed.scanned, claim.limit, now);
    Ok(claimed)
}

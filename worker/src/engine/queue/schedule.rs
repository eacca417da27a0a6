//! The rest of the queue's schedule: reaping expired leases, unparking resumed endpoints,
//! spreading a saturated endpoint's backlog, and when the next delivery is due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub(super) const REAP_EXPIRED_LEASES: &str = r#"
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
    RETURNING d.id, d.message_id, d.endpoint_id, d.attempt
), dead AS (
    DELETE FROM webhook.deliveries d USING expired
    WHERE d.id = expired.id AND d.attempt >= $2
    RETURNING d.id, d.message_id, d.endpoint_id, d.event_type, d.payload, d.attempt, d.created_at,
              d.lease_expires_at,
              format('the lease of worker %s expired during the last allowed attempt',
                     coalesce(d.leased_by, 'unknown')) AS error
), buried AS (
    INSERT INTO webhook.dead_letters
        (delivery_id, message_id, endpoint_id, event_type, payload, attempts, enqueued_at, last_error)
    SELECT id, message_id, endpoint_id, event_type, payload, attempt, created_at, error FROM dead
    ON CONFLICT (delivery_id) DO NOTHING
), attempt_events AS (
    -- As in the completion statement (docs/operational-events.md); the attempt had no answer.
    SELECT 'message.attempt.exhausted' AS event_type, x.id, x.message_id, x.endpoint_id, x.attempt,
           x.lease_expires_at AS attempted_at
    FROM dead x
    UNION ALL
    SELECT 'message.attempt.failing', x.id, x.message_id, x.endpoint_id, x.attempt, now()
    FROM requeued x
    WHERE x.attempt = 4
), operational AS (
    SELECT x.event_type,
           webhook.attempt_event(x.event_type, x.endpoint_id, x.message_id, x.id, x.attempt, x.attempted_at, NULL)
               AS message_id
    FROM attempt_events x
)
SELECT (SELECT count(*) FROM requeued) + (SELECT count(*) FROM dead) AS reaped,
       (SELECT array_agg(event_type) FROM operational WHERE message_id IS NOT NULL) AS operational
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
    let (reaped, emitted): (i64, Option<Vec<String>>) = sqlx::query_as(REAP_EXPIRED_LEASES)
        .bind(limit)
        .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
        .fetch_one(executor)
        .await?;
    crate::observe::metrics::operational_events(emitted.as_deref().unwrap_or_default());
    Ok(reaped)
}

pub(super) const UNPARK_RESUMED: &str = r#"
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

pub(super) const SPREAD_BACKLOG: &str = r#"
WITH ranked AS MATERIALIZED (
    SELECT id, run_at AS was,
           now() + make_interval(secs => (row_number() OVER (ORDER BY run_at, id) * $2 / 1000.0)::float8) AS due
    FROM webhook.deliveries
    WHERE endpoint_id = $1 AND state = 'pending' AND run_at <= now() + make_interval(secs => $3)
), movable AS (
    -- A row already scheduled close to its place keeps it: within a second, or a tenth of how
    -- far ahead it is. Spread again at the same pace, a backlog that is being sent on time gets
    -- the same times back, and one that fell a little behind shifts by a little; rewriting it
    -- would only lock the rows from the claims while it runs and leave a dead tuple for each
    -- (every worker spreads a throttled backlog every few seconds). A row that is due already is
    -- always moved: it is what stands in the claims' way; the rest are placed exactly once they
    -- come near.
    SELECT id, was, due FROM ranked r
    WHERE NOT (r.was > now()
               AND abs(extract(epoch FROM r.due - r.was)) <= greatest(1.0, extract(epoch FROM r.was - now()) / 10))
), moved AS (
    UPDATE webhook.deliveries d
    SET run_at = m.due
    FROM movable m
    WHERE d.id = m.id AND d.state = 'pending'
    RETURNING m.due > m.was AS later
)
SELECT count(*) FILTER (WHERE later) AS later, count(*) AS moved FROM moved
"#;

/// What a spread did: rows it scheduled, and how many of them it moved into the future (a
/// spread at a faster pace than the last one pulls rows earlier).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Spread {
    pub later: i64,
    pub moved: i64,
}

/// Spreads the waiting backlog of a saturated endpoint over time, `interval_ms` apart in queue
/// order, so that it stops occupying the head of the queue (and every claim) while it waits for
/// its rate limit or in-flight cap; spread again at a faster pace, it comes back sooner. Rows
/// already scheduled more than `horizon` ahead, or scheduled close to their place (within a
/// second, or a tenth of how far ahead they are), are left alone. No attempt is spent.
///
/// # Errors
/// The database error.
pub async fn spread_backlog(
    pool: &PgPool,
    endpoint: Uuid,
    interval_ms: f64,
    horizon: Duration,
) -> Result<Spread, sqlx::Error> {
    sqlx::query_as(SPREAD_BACKLOG).bind(endpoint).bind(interval_ms).bind(horizon.as_secs_f64()).fetch_one(pool).await
}

pub(super) const NEXT_DUE: &str = r#"
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

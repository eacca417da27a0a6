//! `queue stats`: how deep, how far behind, and which endpoints hold the backlog or fail — the
//! questions of a "high queue depth" page, answered from live data.

use sqlx::PgPool;
use uuid::Uuid;

/// Counts and ages of the queue right now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStats {
    pub ready: i64,
    pub scheduled: i64,
    pub running: i64,
    pub paused: i64,
    pub dead_letters: i64,
    pub oldest_ready_age_seconds: f64,
    pub live_workers: i64,
    pub top_backlog: Vec<EndpointCount>,
    pub top_failing_last_hour: Vec<EndpointCount>,
}

/// An endpoint and a count.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EndpointCount {
    pub endpoint_id: Uuid,
    pub url: Option<String>,
    pub count: i64,
}

// With `$1`, only the deliveries of that application's endpoints count (a delivery whose endpoint
// was deleted belongs to no application then); live workers are the fleet's either way.
const DEPTH: &str = r#"
SELECT count(*) FILTER (WHERE state = 'pending' AND run_at <= now()),
       count(*) FILTER (WHERE state = 'pending' AND run_at > now()),
       count(*) FILTER (WHERE state = 'running'),
       count(*) FILTER (WHERE state = 'paused'),
       (SELECT count(*) FROM webhook.dead_letters l
        WHERE l.replayed_as IS NULL
          AND ($1::uuid IS NULL OR l.endpoint_id IN (SELECT e.id FROM webhook.endpoints e WHERE e.application_id = $1))),
       coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now())), 0)::float8,
       (SELECT count(*) FROM webhook.workers WHERE heartbeat_at > now() - interval '30 seconds')
FROM webhook.deliveries d
WHERE $1::uuid IS NULL OR d.endpoint_id IN (SELECT e.id FROM webhook.endpoints e WHERE e.application_id = $1)
"#;

const TOP_BACKLOG: &str = r#"
SELECT d.endpoint_id, e.url, count(*) AS count
FROM webhook.deliveries d LEFT JOIN webhook.endpoints e ON e.id = d.endpoint_id
WHERE $2::uuid IS NULL OR e.application_id = $2
GROUP BY d.endpoint_id, e.url ORDER BY count DESC, d.endpoint_id LIMIT $1
"#;

const TOP_FAILING: &str = r#"
SELECT a.endpoint_id, e.url, count(*) AS count
FROM webhook.delivery_attempts a LEFT JOIN webhook.endpoints e ON e.id = a.endpoint_id
WHERE a.attempted_at > now() - interval '1 hour' AND a.outcome <> 'delivered'
  AND ($2::uuid IS NULL OR e.application_id = $2)
GROUP BY a.endpoint_id, e.url ORDER BY count DESC, a.endpoint_id LIMIT $1
"#;

/// Live queue statistics with the `top` endpoints by backlog and by failures in the last hour;
/// of one application's endpoints only, when `application` is given.
///
/// # Errors
/// The database error.
pub async fn queue_stats(pool: &PgPool, top: i64, application: Option<Uuid>) -> Result<QueueStats, sqlx::Error> {
    let (ready, scheduled, running, paused, dead_letters, oldest, live_workers): (i64, i64, i64, i64, i64, f64, i64) =
        sqlx::query_as(DEPTH).bind(application).fetch_one(pool).await?;
    Ok(QueueStats {
        ready,
        scheduled,
        running,
        paused,
        dead_letters,
        oldest_ready_age_seconds: oldest,
        live_workers,
        top_backlog: sqlx::query_as(TOP_BACKLOG).bind(top).bind(application).fetch_all(pool).await?,
        top_failing_last_hour: sqlx::query_as(TOP_FAILING).bind(top).bind(application).fetch_all(pool).await?,
    })
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("depth", DEPTH), ("top_backlog", TOP_BACKLOG), ("top_failing", TOP_FAILING)];

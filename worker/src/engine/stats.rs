//! Queue and database statistics: computed by the maintenance leader into `webhook.queue_stats`,
//! read by every worker for its gauges, so that no scrape scans the queue or the server's views.
//!
//! Besides the queue's depth and oldest ready age, the leader records the start of the oldest
//! transaction open in the database (`state = 'transaction'`), because a long transaction holds
//! back the vacuum of the queue table: the deleted rows of delivered deliveries stay in the table
//! and its index, and every claim walks over them until the transaction ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// When the leader may next count the whole queue. Counting is a scan of the queue table, which
/// takes seconds with millions of rows pending; it is held to a twentieth of the leader's time
/// (the next full count waits twenty times as long as the last one took, and at least one round).
/// The oldest ready age, the scaling signal, is refreshed every round from the ready index.
#[derive(Debug, Default)]
pub struct StatsPacing {
    next_full: Option<tokio::time::Instant>,
}

impl StatsPacing {
    /// Share of the leader's time full counts may take, as a divisor.
    const DUTY: u32 = 20;

    fn due(&self, now: tokio::time::Instant) -> bool {
        self.next_full.is_none_or(|next| now >= next)
    }

    fn counted(&mut self, started: tokio::time::Instant, took: Duration) {
        self.next_full = Some(started + took * Self::DUTY);
    }
}

/// Computes this round's statistics on the leader's connection: the full count when `pacing`
/// allows it (else the oldest ready age only), and the oldest open transaction.
///
/// # Errors
/// The first database error.
pub async fn compute(connection: &mut PgConnection, pacing: &mut StatsPacing) -> Result<(), sqlx::Error> {
    let now = tokio::time::Instant::now();
    if pacing.due(now) {
        sqlx::query(COMPUTE_STATS).execute(&mut *connection).await?;
        pacing.counted(now, now.elapsed());
    } else {
        sqlx::query(REFRESH_OLDEST_READY).execute(&mut *connection).await?;
    }
    sqlx::query(RECORD_OLDEST_TRANSACTION).execute(&mut *connection).await?;
    Ok(())
}

const COMPUTE_STATS: &str = r#"
INSERT INTO webhook.queue_stats (state, count, oldest_at, computed_at)
SELECT s.state, coalesce(c.count, 0), c.oldest_at, now()
FROM (VALUES ('ready'), ('scheduled'), ('running'), ('paused'), ('dead')) AS s(state)
LEFT JOIN (
    SELECT CASE WHEN state IN ('running', 'paused') THEN state
                WHEN run_at <= now() THEN 'ready'
                ELSE 'scheduled' END AS state,
           count(*) AS count,
           min(run_at) AS oldest_at
    FROM webhook.deliveries
    GROUP BY 1
    UNION ALL
    SELECT 'dead', count(*), min(failed_at) FROM webhook.dead_letters WHERE replayed_as IS NULL
) c USING (state)
ON CONFLICT (state) DO UPDATE
SET count = excluded.count, oldest_at = excluded.oldest_at, computed_at = excluded.computed_at
"#;

/// The oldest ready delivery from the first entry of the ready index (cheap at any depth); the
/// counts stay those of the last full count.
const REFRESH_OLDEST_READY: &str = r#"
UPDATE webhook.queue_stats
SET oldest_at = (SELECT min(run_at) FROM webhook.deliveries WHERE state = 'pending' AND run_at <= now()),
    computed_at = now()
WHERE state = 'ready'
"#;

/// The start of the oldest transaction of another session of this database that holds back
/// vacuum (it holds a snapshot or a transaction id) or sits idle in its transaction, and how many
/// such sessions there are. Client backends only: autovacuum's own transactions hold nothing back.
/// The leader's own statement is left out; every other statement of the workers lasts
/// milliseconds. Sessions of other roles show their `xact_start` only to a role with
/// `pg_read_all_stats` (e.g. `pg_monitor`): docs/runbook.md#long-transaction.
const RECORD_OLDEST_TRANSACTION: &str = r#"
INSERT INTO webhook.queue_stats (state, count, oldest_at, computed_at)
SELECT 'transaction', count(*), min(xact_start), now()
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND xact_start IS NOT NULL
  AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL OR state LIKE 'idle in transaction%')
ON CONFLICT (state) DO UPDATE
SET count = excluded.count, oldest_at = excluded.oldest_at, computed_at = excluded.computed_at
"#;

#[derive(sqlx::FromRow)]
struct StatRow {
    state: String,
    count: i64,
    age_seconds: Option<f64>,
}

/// Ages as of now, except the oldest transaction's: as of the leader's last look (a transaction
/// that ended since is not known to have; without a leader the age does not grow by itself).
const READ_STATS: &str = r#"
SELECT state, count,
       extract(epoch FROM CASE WHEN state = 'transaction' THEN computed_at ELSE now() END - oldest_at)::float8
           AS age_seconds
FROM webhook.queue_stats
UNION ALL
SELECT 'workers', count(*), NULL FROM webhook.workers WHERE heartbeat_at > now() - interval '30 seconds'
UNION ALL
SELECT 'circuits', count(*), NULL FROM webhook.endpoints WHERE circuit_state <> 'closed'
"#;

/// Publishes the leader's last statistics as this worker's gauges, and the live worker count
/// into `live_workers` (the fleet-wide rate limits divide by it).
///
/// # Errors
/// The database error.
pub async fn publish(pool: &PgPool, live_workers: &AtomicUsize) -> Result<(), sqlx::Error> {
    let rows: Vec<StatRow> = sqlx::query_as(READ_STATS).fetch_all(pool).await?;
    for row in rows {
        match row.state.as_str() {
            "ready" => {
                crate::observe::metrics::queue_stats("ready", row.count);
                // Between full counts the count may lag; the age is fresh every round.
                let age = row.age_seconds.unwrap_or(0.0).max(0.0);
                crate::observe::metrics::oldest_ready_age(Duration::from_secs_f64(age));
            }
            "scheduled" => crate::observe::metrics::queue_stats("scheduled", row.count),
            "running" => crate::observe::metrics::queue_stats("running", row.count),
            "paused" => crate::observe::metrics::queue_stats("paused", row.count),
            "dead" => crate::observe::metrics::dead_letters(row.count),
            "workers" => {
                crate::observe::metrics::workers_live(row.count);
                live_workers.store(usize::try_from(row.count).unwrap_or(1).max(1), Ordering::Relaxed);
            }
            "circuits" => crate::observe::metrics::breaker_open_endpoints(row.count),
            "transaction" => {
                let age = row.age_seconds.unwrap_or(0.0).max(0.0);
                crate::observe::metrics::oldest_transaction_age(Duration::from_secs_f64(age));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("compute_stats", COMPUTE_STATS),
    ("refresh_oldest_ready", REFRESH_OLDEST_READY),
    ("record_oldest_transaction", RECORD_OLDEST_TRANSACTION),
    ("read_stats", READ_STATS),
];

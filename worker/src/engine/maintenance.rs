//! Heartbeats (every worker) and maintenance (one leader at a time).
//!
//! Every worker upserts its row in `webhook.workers` and publishes the leader's queue statistics
//! as gauges. One worker, the holder of a session advisory lock on a dedicated connection, reaps
//! expired leases, computes queue statistics, creates attempt-history partitions ahead of time
//! and forgets dead workers. If the leader dies its connection closes, the lock is released and
//! another worker takes over at its next tick.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::config::{MaintenanceSettings, Retention};
use crate::engine::stats::{self, StatsPacing};
use crate::engine::{circuit, queue};
use crate::observe::health::Health;

/// Advisory lock key of the maintenance leader ("webhook" in ASCII).
const LEADER_LOCK_KEY: i64 = 0x0077_6562_686f_6f6b;
/// Attempt-history partitions kept ahead of today.
const PARTITIONS_AHEAD_DAYS: i64 = 7;
/// A worker whose heartbeat is older than this is gone.
const WORKER_EXPIRY_SECONDS: f64 = 60.0;

/// Rows deleted per statement by retention, so that no statement holds locks for long.
const RETENTION_BATCH: i64 = 5000;

/// Runs heartbeats and, when leading, maintenance, every `interval` until `stop`; then removes
/// this worker's heartbeat row.
pub async fn run(
    settings: MaintenanceSettings,
    pool: PgPool,
    health: Arc<Health>,
    live_workers: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut leader: Option<PgConnection> = None;
    let mut pacing = StatsPacing::default();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => break,
        }
        if let Err(err) = heartbeat(&pool, &settings.worker_id).await {
            health.database_error("heartbeat");
            tracing::warn!(error = %err, "Heartbeat failed");
            continue;
        }
        health.database_ok();
        leader = lead(leader, &settings, &mut pacing, &health).await;
        if let Err(err) = stats::publish(&pool, &live_workers).await {
            health.database_error("stats");
            tracing::warn!(error = %err, "Reading queue statistics failed");
        }
    }
    if let Err(err) = sqlx::query(FORGET_WORKER).bind(&settings.worker_id).execute(&pool).await {
        tracing::warn!(error = %err, "Removing this worker's heartbeat failed; it will expire");
    }
}

async fn heartbeat(pool: &PgPool, worker_id: &str) -> Result<(), sqlx::Error> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    sqlx::query(HEARTBEAT).bind(worker_id).bind(host.trim()).bind(env!("CARGO_PKG_VERSION")).execute(pool).await?;
    Ok(())
}

/// Keeps or takes the leadership and, when held, runs one round of maintenance. Returns the
/// leader connection to keep (dropping it releases the lock).
async fn lead(
    connection: Option<PgConnection>,
    settings: &MaintenanceSettings,
    pacing: &mut StatsPacing,
    health: &Health,
) -> Option<PgConnection> {
    let mut connection = match connection {
        Some(connection) => connection,
        None => {
            let options = crate::db::options(&settings.database_url).ok()?;
            let mut connection = crate::db::connect(&options).await.ok()?;
            sqlx::query(DETECT_DEAD_LEADER).execute(&mut connection).await.ok()?;
            let acquired: bool =
                sqlx::query_scalar(TRY_LEAD).bind(LEADER_LOCK_KEY).fetch_one(&mut connection).await.ok()?;
            if !acquired {
                return None;
            }
            tracing::info!(worker.id = %settings.worker_id, "This worker now leads maintenance");
            connection
        }
    };
    match maintain(&mut connection, settings, pacing).await {
        Ok(()) => Some(connection),
        Err(err) => {
            health.database_error("maintenance");
            tracing::warn!(error = %err, "Maintenance failed; giving up the leadership");
            None
        }
    }
}

/// One round of leader maintenance.
///
/// # Errors
/// The first database error.
pub async fn maintain(
    connection: &mut PgConnection,
    settings: &MaintenanceSettings,
    pacing: &mut StatsPacing,
) -> Result<(), sqlx::Error> {
    loop {
        let reaped = queue::reap_expired_leases(&mut *connection, 1000, settings.max_attempts).await?;
        if reaped > 0 {
            tracing::warn!(reaped, "Returned {reaped} deliveries with expired leases to the queue");
        }
        if reaped < 1000 {
            break;
        }
    }
    queue::unpark_resumed(&mut *connection).await?;
    circuit::pick_probes(connection, &settings.breaker).await?;
    stats::compute(connection, pacing).await?;
    sqlx::query(FORGET_DEAD_WORKERS).bind(WORKER_EXPIRY_SECONDS).execute(&mut *connection).await?;
    let today = Utc::now().date_naive();
    ensure_partitions(connection, today).await?;
    // After the partitions: the events are messages, stored in today's partition.
    report_expiring_secrets(connection).await?;
    apply_retention(connection, &settings.retention, today).await
}

/// How long before a rotated-out secret stops signing `endpoint.secret.expiring` is emitted (at
/// the leader's first round after a rotation whose grace is shorter).
pub const SECRET_EXPIRY_NOTICE: Duration = Duration::from_secs(3600);

const REPORT_EXPIRING_SECRETS: &str = r#"
WITH noticed AS (
    UPDATE webhook.endpoint_secrets s
    SET expiry_reported_at = now()
    WHERE s.expiry_reported_at IS NULL AND s.expires_at > now() AND s.expires_at <= now() + make_interval(secs => $1)
    RETURNING s.endpoint_id, s.expires_at
), operational AS (
    -- One event per endpoint and expiry (secrets rotated out together expire together), marked
    -- reported in the same statement: once, whoever leads (docs/operational-events.md).
    SELECT webhook.operational_event('endpoint.secret.expiring', n.endpoint_id,
               jsonb_build_object('expiresAt', n.expires_at)) AS message_id
    FROM (SELECT DISTINCT endpoint_id, expires_at FROM noticed) n
)
SELECT count(message_id) FROM operational
"#;

/// Emits `endpoint.secret.expiring` once for every rotated-out secret that stops signing within
/// [`SECRET_EXPIRY_NOTICE`]. Returns how many events were emitted.
///
/// # Errors
/// The database error.
pub async fn report_expiring_secrets(connection: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let emitted: i64 = sqlx::query_scalar(REPORT_EXPIRING_SECRETS)
        .bind(SECRET_EXPIRY_NOTICE.as_secs_f64())
        .fetch_one(&mut *connection)
        .await?;
    crate::observe::metrics::operational_event(
        crate::policy::states::OperationalEvent::SecretExpiring,
        u64::try_from(emitted).unwrap_or(0),
    );
    Ok(emitted)
}

/// Drops attempt partitions wholly older than the retention, deletes old dead letters and
/// idempotency keys in batches, and removes signing secrets whose rotation grace has ended.
/// `today` is a parameter so tests can pin the date.
///
/// # Errors
/// The first database error.
pub async fn apply_retention(
    connection: &mut PgConnection,
    retention: &Retention,
    today: NaiveDate,
) -> Result<(), sqlx::Error> {
    for (table, keep) in [("delivery_attempts", retention.attempts), ("messages", retention.messages)] {
        drop_partitions_before(connection, table, oldest_kept(today, keep)).await?;
    }
    for (sql, keep) in
        [(DELETE_DEAD_LETTERS, retention.dead_letters), (DELETE_IDEMPOTENCY_KEYS, retention.idempotency_keys)]
    {
        while sqlx::query(sql)
            .bind(keep.as_secs_f64())
            .bind(RETENTION_BATCH)
            .execute(&mut *connection)
            .await?
            .rows_affected()
            == u64::try_from(RETENTION_BATCH).unwrap_or(u64::MAX)
        {}
    }
    sqlx::query(DELETE_EXPIRED_SECRETS).execute(&mut *connection).await?;
    Ok(())
}

/// The first day kept when `keep` (whole days, at least one) is kept before `today`.
fn oldest_kept(today: NaiveDate, keep: Duration) -> NaiveDate {
    let keep_days = i64::try_from(keep.as_secs() / 86_400).unwrap_or(i64::MAX).max(1);
    today - chrono::Duration::days(keep_days)
}

/// Drops the daily partitions of `table` wholly before `oldest_kept`.
async fn drop_partitions_before(
    connection: &mut PgConnection,
    table: &'static str,
    oldest_kept: NaiveDate,
) -> Result<(), sqlx::Error> {
    let partitions: Vec<String> = sqlx::query_scalar(PARTITIONS).bind(table).fetch_all(&mut *connection).await?;
    let prefix = format!("{table}_");
    for name in partitions {
        let Some(day) = name.strip_prefix(&prefix).and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok()) else {
            continue;
        };
        if day < oldest_kept {
            // The name was read from the catalogue and matched a date pattern: nothing to inject.
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS webhook.{name}")))
                .execute(&mut *connection)
                .await?;
            tracing::info!(partition = %name, "Dropped {table} older than the retention");
        }
    }
    Ok(())
}

const HEARTBEAT: &str = "INSERT INTO webhook.workers (id, hostname, version) VALUES ($1, $2, $3) \
                         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()";
const FORGET_WORKER: &str = "DELETE FROM webhook.workers WHERE id = $1";
const FORGET_DEAD_WORKERS: &str = "DELETE FROM webhook.workers WHERE heartbeat_at < now() - make_interval(secs => $1)";
const TRY_LEAD: &str = "SELECT pg_try_advisory_lock($1)";
/// TCP keepalives on the server's side of the leader's connection, so that a leader lost without a
/// word (its node gone, or a partition: no FIN, no RST, and an idle connection sends nothing)
/// frees the lock within about 25 s instead of the kernel's default two hours; until then no
/// worker could lead and expired leases would not be reaped (tests/it/chaos/network.rs). Set in
/// the session rather than as startup options, which PgBouncer refuses.
const DETECT_DEAD_LEADER: &str = "SELECT set_config('tcp_keepalives_idle', '10', false), \
     set_config('tcp_keepalives_interval', '5', false), set_config('tcp_keepalives_count', '3', false)";
const PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
     JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace \
     WHERE n.nspname = 'webhook' AND p.relname = $1";
const DELETE_EXPIRED_SECRETS: &str = "DELETE FROM webhook.endpoint_secrets WHERE expires_at <= now()";

const DELETE_DEAD_LETTERS: &str = r#"
DELETE FROM webhook.dead_letters WHERE delivery_id IN (
    SELECT delivery_id FROM webhook.dead_letters WHERE failed_at < now() - make_interval(secs => $1) LIMIT $2)
"#;

const DELETE_IDEMPOTENCY_KEYS: &str = r#"
DELETE FROM webhook.idempotency_keys WHERE key IN (
    SELECT key FROM webhook.idempotency_keys WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)
"#;

/// Creates the daily partitions of the attempt history and the message store from yesterday to
/// [`PARTITIONS_AHEAD_DAYS`] ahead.
///
/// # Errors
/// The database error.
pub async fn ensure_partitions(connection: &mut PgConnection, today: NaiveDate) -> Result<(), sqlx::Error> {
    for table in ["delivery_attempts", "messages"] {
        for offset in -1..=PARTITIONS_AHEAD_DAYS {
            let day = today + chrono::Duration::days(offset);
            let next = day + chrono::Duration::days(1);
            // Built from a fixed table name and dates only, so there is nothing to inject.
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS webhook.{table}_{} PARTITION OF webhook.{table} \
                 FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                day.format("%Y%m%d")
            );
            sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&mut *connection).await?;
        }
    }
    Ok(())
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("heartbeat", HEARTBEAT),
    ("forget_worker", FORGET_WORKER),
    ("forget_dead_workers", FORGET_DEAD_WORKERS),
    ("try_lead", TRY_LEAD),
    ("detect_dead_leader", DETECT_DEAD_LEADER),
    ("partitions", PARTITIONS),
    ("delete_expired_secrets", DELETE_EXPIRED_SECRETS),
    ("report_expiring_secrets", REPORT_EXPIRING_SECRETS),
    ("delete_dead_letters", DELETE_DEAD_LETTERS),
    ("delete_idempotency_keys", DELETE_IDEMPOTENCY_KEYS),
];

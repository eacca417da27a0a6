//! Workers, endpoints and deliveries for tests.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use webhook_worker::admin::endpoints::{self, Changes};
use webhook_worker::config::{RetrySchedule, RunArgs, Settings};
use webhook_worker::policy::crypto::KeyRing;
use webhook_worker::policy::signing::SigningSecret;

use super::TestDb;

/// The key ring every test uses (tests that need another make their own).
pub fn key_ring_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| KeyRing::generate("test").1.to_string())
}

/// Worker settings for `db`: loopback allowed, fast polling, `retry` waits between attempts.
pub fn settings(db: &TestDb, retry: &str) -> Settings {
    Settings::from_args(&worker_args(db, retry)).unwrap()
}

/// The options behind [`settings`], for tests that change one before validating with
/// `Settings::from_args`.
pub fn worker_args(db: &TestDb, retry: &str) -> RunArgs {
    let mut run = RunArgs::defaults();
    run.database.database_url = Some(db.url.clone().into());
    run.database.db_pool_size = 5;
    run.keys.encryption_keys = Some(key_ring_text().into());
    run.metrics_addr = None;
    let args = &mut run.worker;
    args.allow_private_cidrs = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    args.poll_interval = Duration::from_millis(100);
    args.retry_schedule = retry.parse::<RetrySchedule>().unwrap();
    args.http_timeout = Duration::from_secs(5);
    args.lease_duration = Duration::from_secs(30);
    args.drain_deadline = Duration::from_secs(5);
    // Tests of retries and dead letters use failing receivers; the breaker and the in-flight cap
    // have their own tests, which set these back.
    args.breaker_failure_threshold = 1000;
    args.breaker_failure_ratio = 1.0;
    args.max_in_flight_per_endpoint = 1000;
    run
}

/// A worker running in this process.
pub struct TestWorker {
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestWorker {
    pub fn start(settings: Settings) -> Self {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(webhook_worker::engine::run(settings, stop.clone().cancelled_owned()));
        Self { stop, handle }
    }

    /// Stops the worker gracefully; returns once every result is written.
    pub async fn stop(self) {
        self.stop.cancel();
        self.handle.await.expect("worker task").expect("worker result");
    }
}

/// Registers an endpoint for `url` with a fresh secret; returns its id and secret.
pub async fn endpoint(pool: &PgPool, url: &str) -> (Uuid, SigningSecret) {
    let secret = SigningSecret::generate();
    let key_ring = KeyRing::parse(key_ring_text()).unwrap();
    let changes = Changes { url: Some(url.to_owned()), ..Changes::default() };
    let id = endpoints::create(pool, &key_ring, &changes, &secret).await.unwrap();
    (id, secret)
}

/// Inserts `n` deliveries for `endpoint` with a plain INSERT (the simplest producer path).
pub async fn insert_deliveries(pool: &PgPool, endpoint: Uuid, n: i64) {
    sqlx::query(
        "INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) \
         SELECT $1, 'test.event', json_build_object('n', n)::json FROM generate_series(1, $2) AS n",
    )
    .bind(endpoint)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// Polls `sql` (a boolean query) until it is true or `limit` passes. For database state that has
/// no other signal; bounded, and it fails loudly.
pub async fn wait_until(pool: &PgPool, sql: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let done: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap();
        if done {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for: {sql}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

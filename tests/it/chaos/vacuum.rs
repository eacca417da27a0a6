//! A long transaction holding vacuum back: an idle-in-transaction session that wrote (it holds a
//! transaction id) and a REPEATABLE READ reader (it holds a snapshot) stay open beside steady load.
//! While they are open, no row deleted from the queue since they began can be vacuumed or
//! marked dead in its index, so claims walk over more and more of them. The operator is told by
//! `webhook_database_oldest_transaction_age_seconds` (alert `WebhookLongTransaction`) and sees the
//! claim cost in `webhook_claim_duration_seconds`; it all recovers by itself when they end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sqlx::Connection as _;
use webhook_worker::testkit::receiver::Receiver;

use super::{Worker, drained, stuck};
use crate::faults::{delivered, long_profile};
use crate::support::{TestDb, endpoint, insert_deliveries};

const GAUGE: &str = "webhook_database_oldest_transaction_age_seconds";

/// What one phase of the run looked like.
#[derive(Debug, Default)]
struct Phase {
    seconds: f64,
    delivered: usize,
    claims: f64,
    claim_seconds: f64,
    /// The most ready deliveries waiting at one look (is the fleet keeping up?).
    backlog_max: i64,
    /// Dead rows of the queue table at the end of the phase (the statistics' estimate).
    dead_rows: i64,
}

impl Phase {
    fn describe(&self, name: &str) -> String {
        format!(
            "{name}: {:.0} s, {:.0} delivered/s, {:.0} claims, mean claim {:.2} ms, backlog up to {}, dead rows {}",
            self.seconds,
            self.delivered as f64 / self.seconds,
            self.claims,
            1000.0 * self.claim_seconds / self.claims.max(1.0),
            self.backlog_max,
            self.dead_rows
        )
    }
}

/// The sum of `name` over the workers' `/metrics`.
async fn fleet_sum(workers: &[Worker], name: &str) -> f64 {
    let mut sum = 0.0;
    for worker in workers {
        sum += worker.counter(name).await;
    }
    sum
}

/// Runs one phase of `length`, looking at the backlog every second.
async fn phase(db: &TestDb, workers: &[Worker], receiver: &Receiver, length: Duration) -> Phase {
    let started = tokio::time::Instant::now();
    let (delivered, claims, claim_seconds) = (
        receiver.count(),
        fleet_sum(workers, "webhook_claim_duration_seconds_count").await,
        fleet_sum(workers, "webhook_claim_duration_seconds_sum").await,
    );
    let mut backlog_max = 0;
    for _ in 0..length.as_secs() {
        // The fault (or its absence) is held this long; the backlog is sampled meanwhile.
        tokio::time::sleep(Duration::from_secs(1)).await;
        backlog_max = backlog_max
            .max(db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'pending' AND run_at <= now()").await);
    }
    Phase {
        seconds: started.elapsed().as_secs_f64(),
        delivered: receiver.count() - delivered,
        claims: fleet_sum(workers, "webhook_claim_duration_seconds_count").await - claims,
        claim_seconds: fleet_sum(workers, "webhook_claim_duration_seconds_sum").await - claim_seconds,
        backlog_max,
        dead_rows: db.count("SELECT pg_stat_get_dead_tuples('webhook.deliveries'::regclass)").await,
    }
}

/// Inserts `per_second` deliveries a second, spread over `endpoints`, until `stop`; counts them.
fn produce(db: &TestDb, endpoints: Vec<uuid::Uuid>, per_second: i64, stop: Arc<AtomicBool>) -> Arc<AtomicI64> {
    let inserted = Arc::new(AtomicI64::new(0));
    let (pool, count) = (db.pool.clone(), Arc::clone(&inserted));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        // Bounded: at most an hour of ticks.
        for _ in 0..36_000 {
            ticker.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for endpoint in &endpoints {
                let n = per_second / 10 / i64::try_from(endpoints.len()).unwrap();
                insert_deliveries(&pool, *endpoint, n).await;
                count.fetch_add(n, Ordering::Relaxed);
            }
        }
    });
    inserted
}

/// Waits (bounded) until the gauge on `worker`'s `/metrics` satisfies `test`; returns its last value.
async fn gauge_until(worker: &Worker, test: impl Fn(f64) -> bool, limit: Duration) -> f64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = worker.counter(GAUGE).await;
        if test(value) || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_is_reported_slows_claims_and_recovers_by_itself() {
    let (per_second, calm, hold) = if long_profile() {
        (1_000, Duration::from_secs(60), Duration::from_secs(600))
    } else {
        (400, Duration::from_secs(8), Duration::from_secs(25))
    };
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let mut endpoints = Vec::new();
    for n in 0..4 {
        endpoints.push(endpoint(&db.pool, &receiver.url(&format!("/v{n}"))).await.0);
    }
    let env = [("RUST_LOG", "warn")];
    let workers: Vec<Worker> = (0..2).map(|i| Worker::start(&db, &format!("chaos-v{i}"), &env)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = produce(&db, endpoints, per_second, Arc::clone(&stop));
    // Measured from when both workers deliver at the offered rate (the first claims are cold).
    let warm = usize::try_from(2 * per_second).unwrap();
    assert!(receiver.wait_for(warm, Duration::from_secs(60)).await, "the workers never started delivering");
    let quiet_before = gauge_until(&workers[0], |age| age < 1.0, Duration::from_secs(20)).await;
    let before = phase(&db, &workers, &receiver, calm).await;

    // The fault: a session that wrote and sits idle in its transaction, and a REPEATABLE READ
    // reader that keeps its snapshot, as a report or a forgotten psql would.
    let mut idle = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT txid_current()").execute(&mut idle).await.unwrap();
    let mut reader = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM webhook.deliveries")
        .execute(&mut reader)
        .await
        .unwrap();
    let held = phase(&db, &workers, &receiver, hold).await;
    let reported = gauge_until(&workers[1], |age| age >= hold.as_secs_f64() - 3.0, Duration::from_secs(10)).await;
    let idle_state: String = sqlx::query_scalar(
        "SELECT string_agg(DISTINCT state, ',') FROM pg_stat_activity \
         WHERE datname = current_database() AND xact_start < now() - interval '5 seconds'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut reader).await.unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut idle).await.unwrap();
    let ended = tokio::time::Instant::now();
    let cleared = gauge_until(&workers[1], |age| age < 5.0, Duration::from_secs(20)).await;
    let cleared_after = ended.elapsed().as_secs_f64();
    let after = phase(&db, &workers, &receiver, calm).await;

    stop.store(true, Ordering::Relaxed);
    // Let the producer's last statement land before counting what must arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drained(&db, Duration::from_secs(120)).await;
    let total = usize::try_from(inserted.load(Ordering::Relaxed)).unwrap();
    let (distinct, answered_ok) = delivered(&receiver);
    let stuck = stuck(&db).await;
    let errors = fleet_sum(&workers, "webhook_database_errors_total").await;
    eprintln!(
        "long transaction held {hold:?} beside {per_second} deliveries/s over 2 workers ({idle_state}): the gauge read \
         {quiet_before:.1} s before, {reported:.1} s at the end of the hold and {cleared:.1} s {cleared_after:.1} s after \
         it ended\n  {}\n  {}\n  {}\n  delivered {distinct} of {total}, duplicates {}, stuck {stuck}, database errors {errors}",
        before.describe("before"),
        held.describe("held"),
        after.describe("after"),
        answered_ok - distinct
    );
    assert!(quiet_before < 1.0, "no long transaction before the fault, yet the gauge read {quiet_before}");
    assert!(idle_state.contains("idle in transaction"), "the sessions were idle in transaction: {idle_state}");
    assert!(reported >= hold.as_secs_f64() - 3.0, "the gauge read {reported} s after a {hold:?} hold");
    assert!(cleared < 5.0, "the gauge still read {cleared} s {cleared_after:.1} s after the transaction ended");
    assert_eq!(distinct, total, "nothing lost");
    assert_eq!(stuck, 0);
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0);
    // No fault touches a worker: a duplicate would be a lease outlived by a slow claim or completion.
    assert!((answered_ok - distinct) * 1000 <= total, "{} duplicates", answered_ok - distinct);
    assert!(held.delivered > 0 && after.delivered > 0, "deliveries kept flowing during and after the hold");
    workers.into_iter().for_each(Worker::stop);
}

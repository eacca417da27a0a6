//! A retry storm: every endpoint answers 500, then recovers. The breakers must stop the herd
//! while it lasts, the rate limits must hold while the backlog drains, and the backlog must drain
//! in a bounded time without losing anything.

use std::collections::HashMap;
use std::time::Duration;

use webhook_worker::testkit::receiver::{Answer, Receiver};

use super::{Worker, drained, stuck};
use crate::faults::{delivered, long_profile};
use crate::support::{TestDb, endpoint, insert_deliveries};

const ENDPOINTS: usize = 20;
const PER_ENDPOINT: i64 = 200;
const RATE: i64 = 50;
const BURST: i64 = 5;
/// The retry schedule below, end to end: a storm longer than this can exhaust the deliveries the
/// breaker lets through as probes.
const SCHEDULE_SPAN: Duration = Duration::from_secs(39);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_is_held_by_breakers_and_drains_within_the_rate_limits() {
    let storm = if long_profile() { Duration::from_secs(120) } else { Duration::from_secs(10) };
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let paths: Vec<String> = (0..ENDPOINTS).map(|n| format!("/s{n}")).collect();
    for path in &paths {
        let (id, _) = endpoint(&db.pool, &receiver.url(path)).await;
        receiver.answer(path, Answer { status: 500, ..Answer::default() });
        insert_deliveries(&db.pool, id, PER_ENDPOINT).await;
    }
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = $1, rate_limit_burst = $2")
        .bind(i32::try_from(RATE).unwrap())
        .bind(i32::try_from(BURST).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
    // The breaker as shipped, with short cool-downs; a schedule that outlasts the storm.
    let env = [
        ("WEBHOOK_BREAKER_FAILURE_THRESHOLD", "5"),
        ("WEBHOOK_BREAKER_FAILURE_RATIO", "0.5"),
        ("WEBHOOK_BREAKER_WINDOW", "10s"),
        ("WEBHOOK_BREAKER_COOLDOWN", "2s"),
        ("WEBHOOK_BREAKER_MAX_COOLDOWN", "4s"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "8"),
        ("WEBHOOK_RETRY_SCHEDULE", "1s,1s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s"),
    ];
    let workers: Vec<Worker> = (0..3).map(|i| Worker::start(&db, &format!("chaos-s{i}"), &env)).collect();
    // The storm itself: every endpoint fails this long.
    tokio::time::sleep(storm).await;
    let during = receiver.count();
    let opened = {
        let mut sum = 0.0;
        for worker in &workers {
            sum += worker.counter("webhook_breaker_transitions_total{to=\"open\"}").await;
        }
        sum
    };
    let recovered_at = chrono::Utc::now();
    let started = tokio::time::Instant::now();
    for path in &paths {
        receiver.answer(path, Answer::default());
    }
    drained(&db, Duration::from_secs(120)).await;
    let drain_seconds = started.elapsed().as_secs_f64();

    // Requests per endpoint per second once it recovered: the fleet-wide rate limit holds.
    let mut windows: HashMap<(String, i64), i64> = HashMap::new();
    for request in receiver.received().into_iter().filter(|r| r.arrived_at >= recovered_at) {
        *windows.entry((request.path, request.arrived_at.timestamp())).or_default() += 1;
    }
    let busiest = windows.values().copied().max().unwrap_or(0);
    let (distinct, answered_ok) = delivered(&receiver);
    let total = ENDPOINTS * usize::try_from(PER_ENDPOINT).unwrap();
    let stuck = stuck(&db).await;
    eprintln!(
        "retry storm: {total} deliveries over {ENDPOINTS} endpoints failing for {storm:?}: {during} requests during the \
         storm ({:.1} per endpoint), {opened} breaker openings; drained {drain_seconds:.1} s after recovery; busiest \
         endpoint-second after recovery {busiest} requests (limit {RATE}/s, burst {BURST}); delivered {distinct}, \
         duplicates {}, stuck {stuck}",
        during as f64 / ENDPOINTS as f64,
        answered_ok - distinct
    );
    let dead = usize::try_from(db.count("SELECT count(*) FROM webhook.dead_letters").await).unwrap();
    eprintln!("retry storm: {dead} dead letters (deliveries whose schedule ran out during the storm)");
    assert_eq!(distinct + dead, total, "nothing lost: delivered or a dead letter by policy");
    if storm < SCHEDULE_SPAN {
        assert_eq!(dead, 0, "a storm shorter than the schedule exhausts no delivery");
    }
    assert_eq!(stuck, 0);
    assert!(opened >= ENDPOINTS as f64, "every endpoint's breaker opened: {opened}");
    // Without breakers the storm would retry every delivery on the schedule (thousands of
    // requests); with them, each endpoint sees its in-flight work fail, the trip, and probes.
    let herd_limit = ENDPOINTS * (3 * 8 + 5 + 2 * usize::try_from(storm.as_secs()).unwrap());
    assert!(during <= herd_limit, "{during} requests during the storm (limit {herd_limit})");
    assert!(busiest <= RATE + 3 * BURST + RATE / 2, "{busiest} requests in one second to one endpoint");
    workers.into_iter().for_each(Worker::stop);
}

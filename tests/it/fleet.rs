//! Endpoint protection across a fleet: rate limits and circuit breakers hold for all workers
//! together, and a slow or throttled endpoint's backlog does not delay the others.

use std::process::{Child, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use webhook_worker::config::{RunArgs, Settings};
use webhook_worker::testkit::receiver::{Answer, Receiver};

use crate::support::cli::{binary, free_port, stop};
use crate::support::{TestDb, TestWorker, endpoint, insert_deliveries, wait_until, worker_args};

/// Starts a worker process with its metrics on `port`.
fn worker_process(db: &TestDb, port: u16) -> Child {
    binary(db)
        .arg("run")
        .env("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the worker on `port` reports `webhook_workers_live` of at least `n` (it then
/// divides rate limits by `n`).
async fn wait_for_live_workers(port: u16, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let gauge = format!("webhook_workers_live {n}");
    loop {
        let body = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            stream.write_all(b"GET /metrics HTTP/1.0\r\nhost: x\r\n\r\n").await.ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).await.ok()?;
            Some(text)
        }
        .await;
        if body.is_some_and(|text| text.lines().any(|line| line == gauge)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker on {port} never saw {n} live workers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The largest number of arrivals in any one-second window starting at or after `from`.
fn max_per_second(arrivals: &[DateTime<Utc>], from: DateTime<Utc>) -> usize {
    let window = chrono::Duration::seconds(1);
    arrivals
        .iter()
        .enumerate()
        .filter(|(_, at)| **at >= from)
        .map(|(i, at)| arrivals[i..].iter().take_while(|later| **later < *at + window).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_together_hold_an_endpoints_rate_limit() {
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/limited")).await;
    receiver.expect_secrets("/limited", vec![secret]);
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = 50, rate_limit_burst = 3")
        .execute(&db.pool)
        .await
        .unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let workers: Vec<Child> = ports.iter().map(|port| worker_process(&db, *port)).collect();
    for port in &ports {
        wait_for_live_workers(*port, 3).await;
    }
    insert_deliveries(&db.pool, id, 3000).await;
    let all = receiver.wait_for(3000, Duration::from_secs(180)).await;
    workers.into_iter().for_each(stop);
    assert!(all, "only {} of 3000 arrived", receiver.count());
    let mut arrivals: Vec<DateTime<Utc>> = receiver.received().iter().map(|r| r.arrived_at).collect();
    arrivals.sort();
    let busiest = max_per_second(&arrivals, arrivals[0] + chrono::Duration::seconds(1));
    assert!(busiest <= 55, "{busiest} requests in one second, limit 50/s");
    let seconds = (arrivals[arrivals.len() - 1] - arrivals[0]).num_milliseconds() as f64 / 1000.0;
    eprintln!("rate limit: 3000 deliveries in {seconds:.1} s, busiest second {busiest}");
    assert_eq!(db.count("SELECT count(*) FROM webhook.delivery_attempts").await, 3000, "throttling spent no attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_stops_the_whole_fleet_and_the_backlog_drains_after_recovery() {
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/down")).await;
    receiver.expect_secrets("/down", vec![secret]);
    receiver.answer("/down", Answer { status: 500, ..Answer::default() });
    insert_deliveries(&db.pool, id, 200).await;
    let config = || {
        let mut s = worker_args(&db, "0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s");
        s.worker.breaker_failure_threshold = 5;
        s.worker.breaker_failure_ratio = 1.0;
        s.worker.breaker_cooldown = Duration::from_secs(2);
        s.worker.breaker_max_cooldown = Duration::from_secs(4);
        s.worker.max_in_flight_per_endpoint = 2;
        Settings::from_args(&s).unwrap()
    };
    let workers: Vec<TestWorker> = (0..3).map(|_| TestWorker::start(config())).collect();
    wait_until(&db.pool, "SELECT circuit_state = 'open' FROM webhook.endpoints", Duration::from_secs(30)).await;
    let at_trip = receiver.count();
    // Two probes fail (the cool-down doubles from 2 s to its 4 s ceiling), then the receiver recovers.
    wait_until(
        &db.pool,
        "SELECT circuit_cooldown_ms = 4000 AND circuit_state = 'open' FROM webhook.endpoints",
        Duration::from_secs(30),
    )
    .await;
    let before_recovery = receiver.count();
    receiver.answer("/down", Answer::default());
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", Duration::from_secs(60)).await;
    for worker in workers {
        worker.stop().await;
    }
    eprintln!("breaker: {at_trip} requests before the trip, {} while open", before_recovery - at_trip);
    // Each worker's own detector trips after 5 failures in a row (it re-reads the shared circuit
    // before each send after its first failure, but another worker's trip may still be being
    // stored), and sends nothing more once it tripped; the one other request it may have in flight
    // then (cap 2) still arrives: 3 × (5 + 1), however slowly the trip is stored.
    assert!(at_trip <= 3 * (5 + 1), "the fleet sent {at_trip} failing requests before tripping");
    assert!(
        before_recovery - at_trip <= 2 + 3,
        "while open the fleet sent {} requests, expected the 2 probes",
        before_recovery - at_trip
    );
    let delivered = receiver.received().iter().filter(|r| r.path == "/down").count() - before_recovery;
    assert!(delivered >= 200, "the backlog drained after recovery");
    assert_eq!(
        db.count("SELECT count(*) FROM webhook.delivery_attempts").await,
        i64::try_from(receiver.count()).unwrap(),
        "every recorded attempt is a request the receiver saw: waiting behind the circuit spent none"
    );
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0);
    let state: String =
        sqlx::query_scalar("SELECT circuit_state FROM webhook.endpoints").fetch_one(&db.pool).await.unwrap();
    assert_eq!(state, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_take_turns_so_an_outage_does_not_spend_one_deliverys_attempts() {
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&db.pool, &receiver.url("/down")).await;
    receiver.expect_secrets("/down", vec![secret]);
    receiver.answer("/down", Answer { status: 500, ..Answer::default() });
    insert_deliveries(&db.pool, id, 20).await;
    // Five attempts each; the breaker trips after two failures, long before any delivery has
    // used its five, and probes every second.
    let mut s = worker_args(&db, "0s,0s,0s,0s");
    s.worker.breaker_failure_threshold = 2;
    s.worker.breaker_failure_ratio = 1.0;
    s.worker.breaker_cooldown = Duration::from_secs(1);
    s.worker.breaker_max_cooldown = Duration::from_secs(1);
    s.worker.max_in_flight_per_endpoint = 1;
    let worker = TestWorker::start(Settings::from_args(&s).unwrap());
    // The outage outlasts a schedule: more failed requests than one delivery has attempts, twice.
    wait_until(&db.pool, "SELECT count(*) >= 12 FROM webhook.delivery_attempts", Duration::from_secs(60)).await;
    let most: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM webhook.delivery_attempts GROUP BY delivery_id) x",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0, "a probe ran out of attempts");
    assert!(most <= 3, "one delivery was probed {most} times while others waited");
    let state: String =
        sqlx::query_scalar("SELECT circuit_state FROM webhook.endpoints").fetch_one(&db.pool).await.unwrap();
    assert_ne!(state, "closed", "the circuit stayed open through the outage");
    receiver.answer("/down", Answer::default());
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0);
    let delivered: std::collections::HashSet<String> =
        receiver.received().iter().filter(|r| r.status == 200).map(|r| r.msg_id.clone()).collect();
    assert_eq!(delivered.len(), 20, "every delivery arrived once the endpoint recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_and_a_throttled_backlog_do_not_delay_healthy_endpoints() {
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (hanging, _) = endpoint(&db.pool, &receiver.url("/hang")).await;
    receiver.answer("/hang", Answer { delay: Duration::from_secs(120), ..Answer::default() });
    sqlx::query("UPDATE webhook.endpoints SET timeout_ms = 2000 WHERE id = $1")
        .bind(hanging)
        .execute(&db.pool)
        .await
        .unwrap();
    let (throttled, _) = endpoint(&db.pool, &receiver.url("/slow")).await;
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = 10, rate_limit_burst = 1 WHERE id = $1")
        .bind(throttled)
        .execute(&db.pool)
        .await
        .unwrap();
    insert_deliveries(&db.pool, hanging, 20_000).await;
    insert_deliveries(&db.pool, throttled, 20_000).await;
    let mut healthy = Vec::new();
    for n in 0..50 {
        let path = format!("/ok{n}");
        let (id, secret) = endpoint(&db.pool, &receiver.url(&path)).await;
        receiver.expect_secrets(&path, vec![secret]);
        healthy.push(id);
    }
    let config = || {
        // The default in-flight cap and breaker, as a deployment has them.
        let defaults = RunArgs::defaults().worker;
        let mut s = worker_args(&db, "5s");
        s.worker.max_in_flight_per_endpoint = defaults.max_in_flight_per_endpoint;
        s.worker.breaker_failure_threshold = defaults.breaker_failure_threshold;
        s.worker.breaker_failure_ratio = defaults.breaker_failure_ratio;
        s.worker.breaker_window = defaults.breaker_window;
        s.worker.breaker_cooldown = defaults.breaker_cooldown;
        s.worker.breaker_max_cooldown = defaults.breaker_max_cooldown;
        Settings::from_args(&s).unwrap()
    };
    let workers: Vec<TestWorker> = (0..2).map(|_| TestWorker::start(config())).collect();
    // The workers meet both backlogs first and spread them over time.
    wait_until(
        &db.pool,
        "SELECT count(*) > 39000 FROM webhook.deliveries WHERE run_at > now() + interval '5 seconds'",
        Duration::from_secs(60),
    )
    .await;
    // Fresh traffic to the 50 healthy endpoints while the backlogs are pending: 10 rounds, 100 ms apart.
    for _ in 0..10 {
        sqlx::query(
            "INSERT INTO webhook.deliveries (endpoint_id, event_type, payload) \
             SELECT id, 'fresh', json_build_object('enqueued_at', clock_timestamp())::json FROM unnest($1::uuid[]) AS id",
        )
        .bind(&healthy)
        .execute(&db.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh_arrived = |r: &webhook_worker::testkit::receiver::Received| r.path.starts_with("/ok");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.received().iter().filter(|r| fresh_arrived(r)).count() < 500
        && tokio::time::Instant::now() < deadline
    {
        receiver.wait_for(receiver.count() + 1, Duration::from_millis(500)).await;
    }
    let pending_backlog = db
        .count(&format!("SELECT count(*) FROM webhook.deliveries WHERE endpoint_id IN ('{hanging}', '{throttled}')"))
        .await;
    for worker in workers {
        worker.stop().await;
    }
    let mut latencies: Vec<f64> = receiver
        .received()
        .iter()
        .filter(|r| fresh_arrived(r))
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let enqueued = DateTime::parse_from_rfc3339(body["enqueued_at"].as_str().unwrap()).unwrap();
            (r.arrived_at - enqueued.with_timezone(&Utc)).num_milliseconds() as f64
        })
        .collect();
    assert_eq!(latencies.len(), 500, "every healthy delivery arrived while the backlogs waited");
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies[(latencies.len() * 99) / 100 - 1];
    eprintln!(
        "noisy neighbour: healthy p50 {} ms, p99 {p99} ms, backlog still pending {pending_backlog}",
        latencies[latencies.len() / 2]
    );
    assert!(pending_backlog > 39_000, "the backlogs were still pending during the measurement");
    assert!(p99 < 1000.0, "healthy p99 {p99} ms");
}

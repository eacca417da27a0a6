//! Reliability under faults: worker crashes, Postgres restarts, hostile receivers, bad input,
//! shutdown under load. Each fault is injected by the test itself, on loopback, against a cluster
//! of the test's own where Postgres is stopped. `WEBHOOK_FAULTS_PROFILE=long` runs the long
//! profile (figures in docs/reliability.md); CI runs the short one.

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use webhook_worker::testkit::pgcluster::Cluster;
use webhook_worker::testkit::receiver::{Answer, Receiver};

use crate::support::cli::{binary, free_port, stop};
use crate::support::{TestDb, endpoint, insert_deliveries, wait_until};

pub fn long_profile() -> bool {
    std::env::var("WEBHOOK_FAULTS_PROFILE").is_ok_and(|p| p == "long")
}

/// Worker settings for fault runs: short timeouts and leases so crashes recover quickly, many
/// quick retries, and a breaker that does not get in the way of counting.
pub const FAULT_ENV: &[(&str, &str)] = &[
    ("WEBHOOK_HTTP_TIMEOUT", "2s"),
    ("WEBHOOK_LEASE_DURATION", "7s"),
    ("WEBHOOK_RETRY_SCHEDULE", "0s,0s,1s,1s,1s,2s,2s,2s,2s,2s,2s,2s"),
    ("WEBHOOK_BREAKER_FAILURE_THRESHOLD", "100000"),
    ("WEBHOOK_BREAKER_FAILURE_RATIO", "1"),
    ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "1000"),
    ("WEBHOOK_POLL_INTERVAL", "200ms"),
    ("RUST_LOG", "error"),
];

fn spawn(db: &TestDb, port: u16) -> Child {
    let mut command = binary(db);
    command.arg("run").env("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{port}"));
    for (key, value) in FAULT_ENV {
        command.env(key, value);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Distinct (path, webhook-id) pairs answered 2xx, and all 2xx answers.
pub fn delivered(receiver: &Receiver) -> (usize, usize) {
    let ok: Vec<_> = receiver.received().into_iter().filter(|r| r.status < 300).collect();
    let distinct: HashSet<(String, String)> = ok.iter().map(|r| (r.path.clone(), r.msg_id.clone())).collect();
    (distinct.len(), ok.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_lose_nothing() {
    let (total, limit): (usize, Duration) =
        if long_profile() { (50_000, Duration::from_secs(900)) } else { (8_000, Duration::from_secs(240)) };
    let db = TestDb::exclusive().await;
    let receiver = Receiver::start(None).await.unwrap();
    for n in 0..10 {
        let path = format!("/c{n}");
        let (id, _) = endpoint(&db.pool, &receiver.url(&path)).await;
        // 10 % fail with 500; 5 % answer slowly (within the timeout: timeouts are tested with the
        // hostile receivers, and a timed-out request the receiver still processed is a duplicate).
        receiver.answer(
            &path,
            Answer { fail_ratio: 0.10, slow_ratio: 0.05, slow_delay: Duration::from_millis(250), ..Answer::default() },
        );
        insert_deliveries(&db.pool, id, (total / 10) as i64).await;
    }
    let mut workers: Vec<Child> = (0..3).map(|_| spawn(&db, free_port())).collect();
    let started = tokio::time::Instant::now();
    let (mut kills, mut peak_rss) = (0, 0);
    // Every 5 s, SIGKILL a random worker and start a new one, until everything arrived. Each kill
    // loses the deliveries answered but not yet committed (at-least-once): those are the duplicates.
    while delivered(&receiver).0 + (db.count("SELECT count(*) FROM webhook.dead_letters").await as usize) < total {
        assert!(started.elapsed() < limit, "only {} of {total} delivered after {limit:?}", delivered(&receiver).0);
        receiver.wait_for(receiver.count() + 1_000_000, Duration::from_secs(5)).await;
        let victim = workers.remove(rand::random_range(0..workers.len()));
        peak_rss = peak_rss.max(rss_kib(victim.id(), "VmHWM:"));
        let mut victim = victim;
        victim.kill().unwrap();
        victim.wait().unwrap();
        kills += 1;
        workers.push(spawn(&db, free_port()));
    }
    // Let the survivors finish what the killed workers left (expired leases), so that every
    // duplicate a crash causes is counted.
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", Duration::from_secs(60)).await;
    for worker in &workers {
        peak_rss = peak_rss.max(rss_kib(worker.id(), "VmHWM:"));
    }
    workers.into_iter().for_each(stop);
    let (distinct, answered_ok) = delivered(&receiver);
    let dead = db.count("SELECT count(*) FROM webhook.dead_letters").await as usize;
    let stuck =
        db.count("SELECT count(*) FROM webhook.deliveries WHERE state = 'running' AND lease_expires_at < now()").await;
    // The longest a delivery waited for its first successful answer.
    let max_wait: f64 = sqlx::query_scalar(
        "SELECT coalesce(max(extract(epoch FROM a.attempted_at - f.first)), 0)::float8 FROM webhook.delivery_attempts a \
         JOIN (SELECT message_id, min(attempted_at) AS first FROM webhook.delivery_attempts GROUP BY message_id) f USING (message_id) \
         WHERE a.outcome = 'delivered'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let duplicates = answered_ok - distinct;
    eprintln!(
        "crashes: {total} deliveries, {kills} SIGKILLs, {:.1} s, {distinct} delivered, {dead} dead letters, lost {}, \
         duplicates {duplicates} ({:.3} %), stuck past lease {stuck}, longest first-attempt-to-delivered {max_wait:.1} s, peak worker RSS {} MiB",
        started.elapsed().as_secs_f64(),
        total - distinct - dead,
        100.0 * duplicates as f64 / total as f64,
        peak_rss / 1024
    );
    assert_eq!(distinct + dead, total, "every delivery arrived or is a dead letter by policy");
    assert_eq!(stuck, 0);
    assert!(kills >= 1, "the chaos loop never ran");
    // At-least-once: a SIGKILL can repeat at most what the killed worker had sent and not yet
    // committed, which its concurrency (256) bounds. The ratio is reported; the 0.5 % target is
    // measured by the long profile (docs/reliability.md).
    assert!(duplicates <= kills * 256, "{duplicates} duplicates after {kills} kills");
    if long_profile() {
        // The target, measured with release binaries (the documented long-profile command).
        assert!(duplicates * 200 <= total, "{duplicates} duplicates exceed 0.5 % of {total} deliveries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_and_an_outage_lose_nothing_and_need_no_worker_restart() {
    let _gate = crate::support::db::exclusive().await;
    let total: usize = if long_profile() { 20_000 } else { 3_000 };
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap().unwrap();
    let url = cluster.url("postgres");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    webhook_worker::db::migrate(&pool).await.unwrap();
    let db = TestDb::on_own_cluster(url.clone(), pool.clone());
    let receiver = Receiver::start(None).await.unwrap();
    let (id, _) = endpoint(&pool, &receiver.url("/pg")).await;
    // Paced by a rate limit so the restarts happen mid-run.
    sqlx::query("UPDATE webhook.endpoints SET rate_limit_per_second = 200").execute(&pool).await.unwrap();
    insert_deliveries(&pool, id, total as i64).await;
    pool.close().await;
    let ports = [free_port(), free_port()];
    let mut workers: Vec<Child> = ports.iter().map(|port| spawn(&db, *port)).collect();
    for (at, outage) in
        [(total / 5, Duration::ZERO), (2 * total / 5, Duration::ZERO), (3 * total / 5, Duration::from_secs(10))]
    {
        assert!(receiver.wait_for(at, Duration::from_secs(120)).await, "stalled before {at}");
        cluster = tokio::task::spawn_blocking(move || {
            cluster.stop();
            cluster
        })
        .await
        .unwrap();
        if !outage.is_zero() {
            for port in ports {
                assert!(
                    readyz(port, 503, Duration::from_secs(30)).await,
                    "worker on {port} still ready with Postgres down"
                );
            }
            // The outage itself: Postgres stays down this long.
            tokio::time::sleep(outage).await;
        }
        cluster = tokio::task::spawn_blocking(move || {
            cluster.start_server().unwrap();
            cluster
        })
        .await
        .unwrap();
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let db = TestDb::on_own_cluster(url, pool.clone());
    wait_until(&pool, "SELECT count(*) = 0 FROM webhook.deliveries", Duration::from_secs(180)).await;
    for port in ports {
        assert!(readyz(port, 200, Duration::from_secs(30)).await, "worker on {port} did not become ready again");
    }
    for worker in &mut workers {
        assert!(worker.try_wait().unwrap().is_none(), "a worker exited during the outages");
    }
    workers.into_iter().for_each(stop);
    let (distinct, answered_ok) = delivered(&receiver);
    eprintln!(
        "postgres restarts: {total} deliveries, 3 stops (one 10 s outage), delivered {distinct}, duplicates {}",
        answered_ok - distinct
    );
    assert_eq!(distinct, total);
    assert_eq!(db.count("SELECT count(*) FROM webhook.dead_letters").await, 0);
    drop(cluster);
}

pub async fn readyz(port: u16, status: u16, limit: Duration) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await;
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text).await;
            if text.starts_with(&format!("HTTP/1.1 {status}")) || text.starts_with(&format!("HTTP/1.0 {status}")) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_postgres_waits_and_then_works() {
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap().unwrap();
    let url = cluster.url("postgres");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    webhook_worker::db::migrate(&pool).await.unwrap();
    let receiver = Receiver::start(None).await.unwrap();
    let (id, _) = endpoint(&pool, &receiver.url("/late")).await;
    insert_deliveries(&pool, id, 10).await;
    pool.close().await;
    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let db = TestDb::on_own_cluster(url.clone(), sqlx::PgPool::connect_lazy(&url).unwrap());
    let mut worker = binary(&db)
        .arg("run")
        .env("WEBHOOK_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = worker.stderr.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let line = lines.next().unwrap().unwrap();
        // Keep draining so the worker never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        line
    })
    .await
    .unwrap();
    assert!(first.contains("PostgreSQL is not reachable yet; retrying in"), "{first}");
    assert!(!first.contains("hunter2"), "the URL's password is not logged: {first}");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_server().unwrap();
        cluster
    })
    .await
    .unwrap();
    assert!(receiver.wait_for(10, Duration::from_secs(60)).await, "the worker never started working");
    stop(worker);
    drop(cluster);
}

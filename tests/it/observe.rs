//! What an SRE sees: `/metrics` counts match reality, every dashboard panel and alert expression
//! returns data from a real Prometheus scraping real workers and APIs, `/readyz` follows the
//! database and `/healthz` fails only for a dispatcher stalled while the database answers.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use webhook_worker::observe::health::Health;
use webhook_worker::observe::metrics;
use webhook_worker::observe::server::{Probes, router};
use webhook_worker::testkit::pgcluster::Cluster;
use webhook_worker::testkit::receiver::{Answer, Receiver};

use crate::support::cli::{binary, free_port, stop};
use crate::support::{TestDb, endpoint, insert_deliveries, wait_until};

/// GET `path` on 127.0.0.1:`port`: (status, body), or `None` when nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_as(port, path, None).await
}

/// GET `path` with `token` as the bearer token (`None`: no Authorization header).
async fn get_as(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nhost: x\r\n{auth}\r\n").as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()))
}

/// Polls `path` until it answers `status` (bounded).
async fn wait_for_status(port: u16, path: &str, status: u16, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some((got, body)) = get(port, path).await
            && got == status
        {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} never answered {status} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|text| text.trim().parse().unwrap())
}

fn sample(metrics: &str, series: &str) -> f64 {
    value(metrics, series).unwrap_or_else(|| panic!("{series} is not exported:\n{metrics}"))
}

fn spawn_worker(db: &TestDb, port: u16, extra: &[(&str, &str)]) -> Child {
    let mut command = binary(db);
    command.arg("run").env("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{port}")).env("RUST_LOG", "warn");
    for (key, value) in extra {
        command.env(key, value);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// The management API's bootstrap token in these tests.
const API_TOKEN: &str = "observe-test-bootstrap-token-0123456789";

/// A management API process (`webhook-worker api`) for `db`, listening: (process, API port,
/// metrics port).
async fn spawn_api(db: &TestDb) -> (Child, u16, u16) {
    let (port, metrics_port) = (free_port(), free_port());
    let mut command = binary(db);
    command
        .arg("api")
        .env("WEBHOOK_API_ADDR", format!("127.0.0.1:{port}"))
        .env("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("WEBHOOK_API_BOOTSTRAP_TOKEN", API_TOKEN)
        .env("RUST_LOG", "warn");
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Listening is enough: the health route itself answers 503 for the database without a schema.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while get(port, "/api/v1/health").await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the API on port {port} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, port, metrics_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_happened_and_feed_the_dashboard_and_alerts() {
    let db = TestDb::new().await;
    let receiver = Receiver::start(None).await.unwrap();
    let (ok, ok_secret) = endpoint(&db.pool, &receiver.url("/ok")).await;
    receiver.expect_secrets("/ok", vec![ok_secret]);
    let (gone, _) = endpoint(&db.pool, &receiver.url("/gone")).await;
    receiver.answer("/gone", Answer { status: 410, ..Answer::default() });
    let (failing, _) = endpoint(&db.pool, &receiver.url("/failing")).await;
    receiver.answer("/failing", Answer { status: 500, ..Answer::default() });
    insert_deliveries(&db.pool, ok, 40).await;
    insert_deliveries(&db.pool, gone, 1).await;
    insert_deliveries(&db.pool, failing, 3).await;
    let env = [("WEBHOOK_RETRY_SCHEDULE", "0s"), ("WEBHOOK_BREAKER_FAILURE_THRESHOLD", "100")];
    let port = free_port();
    let worker = spawn_worker(&db, port, &env);
    assert!(receiver.wait_for(40 + 1 + 6, Duration::from_secs(30)).await);
    wait_until(&db.pool, "SELECT count(*) = 0 FROM webhook.deliveries", Duration::from_secs(30)).await;
    // The leader publishes queue statistics every 2 s; wait for a round that saw the empty queue.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = wait_for_status(port, "/metrics", 200, Duration::from_secs(10)).await;
        if metrics.contains("webhook_dead_letters 4") && metrics.contains("webhook_workers_live 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_counts(&metrics, ok);

    // A second worker, and deliveries flowing to both for as long as the check runs: rate()
    // panels are empty without traffic in their window, as an operator's would be. The API's
    // panels and alert read a job of their own: two API processes, one on this database (2xx,
    // and 401 without a token), one on a database without the schema (500s: the alert's signal).
    let second_port = free_port();
    let second = spawn_worker(&db, second_port, &env);
    let unmigrated = TestDb::empty().await;
    let apis = [spawn_api(&db).await, spawn_api(&unmigrated).await];
    let api_ports: Vec<u16> = apis.iter().map(|(_, port, _)| *port).collect();
    let traffic = CancellationToken::new();
    let producer = tokio::spawn(keep_delivering(db.pool.clone(), ok, api_ports, traffic.clone()));
    for port in [port, second_port] {
        wait_until_exported(port, "webhook_delivery_latency_seconds_count").await;
    }
    let mut scrape_text = metrics.clone();
    for (_, _, metrics_port) in &apis {
        scrape_text += &wait_until_exported(*metrics_port, "webhook_api_requests_total{").await;
    }
    wait_until_exported(apis[1].2, "webhook_api_requests_total{route=\"/api/v1/app\",status_class=\"5xx\"}").await;
    let scrape = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(scrape.path(), scrape_text).unwrap();
    let workers = [port, second_port].map(|p| format!("127.0.0.1:{p}"));
    let api_targets = apis.each_ref().map(|(_, _, p)| format!("127.0.0.1:{p}"));
    let (success, text) = check_chart(scrape.path(), &workers.join(","), &api_targets.join(",")).await;
    traffic.cancel();
    producer.await.unwrap();
    for child in [worker, second].into_iter().chain(apis.into_iter().map(|(child, _, _)| child)) {
        stop(child);
    }
    assert!(success, "helm/check.sh failed:\n{text}");
    assert_check_passed(&text, &workers.join(" "), &api_targets.join(" "));
}

fn assert_counts(metrics: &str, ok: Uuid) {
    for (series, expected) in [
        ("webhook_deliveries_total{outcome=\"delivered\"}", 40.0),
        ("webhook_deliveries_total{outcome=\"failed\"}", 1.0),
        ("webhook_deliveries_total{outcome=\"retried\"}", 3.0),
        ("webhook_deliveries_total{outcome=\"dead\"}", 3.0),
        ("webhook_deliveries_total{outcome=\"refused\"}", 0.0),
        ("webhook_deliveries_total{outcome=\"throttled\"}", 0.0),
        ("webhook_delivery_latency_seconds_count", 40.0),
        ("webhook_attempt_duration_seconds_count{status_class=\"2xx\"}", 40.0),
        ("webhook_attempt_duration_seconds_count{status_class=\"4xx\"}", 1.0),
        ("webhook_attempt_duration_seconds_count{status_class=\"5xx\"}", 6.0),
        ("webhook_dead_letters", 4.0),
        ("webhook_queue_depth{state=\"ready\"}", 0.0),
        ("webhook_queue_depth{state=\"running\"}", 0.0),
        ("webhook_queue_oldest_ready_age_seconds", 0.0),
        ("webhook_in_flight", 0.0),
        ("webhook_workers_live", 1.0),
        ("webhook_breaker_open_endpoints", 0.0),
        ("webhook_breaker_transitions_total{to=\"open\"}", 0.0),
        ("webhook_database_errors_total{operation=\"claim\"}", 0.0),
        ("webhook_database_errors_total{operation=\"connect\"}", 0.0),
    ] {
        assert_eq!(sample(metrics, series), expected, "{series}");
    }
    assert!(sample(metrics, "webhook_claim_batch_size_count") >= 1.0);
    assert!(sample(metrics, "webhook_dispatcher_last_progress_timestamp_seconds") > 1.7e9);
    assert!(metrics.contains("webhook_build_info{version=\""), "{metrics}");
    assert!(!metrics.contains(&ok.to_string()) && !metrics.contains("127.0.0.1"), "no endpoint id or URL in labels");
}

/// Every 250 ms until `stop` (or ten minutes, whichever comes first): a few deliveries, and a
/// request with and one without a token to each API.
async fn keep_delivering(pool: sqlx::PgPool, endpoint: Uuid, apis: Vec<u16>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    for _ in 0..2400 {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        insert_deliveries(&pool, endpoint, 5).await;
        for port in &apis {
            get_as(*port, "/api/v1/app", Some(API_TOKEN)).await;
            get_as(*port, "/api/v1/app", None).await;
        }
    }
}

/// Polls `/metrics` on `port` until it has a series starting with `series` with a value above
/// zero (bounded); returns that scrape.
async fn wait_until_exported(port: u16, series: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = wait_for_status(port, "/metrics", 200, Duration::from_secs(10)).await;
        let above_zero =
            |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0);
        if metrics.lines().any(|line| line.starts_with(series) && above_zero(line)) {
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "port {port} never exported {series}:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `helm/check.sh` (lint, render, validate, PromQL names from `scrape`, promtool tests, and every
/// dashboard and alert query against a Prometheus scraping `targets`), bounded by `timeout`, with
/// its outputs in a directory of its own so that concurrent runs do not share them.
async fn check_chart(scrape: &std::path::Path, targets: &str, api_targets: &str) -> (bool, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("timeout");
    command.args(["600", "bash", "helm/check.sh", "--metrics-file"]).arg(scrape);
    command.args(["--live", targets, "--live-api", api_targets]);
    command.env("OUT", out.path()).current_dir(root);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    drop(out);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn assert_check_passed(text: &str, workers: &str, apis: &str) {
    let scraping = format!("scraping the given workers: {workers}\n   and the given management APIs: {apis}");
    assert!(text.contains(&scraping), "the live check did not scrape the workers and APIs:\n{text}");
    // Only what no worker or API can export (kube-state-metrics' series) may be skipped.
    let skipped: Vec<&str> = text.lines().filter(|line| line.starts_with("skip ")).collect();
    assert!(skipped.iter().all(|line| line.contains("(kube-state-metrics)")), "{skipped:#?}");
    assert!(text.contains("ok: every dashboard query and alert signal returns data from a live Prometheus"), "{text}");
    assert!(text.contains("ok: every PromQL expression parses and names only exported metrics (names from"), "{text}");
    // The live tool's own summary: something was queried, nothing came back empty.
    let live = text.lines().find(|line| line.contains(" failed, ") && line.ends_with(" skipped")).unwrap_or("");
    let queried: u32 = live.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(queried > 0 && live.contains(" 0 failed,"), "live Prometheus: {live:?}\n{text}");
    // check.sh's summary is its last line.
    let last = text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("");
    let (passed, rest) = last.split_once(" passed, ").unwrap_or(("", ""));
    assert!(passed.parse::<u32>().is_ok_and(|n| n > 0) && rest == "0 failed", "last line {last:?}:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_only_when_the_dispatcher_stalls_while_the_database_answers() {
    const STALL: Duration = Duration::from_secs(2);
    let health = Arc::new(Health::default());
    let probes = Probes { ready_window: Duration::from_secs(10), stall_timeout: Some(STALL) };
    let app = router(metrics::install(), Arc::clone(&health), probes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let status = |port| async move { get(port, "/healthz").await.map(|(status, _)| status) };

    assert_eq!(get(port, "/healthz").await, Some((200, "ok\n".into())), "waiting at start is not a stall");
    health.progress();
    let body = wait_for_status(port, "/healthz", 503, Duration::from_secs(10)).await;
    let reason = body.strip_prefix("not alive: the dispatcher has made no progress for ");
    assert!(reason.is_some_and(|r| r.ends_with(" ms while the database answers\n")), "{body}");
    let call = health.db_call();
    assert_eq!(status(port).await, Some(200), "a statement waiting on the database (a lock) is not the pod's stall");
    drop(call);
    assert_eq!(status(port).await, Some(503));
    health.database_error("claim");
    assert_eq!(status(port).await, Some(200), "an outage must not restart the pod");
    wait_for_status(port, "/healthz", 503, Duration::from_secs(10)).await;
    health.progress();
    assert_eq!(status(port).await, Some(200));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connections_at_start_are_counted_and_leave_the_worker_alive() {
    let db = TestDb::new().await;
    let url = format!("postgres://nobody@127.0.0.1:{}/none", free_port());
    let port = free_port();
    let worker = spawn_worker(&db, port, &[("DATABASE_URL", url.as_str())]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = wait_for_status(port, "/metrics", 200, Duration::from_secs(10)).await;
        if value(&metrics, "webhook_database_errors_total{operation=\"connect\"}").is_some_and(|n| n >= 2.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "connect errors were not counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(port, "/readyz").await.map(|(s, _)| s), Some(503));
    assert_eq!(get(port, "/healthz").await.map(|(s, _)| s), Some(200), "waiting for the database is not a stall");
    stop(worker);
}

/// What the outage test's worker runs with: two slots, so that two slow deliveries fill them, and
/// a stall timeout the test can wait out (above the HTTP timeout and the 10-s claim back-off).
const OUTAGE_WORKER: &[(&str, &str)] = &[
    ("WEBHOOK_POLL_INTERVAL", "500ms"),
    ("WEBHOOK_CONCURRENCY", "2"),
    ("WEBHOOK_HTTP_TIMEOUT", "8s"),
    ("WEBHOOK_STALL_TIMEOUT", "12s"),
];
const OUTAGE_STALL: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_leaves_the_worker_alive_and_it_recovers_without_a_restart() {
    // This test stops and starts Postgres: it gets a cluster of its own.
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap().unwrap();
    let url = cluster.url("postgres");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    webhook_worker::db::migrate(&pool).await.unwrap();
    let db = TestDb::on_own_cluster(url.clone(), pool.clone());
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&pool, &receiver.url("/r")).await;
    receiver.expect_secrets("/r", vec![secret]);
    // Answers that outlast the start of the outage: both slots then hold results the writer cannot
    // commit, and the dispatcher stalls (waiting for a slot) for as long as Postgres is down.
    receiver.answer("/r", Answer { delay: Duration::from_secs(5), ..Answer::default() });
    let port = free_port();
    let worker = spawn_worker(&db, port, OUTAGE_WORKER);
    wait_for_status(port, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(get(port, "/healthz").await.map(|(s, _)| s), Some(200));
    insert_deliveries(&pool, id, 2).await;
    assert!(receiver.wait_for(2, Duration::from_secs(30)).await);

    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let body = wait_for_status(port, "/readyz", 503, Duration::from_secs(30)).await;
    assert!(body.starts_with("not ready: the database has not answered"), "{body}");
    alive_while_stalled_past(port, OUTAGE_STALL + Duration::from_secs(2)).await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_server().unwrap();
        cluster
    })
    .await
    .unwrap();
    receiver.answer("/r", Answer::default());
    wait_for_status(port, "/readyz", 200, Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    insert_deliveries(&pool, id, 5).await;
    assert!(receiver.wait_for(2 + 5, Duration::from_secs(30)).await, "the same worker delivers after the outage");
    wait_until(&pool, "SELECT count(*) = 0 FROM webhook.deliveries", Duration::from_secs(30)).await;
    stop(worker);
    drop(cluster);
}

/// Polls until the worker's dispatcher has made no progress for `stalled` (its progress gauge),
/// asserting at every round that `/healthz` still answers 200.
async fn alive_while_stalled_past(port: u16, stalled: Duration) {
    let deadline = tokio::time::Instant::now() + stalled + Duration::from_secs(30);
    loop {
        let (status, body) = get(port, "/healthz").await.expect("the worker answers");
        assert_eq!(status, 200, "the database is down, yet the pod would be restarted: {body}");
        let metrics = wait_for_status(port, "/metrics", 200, Duration::from_secs(10)).await;
        let progress = sample(&metrics, "webhook_dispatcher_last_progress_timestamp_seconds");
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        if now - progress > stalled.as_secs_f64() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the dispatcher kept making progress: {}s ago", now - progress);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

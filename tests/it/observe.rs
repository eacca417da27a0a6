//! What an SRE sees: `/metrics` counts match reality, every dashboard and alert expression names
//! a metric the worker really exports, and `/readyz` follows the database.

use std::process::{Child, Stdio};
use std::time::Duration;

use webhook_worker::testkit::pgcluster::Cluster;
use webhook_worker::testkit::receiver::{Answer, Receiver};

use crate::support::cli::{binary, free_port, stop};
use crate::support::{TestDb, endpoint, insert_deliveries, wait_until};

/// GET `path` on 127.0.0.1:`port`: (status, body), or `None` when nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nhost: x\r\n\r\n").as_bytes()).await.ok()?;
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

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} is not exported:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

fn spawn_worker(db: &TestDb, port: u16, extra: &[(&str, &str)]) -> Child {
    let mut command = binary(db);
    command.arg("run").env("WEBHOOK_METRICS_ADDR", format!("127.0.0.1:{port}")).env("RUST_LOG", "warn");
    for (key, value) in extra {
        command.env(key, value);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
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
    let port = free_port();
    let worker =
        spawn_worker(&db, port, &[("WEBHOOK_RETRY_SCHEDULE", "0s"), ("WEBHOOK_BREAKER_FAILURE_THRESHOLD", "100")]);
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
    stop(worker);
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
    ] {
        assert_eq!(sample(&metrics, series), expected, "{series}");
    }
    assert!(sample(&metrics, "webhook_claim_batch_size_count") >= 1.0);
    assert!(sample(&metrics, "webhook_dispatcher_last_progress_timestamp_seconds") > 1.7e9);
    assert!(metrics.contains("webhook_build_info{version=\""), "{metrics}");
    assert!(!metrics.contains(&ok.to_string()) && !metrics.contains("127.0.0.1"), "no endpoint id or URL in labels");

    // Every PromQL expression of the chart's alerts and dashboard parses and names only metrics
    // in this scrape (helm/check.sh also lints, renders and validates the chart).
    let scrape = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(scrape.path(), &metrics).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("helm/check.sh")
            .arg("--metrics-file")
            .arg(scrape.path())
            .current_dir(root)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "helm/check.sh failed:\n{text}");
    assert!(text.contains("promql: 27 passed, 0 failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database_and_the_worker_recovers_without_a_restart() {
    // This test stops and starts Postgres: it gets a cluster of its own.
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap().unwrap();
    let url = cluster.url("postgres");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    webhook_worker::db::migrate(&pool).await.unwrap();
    let db = TestDb::on_own_cluster(url.clone(), pool.clone());
    let receiver = Receiver::start(None).await.unwrap();
    let (id, secret) = endpoint(&pool, &receiver.url("/r")).await;
    receiver.expect_secrets("/r", vec![secret]);
    let port = free_port();
    let worker = spawn_worker(&db, port, &[("WEBHOOK_POLL_INTERVAL", "500ms")]);
    wait_for_status(port, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(get(port, "/healthz").await.map(|(s, _)| s), Some(200));

    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let body = wait_for_status(port, "/readyz", 503, Duration::from_secs(30)).await;
    assert!(body.starts_with("not ready: the database has not answered"), "{body}");
    assert_eq!(get(port, "/healthz").await.map(|(s, _)| s), Some(200), "alive while not ready");

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_server().unwrap();
        cluster
    })
    .await
    .unwrap();
    wait_for_status(port, "/readyz", 200, Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    insert_deliveries(&pool, id, 5).await;
    assert!(receiver.wait_for(5, Duration::from_secs(30)).await, "the same worker delivers after the outage");
    stop(worker);
    drop(cluster);
}

//! `webhook-worker demo`: the whole pipeline on one machine, with nothing to set up.
//!
//! Uses `DATABASE_URL` or starts a throwaway Postgres; migrates; starts an HTTPS receiver (with a
//! CA made up for the run) that verifies every signature; registers endpoints with their own
//! secrets; enqueues events through the producer SQL function; runs a worker in-process with a
//! progress line; prints a summary; cleans up. Succeeds only if every delivery arrived exactly
//! with a valid signature.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::admin::endpoints::{self, Changes};
use crate::config::{RunArgs, Settings};
use crate::db;
use crate::policy::crypto::KeyRing;
use crate::policy::signing::SigningSecret;
use crate::testkit::pgcluster;
use crate::testkit::receiver::{Receiver, TestCa, server_config};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Events to enqueue.
    #[arg(long, env = "WEBHOOK_DEMO_EVENTS", default_value_t = 3000)]
    pub events: u32,
    /// Endpoints to register (each gets its own receiver path and secret).
    #[arg(long, env = "WEBHOOK_DEMO_ENDPOINTS", default_value_t = 4)]
    pub endpoints: u32,
    /// PostgreSQL to use; a throwaway cluster is started when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Deliveries in flight at most.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
}

const EVENT_TYPES: &[&str] = &["order.created", "order.paid", "user.signed_up"];

/// Runs the demo.
///
/// # Errors
/// When any step fails or a delivery is missing or unverified.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (url, _cluster) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            eprintln!("DATABASE_URL is not set: starting a throwaway PostgreSQL cluster…");
            let cluster = tokio::task::spawn_blocking(pgcluster::Cluster::start).await??;
            (SecretString::from(cluster.url("postgres")), Some(cluster))
        }
    };
    let pool = db::pool(&url, 4)?;
    db::migrate(&pool).await.context("migrating the demo database")?;
    let (key_ring, key_ring_text) = KeyRing::generate("demo");
    let ca = TestCa::new()?;
    let receiver = Receiver::start(Some(server_config(ca.issue_localhost()?, &[])?)).await?;
    eprintln!("Receiver verifying signatures on {}", receiver.url("/"));

    let endpoint_ids = register_endpoints(&pool, &key_ring, &receiver, args.endpoints).await?;
    let expected = enqueue_events(&pool, &endpoint_ids, args.events).await?;
    eprintln!("Enqueued {} events → {expected} deliveries to {} endpoints", args.events, endpoint_ids.len());

    let ca_file = ca.pem_file().context("writing the receiver's CA")?;
    let mut run_args = RunArgs::defaults();
    run_args.database.database_url = Some(url.clone());
    run_args.database.db_pool_size = 8;
    run_args.keys.encryption_keys = Some(key_ring_text.as_str().into());
    run_args.metrics_addr = None;
    run_args.worker.concurrency = args.concurrency;
    run_args.worker.allow_private_cidrs = vec!["127.0.0.0/8".parse()?, "::1/128".parse()?];
    run_args.worker.poll_interval = Duration::from_millis(200);
    run_args.worker.ca_bundle = Some(ca_file.path().to_owned());
    let settings = Settings::from_args(&run_args)?;
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(crate::engine::run(settings, stop.clone().cancelled_owned()));
    let arrived = show_progress(&receiver, expected, started).await;
    stop.cancel();
    worker.await??;
    let elapsed = started.elapsed();

    let summary = summarize(&receiver, expected, elapsed);
    let dead: i64 = sqlx::query_scalar(COUNT_DEAD_LETTERS).bind(&endpoint_ids).fetch_one(&pool).await?;
    print!("{summary}");
    println!("  dead letters:       {dead}");
    cleanup(&pool, &endpoint_ids).await?;
    pool.close().await;
    if !arrived || summary.invalid > 0 || summary.distinct != expected || dead > 0 {
        bail!("the demo did not deliver every webhook exactly once with a valid signature");
    }
    println!("OK: every delivery arrived with a valid signature.");
    Ok(())
}

async fn register_endpoints(
    pool: &PgPool,
    key_ring: &KeyRing,
    receiver: &Receiver,
    count: u32,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for n in 0..count.max(1) {
        let secret = SigningSecret::generate();
        let path = format!("/demo/{n}");
        let url = receiver.url(&path);
        // Endpoint n subscribes to one event type, every third endpoint to all of them.
        let types: Vec<String> =
            if n % 3 == 2 { Vec::new() } else { vec![EVENT_TYPES[n as usize % EVENT_TYPES.len()].to_owned()] };
        let changes = Changes {
            url: Some(url),
            event_types: Some(types),
            description: Some("demo".into()),
            ..Changes::default()
        };
        ids.push(endpoints::create(pool, key_ring, &changes, &secret).await?);
        receiver.expect_secrets(&path, vec![secret]);
    }
    Ok(ids)
}

/// Enqueues `events` events of rotating types through `webhook.enqueue`, limited to the demo's
/// endpoints; returns the number of deliveries created.
async fn enqueue_events(pool: &PgPool, endpoints: &[Uuid], events: u32) -> anyhow::Result<usize> {
    let mut total = 0usize;
    for endpoint in endpoints {
        let created: i64 = sqlx::query_scalar(ENQUEUE_EVENTS)
            .bind(i32::try_from(events).unwrap_or(i32::MAX))
            .bind(endpoint)
            .bind(EVENT_TYPES)
            .fetch_one(pool)
            .await?;
        total += usize::try_from(created).unwrap_or(0);
    }
    Ok(total)
}

async fn show_progress(receiver: &Receiver, expected: usize, started: Instant) -> bool {
    let deadline = Duration::from_secs(120);
    loop {
        let done = receiver.wait_for(expected, Duration::from_millis(500)).await;
        let count = receiver.count();
        let rate = count as f64 / started.elapsed().as_secs_f64().max(0.001);
        eprintln!("  delivered {count:>6} / {expected}  ({rate:>7.0}/s)");
        if done {
            return true;
        }
        if started.elapsed() > deadline {
            eprintln!("gave up waiting after {deadline:?}");
            return false;
        }
    }
}

struct Summary {
    distinct: usize,
    invalid: usize,
    text: String,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn summarize(receiver: &Receiver, expected: usize, elapsed: Duration) -> Summary {
    let received = receiver.received();
    let invalid = received.iter().filter(|r| !r.valid).count();
    let mut keys: Vec<(&str, &str)> = received.iter().map(|r| (r.path.as_str(), r.msg_id.as_str())).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut latencies: Vec<f64> = received
        .iter()
        .filter_map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).ok()?;
            let enqueued = chrono::DateTime::parse_from_rfc3339(body.get("enqueued_at")?.as_str()?).ok()?;
            Some((r.arrived_at - enqueued.with_timezone(&chrono::Utc)).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct =
        |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    let text = format!(
        "\nSummary\n  expected:           {expected}\n  delivered:          {} ({} requests)\n  \
         invalid signatures: {invalid}\n  failed:             {}\n  throughput:         {:.0} deliveries/s over {:.2} s\n  \
         enqueue→delivered:  p50 {:.1} ms, p99 {:.1} ms (includes the backlog: all events were enqueued first)\n",
        keys.len(),
        received.len(),
        expected.saturating_sub(keys.len()),
        keys.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    );
    Summary { distinct: keys.len(), invalid, text }
}

async fn cleanup(pool: &PgPool, endpoints: &[Uuid]) -> anyhow::Result<()> {
    for sql in [DELETE_DELIVERIES, DELETE_DEAD_LETTERS, DELETE_ATTEMPTS, DELETE_ENDPOINTS] {
        sqlx::query(sql).bind(endpoints).execute(pool).await?;
    }
    Ok(())
}

const COUNT_DEAD_LETTERS: &str = "SELECT count(*) FROM webhook.dead_letters WHERE endpoint_id = ANY($1)";
const ENQUEUE_EVENTS: &str = r#"
SELECT coalesce(sum(e.deliveries), 0)::bigint
FROM generate_series(1, $1) AS n,
     LATERAL webhook.enqueue(($3::text[])[1 + n % 3],
                             json_build_object('n', n, 'enqueued_at', clock_timestamp())::json, NULL, $2) AS e
"#;
const DELETE_DELIVERIES: &str = "DELETE FROM webhook.deliveries WHERE endpoint_id = ANY($1)";
const DELETE_DEAD_LETTERS: &str = "DELETE FROM webhook.dead_letters WHERE endpoint_id = ANY($1)";
const DELETE_ATTEMPTS: &str = "DELETE FROM webhook.delivery_attempts WHERE endpoint_id = ANY($1)";
const DELETE_ENDPOINTS: &str = "DELETE FROM webhook.endpoints WHERE id = ANY($1)";

/// Every statement of the demo, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("count_dead_letters", COUNT_DEAD_LETTERS),
    ("enqueue_events", ENQUEUE_EVENTS),
    ("delete_deliveries", DELETE_DELIVERIES),
    ("delete_dead_letters", DELETE_DEAD_LETTERS),
    ("delete_attempts", DELETE_ATTEMPTS),
    ("delete_endpoints", DELETE_ENDPOINTS),
];

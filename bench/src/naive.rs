//! Phase 5, a naive baseline for contrast: the pattern several Postgres-backed webhook senders
//! use. Each of N connections opens a transaction, locks one delivery (`FOR UPDATE SKIP LOCKED
//! LIMIT 1`), signs and POSTs it *with the transaction open*, then deletes it, records the
//! attempt and commits. Same receiver, same TLS, same signing code, same history row.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use uuid::Uuid;
use webhook_worker::policy::signing::{self, SigningSecret};

use crate::bench::{Bench, ratio};
use crate::results::NaiveRun;

/// Where and how to send each endpoint's deliveries.
type Targets = Arc<HashMap<Uuid, (String, SigningSecret)>>;

/// Runs the baseline; `secrets` are the endpoints' (path, secret), in the rig's endpoint order.
///
/// # Errors
/// Database or HTTP errors.
pub async fn run(bench: &Bench, secrets: &[(String, SigningSecret)], ceiling: f64) -> anyhow::Result<NaiveRun> {
    let rows = bench.sizes.naive_rows;
    let connections = bench.sizes.naive_connections;
    bench.rig.clear().await?;
    bench.rig.fill(rows).await?;
    bench.sink.reset(false);
    let targets: Targets = Arc::new(
        bench
            .rig
            .endpoints
            .iter()
            .zip(secrets)
            .map(|(id, (path, secret))| (*id, (bench.sink.url(path), secret.clone())))
            .collect(),
    );
    let client = client(bench.fleet.ca_bundle.as_deref())?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(connections)?)
        .connect(&bench.rig.url)
        .await?;
    let pg_start = bench.postgres_cpu();
    let started = tokio::time::Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (pool, client, targets, done) = (pool.clone(), client.clone(), Arc::clone(&targets), Arc::clone(&done));
        loops.spawn(async move { deliver_one_by_one(&pool, &client, &targets, &done).await });
    }
    while let Some(finished) = loops.join_next().await {
        finished??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let pg = bench.postgres_cpu() - pg_start;
    pool.close().await;
    let deliveries = done.load(Ordering::SeqCst);
    let per_second = ratio(deliveries as f64, seconds);
    eprintln!("  naive, {connections} connections: {per_second:.0} deliveries/s");
    Ok(NaiveRun {
        connections,
        deliveries,
        seconds,
        per_second,
        ratio_to_ceiling: ratio(per_second, ceiling),
        postgres_cpu_us_per_delivery: ratio(pg * 1e6, deliveries as f64),
    })
}

fn client(ca_bundle: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    webhook_worker::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30));
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).context("reading the receiver's CA")?;
        builder = builder.tls_certs_merge([reqwest::Certificate::from_pem(&pem)?]);
    }
    Ok(builder.build()?)
}

async fn deliver_one_by_one(
    pool: &sqlx::PgPool,
    client: &reqwest::Client,
    targets: &Targets,
    done: &AtomicU64,
) -> anyhow::Result<()> {
    loop {
        let mut tx = pool.begin().await?;
        let row: Option<(i64, String, Uuid, String, i32)> = sqlx::query_as(
            "SELECT id, message_id, endpoint_id, payload::text, attempt + 1 FROM webhook.deliveries \
             WHERE state = 'pending' AND run_at <= now() ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, message_id, endpoint_id, payload, attempt)) = row else { return Ok(()) };
        let (url, secret) = targets.get(&endpoint_id).context("a delivery for an unknown endpoint")?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature =
            signing::signature_header(std::slice::from_ref(secret), &message_id, timestamp, payload.as_bytes());
        let sent = tokio::time::Instant::now();
        let status = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(payload)
            .send()
            .await?
            .status()
            .as_u16();
        let duration_ms = i32::try_from(sent.elapsed().as_millis()).unwrap_or(i32::MAX);
        sqlx::query("DELETE FROM webhook.deliveries WHERE id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO webhook.delivery_attempts (delivery_id, message_id, endpoint_id, attempt, attempted_at, \
             duration_ms, outcome, status_code, worker_id) VALUES ($1, $2, $3, $4, now(), $5, 'delivered', $6, 'naive')",
        )
        .bind(id)
        .bind(&message_id)
        .bind(endpoint_id)
        .bind(attempt)
        .bind(duration_ms)
        .bind(i32::from(status))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done.fetch_add(1, Ordering::SeqCst);
    }
}

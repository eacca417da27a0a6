//! webhook-delivery: stateless workers that deliver signed webhooks from a PostgreSQL queue.
//!
//! # Layout
//! - [`config`]: command line and environment → validated [`config::Settings`].
//! - [`db`]: pool, reachability wait, embedded migrations.
//! - [`queue`]: every delivery-queue statement (claim, complete, reap), fenced by lease token.
//! - [`dispatcher`]: the claim loop, bounded by a semaphore, woken by LISTEN or a jittered poll.
//! - [`attempt`]: one delivery end to end; the only module that combines the others.
//! - [`completer`]: batched, retried writes of attempt results.
//! - [`endpoints`]: endpoint SQL and the short-lived endpoint cache.
//! - [`deliver`]: the HTTPS client; [`netguard`]: the SSRF guard; [`signing`]: Standard Webhooks
//!   HMAC; [`crypto`]: AES-256-GCM secrets at rest; [`retry`]: outcome → disposition → delay.
//! - [`maintenance`]: heartbeats and the leader's maintenance; [`health`], [`server`], [`metrics`],
//!   [`telemetry`], [`shutdown`]: operating the process.
//! - [`pgcluster`], [`receiver`], [`demo`], [`cli`]: the demo, the operator commands and the
//!   pieces tests share (a throwaway Postgres, a verifying receiver).

pub mod attempt;
pub mod breaker;
pub mod cli;
pub mod completer;
pub mod config;
pub mod crypto;
pub mod db;
pub mod deliver;
pub mod deliveries;
pub mod demo;
pub mod dispatcher;
pub mod endpoint_admin;
pub mod endpoint_view;
pub mod endpoints;
pub mod health;
pub mod keys;
pub mod maintenance;
pub mod metrics;
pub mod netguard;
pub mod pgcluster;
pub mod protect;
pub mod queue;
pub mod receiver;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod signing;
pub mod stats;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::shutdown::Shutdown;

/// How long endpoint rows are cached by a worker.
const ENDPOINT_CACHE_TTL: Duration = Duration::from_secs(2);
/// How often heartbeats and leader maintenance run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(2);

/// Runs a worker until `shutdown` resolves, then stops claiming, lets in-flight deliveries finish
/// for up to the drain deadline, hands back the rest and writes every result before returning.
///
/// # Errors
/// When the HTTP client or the metrics listener cannot be set up. A database that is unreachable
/// at start is waited for (with backoff), not an error.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let stop = Shutdown::default();
    let health = Arc::new(health::Health::default());
    let pool = db::pool(&settings.database_url, settings.db_pool_size)?;
    if let Some(addr) = settings.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        let window = (settings.poll_interval * 3).max(Duration::from_secs(10));
        let app = server::router(metrics::install(), Arc::clone(&health), window);
        let stopped = stop.abort_in_flight.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await;
            if let Err(err) = served {
                tracing::error!(error = %err, "The metrics listener failed");
            }
        });
        tracing::info!("Serving /metrics, /healthz and /readyz on {addr}");
    }
    let deliverer = deliver::Deliverer::new(settings.client.clone(), Arc::new(netguard::SystemLookup))?;
    tokio::pin!(shutdown);
    tokio::select! {
        waited = db::wait_until_reachable(&pool, &stop.stop_claiming) => waited?,
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(worker.id = %settings.worker_id, concurrency = settings.concurrency, "Worker started");

    let (completer, writer) = completer::spawn(
        completer::Writer {
            pool: pool.clone(),
            worker_id: settings.worker_id.clone(),
            health: Arc::clone(&health),
            cooldown: settings.protect.breaker.cooldown,
            max_cooldown: settings.protect.breaker.max_cooldown,
        },
        settings.concurrency * 2,
    );
    let live_workers = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let wake = Arc::new(Notify::new());
    let listen_stop = CancellationToken::new();
    let listener = tokio::spawn(listen(pool.clone(), Arc::clone(&wake), listen_stop.clone()));
    let maintenance_stop = CancellationToken::new();
    let maintenance = tokio::spawn(maintenance::run(
        maintenance::MaintenanceSettings {
            worker_id: settings.worker_id.clone(),
            interval: MAINTENANCE_INTERVAL,
            max_attempts: settings.retry.max_attempts(),
            database_url: settings.database_url.clone(),
            retention: settings.retention,
        },
        pool.clone(),
        Arc::clone(&health),
        Arc::clone(&live_workers),
        maintenance_stop.clone(),
    ));
    let parts = dispatcher::Parts {
        pool: pool.clone(),
        endpoints: Arc::new(endpoints::EndpointCache::new(
            pool.clone(),
            Arc::clone(&settings.key_ring),
            ENDPOINT_CACHE_TTL,
        )),
        attempt: Arc::new(attempt::AttemptContext {
            deliverer,
            retry: settings.retry.clone(),
            max_payload_bytes: settings.max_payload_bytes,
            guard: protect::Guard::new(pool.clone(), settings.protect, live_workers),
        }),
        completer,
        health,
        wake,
    };
    let dispatch_settings = dispatcher::DispatchSettings {
        worker_id: settings.worker_id.clone(),
        concurrency: settings.concurrency,
        batch_size: settings.batch_size,
        poll_interval: settings.poll_interval,
        lease_duration: settings.lease_duration,
        max_payload_bytes: settings.max_payload_bytes,
    };
    let dispatcher = dispatcher::run(dispatch_settings, parts, stop.clone());
    tokio::pin!(dispatcher);
    tokio::select! {
        () = &mut dispatcher => {}
        () = &mut shutdown => {
            stop.stop_claiming.cancel();
            let drained = tokio::time::timeout(settings.drain_deadline, &mut dispatcher).await;
            if drained.is_err() {
                tracing::warn!("Drain deadline of {:?} passed; handing in-flight deliveries back", settings.drain_deadline);
                stop.abort_in_flight.cancel();
                dispatcher.await;
            }
        }
    }
    stop.stop_claiming.cancel();
    stop.abort_in_flight.cancel();
    // The dispatcher and its attempts are done: their completer handles are dropped, so the writer
    // finishes once everything is written.
    writer.await.context("the completion writer panicked")?;
    listen_stop.cancel();
    maintenance_stop.cancel();
    let _ = listener.await;
    let _ = maintenance.await;
    pool.close().await;
    tracing::info!("Worker stopped; every result is written");
    Ok(())
}

/// LISTENs for producers' inserts and wakes the dispatcher; reconnects after errors. Losing a
/// notification only costs latency: the dispatcher also polls.
async fn listen(pool: sqlx::PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::debug!(error = %err, "LISTEN connection failed; relying on polling for now");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        if let Err(err) = listener.listen("webhook_deliveries").await {
            tracing::debug!(error = %err, "LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(_) => wake.notify_one(),
                    Err(err) => {
                        tracing::debug!(error = %err, "LISTEN connection lost");
                        break;
                    }
                },
                () = stop.cancelled() => return,
            }
        }
    }
}

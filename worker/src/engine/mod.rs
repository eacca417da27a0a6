//! The delivery engine, in the order a delivery passes through it: [`queue`] (every hot-path
//! statement) → [`dispatcher`] (the claim loop, woken by [`wake`]) → [`attempt`] (one delivery:
//! [`protect`] admission, the [`endpoints`] cache, [`deliver`] over HTTPS through [`resolve`]) →
//! [`completion`] → [`completer`] (batched, fenced writes). [`circuit`] stores the breaker's
//! decided states; [`maintenance`] is heartbeats and the leader's work, [`stats`] its statistics; [`shutdown`] the
//! two-step stop. [`run`] wires them together.

pub mod attempt;
pub mod circuit;
pub mod completer;
pub mod completion;
pub mod deliver;
pub mod dispatcher;
pub mod egress;
pub mod endpoints;
pub mod forensics;
pub mod maintenance;
pub mod protect;
pub mod queue;
pub mod resolve;
pub mod shutdown;
pub mod stats;
pub mod wake;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{ServerSettings, Settings};
use crate::db;
use crate::engine::shutdown::Shutdown;
use crate::observe::health::Health;
use crate::observe::{metrics, server};

/// Runs a worker until `shutdown` resolves, then stops claiming, lets in-flight deliveries finish
/// for up to the drain deadline, hands back the rest and writes every result before returning.
///
/// # Errors
/// When the HTTP client or the metrics listener cannot be set up. A database that is unreachable
/// at start is waited for (with backoff), not an error.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let stop = Shutdown::default();
    let health = Arc::new(Health::default());
    let pool = db::pool(&settings.database.url, settings.database.pool_size)?;
    serve_metrics(settings.server, Arc::clone(&health), &stop).await?;
    let deliverer = deliver::Deliverer::new(settings.attempt.client.clone(), Arc::new(resolve::SystemLookup))?;
    tokio::pin!(shutdown);
    tokio::select! {
        waited = db::wait_until_reachable(&pool, &stop.stop_claiming, || health.database_error("connect")) => waited?,
        () = &mut shutdown => return Ok(()),
    }
    tracing::info!(worker.id = %settings.worker_id, concurrency = settings.dispatch.concurrency, "Worker started");

    let writer = completer::Writer {
        pool: pool.clone(),
        worker_id: settings.completion.worker_id.clone(),
        health: Arc::clone(&health),
    };
    let (completer, writer) = completer::spawn(writer, settings.completion.capacity);
    let live_workers = Arc::new(AtomicUsize::new(1));
    let background = CancellationToken::new();
    let cache =
        Arc::new(endpoints::EndpointCache::new(pool.clone(), settings.key_ring, settings.dispatch.endpoint_cache_ttl));
    let wake = wake::Wake::listen(pool.clone(), Arc::clone(&cache), background.clone());
    let maintenance = tokio::spawn(maintenance::run(
        settings.maintenance.clone(),
        pool.clone(),
        Arc::clone(&health),
        Arc::clone(&live_workers),
        background.clone(),
    ));
    let parts = dispatcher::Parts {
        pool: pool.clone(),
        endpoints: cache,
        attempt: Arc::new(attempt::AttemptContext {
            deliverer,
            settings: settings.attempt,
            guard: protect::Guard::new(pool.clone(), settings.protect, live_workers),
        }),
        completer,
        health,
        wake: wake.notify(),
    };
    drain(dispatcher::run(settings.dispatch, parts, stop.clone()), shutdown, &stop, settings.drain_deadline).await;
    // The dispatcher and its attempts are done: their completer handles are dropped, so the writer
    // finishes once everything is written.
    writer.await.context("the completion writer panicked")?;
    background.cancel();
    wake.stopped().await;
    let _ = maintenance.await;
    close(pool).await;
    Ok(())
}

/// Runs `dispatcher` until it ends or `shutdown` resolves; then stops claiming and gives
/// in-flight deliveries `deadline` to finish before they are handed back.
async fn drain(
    dispatcher: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
    stop: &Shutdown,
    deadline: std::time::Duration,
) {
    tokio::pin!(dispatcher);
    tokio::select! {
        () = &mut dispatcher => {}
        () = shutdown => {
            stop.stop_claiming.cancel();
            if tokio::time::timeout(deadline, &mut dispatcher).await.is_err() {
                tracing::warn!("Drain deadline of {deadline:?} passed; handing in-flight deliveries back");
                stop.abort_in_flight.cancel();
                dispatcher.await;
            }
        }
    }
    stop.stop_claiming.cancel();
    stop.abort_in_flight.cancel();
}

/// Starts the `/metrics`, `/healthz` and `/readyz` listener, if one is configured; it stops when
/// in-flight work is aborted.
async fn serve_metrics(server: ServerSettings, health: Arc<Health>, stop: &Shutdown) -> anyhow::Result<()> {
    let Some(addr) = server.metrics_addr else { return Ok(()) };
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics listener on {addr}"))?;
    let probes = server::Probes { ready_window: server.ready_window, stall_timeout: Some(server.stall_timeout) };
    let app = server::router(metrics::install(), health, probes);
    let stopped = stop.abort_in_flight.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await;
        if let Err(err) = served {
            tracing::error!(error = %err, "The metrics listener failed");
        }
    });
    tracing::info!("Serving /metrics, /healthz and /readyz on {addr}");
    Ok(())
}

async fn close(pool: PgPool) {
    pool.close().await;
    tracing::info!("Worker stopped; every result is written");
}

//! The management API (`webhook-worker api`): applications, endpoints, messages and attempts in
//! the Svix v1 shape, so the official Svix SDKs work against it by setting their server URL. A
//! front, not a second engine: every handler calls [`crate::admin`], and a message takes the SQL
//! producers' path (`webhook.enqueue()`).
//!
//! [`applications`], [`endpoints`], [`messages`] and [`catalog`] hold the handlers; [`models`] the
//! bodies ([`forensics`]: the attempt's forensics, beyond Svix); [`extract`] the token, body and
//! query extractors; [`error`] the error bodies; [`openapi`] the document generated from all of
//! them; [`state`] what handlers share; [`throttle`] the per-token request rate (429);
//! [`ingest`] the batching message writer.

pub mod applications;
pub mod catalog;
pub mod endpoints;
pub mod error;
pub mod extract;
pub mod forensics;
pub mod ingest;
pub mod messages;
pub mod models;
pub mod openapi;
pub mod state;
pub mod throttle;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;

pub use self::state::AppState;
use crate::config::ApiSettings;
use crate::observe::health::Health;
use crate::observe::{metrics, server};

/// The router over `state`, with bodies limited to `max_body_bytes`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let app = "/api/v1/app/{app_id}";
    let endpoint = "/api/v1/app/{app_id}/endpoint/{endpoint_id}";
    Router::new()
        .route("/api/v1/health", get(catalog::health))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/app", get(applications::list).post(applications::create))
        .route(
            app,
            get(applications::get).put(applications::update).patch(applications::patch).delete(applications::delete),
        )
        .route(&format!("{app}/endpoint"), get(endpoints::list).post(endpoints::create))
        .route(endpoint, get(endpoints::get).put(endpoints::update).patch(endpoints::patch).delete(endpoints::delete))
        .route(&format!("{endpoint}/secret"), get(endpoints::get_secret))
        .route(&format!("{endpoint}/secret/rotate"), post(endpoints::rotate_secret))
        .route(
            &format!("{endpoint}/headers"),
            get(endpoints::get_headers).put(endpoints::put_headers).patch(endpoints::patch_headers),
        )
        .route(&format!("{endpoint}/recover"), post(endpoints::recover))
        .route(&format!("{app}/msg"), get(messages::list).post(messages::create))
        .route(&format!("{app}/msg/{{msg_id}}"), get(messages::get))
        .route(&format!("{app}/msg/{{msg_id}}/endpoint/{{endpoint_id}}/resend"), post(messages::resend))
        .route(&format!("{app}/attempt/msg/{{msg_id}}"), get(messages::attempts_of_message))
        .route(&format!("{app}/attempt/endpoint/{{endpoint_id}}"), get(messages::attempts_of_endpoint))
        .route("/api/v1/event-type", get(catalog::list).post(catalog::create))
        .route("/api/v1/event-type/{event_type_name}", get(catalog::get))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(measure))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> error::ApiError {
    error::ApiError::NotFound("no such route".into())
}

/// Counts every request by its route template (never an id) and status class.
async fn measure(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let started = tokio::time::Instant::now();
    let response = next.run(request).await;
    metrics::api_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// `/readyz` fails when the database has not answered for this long.
const READY_WINDOW: std::time::Duration = std::time::Duration::from_secs(15);

/// Keeps `/readyz` true while the database answers (the API has no dispatcher: its progress is
/// the ping's).
async fn watch_database(pool: sqlx::PgPool, health: Arc<Health>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        if crate::db::ping(&pool).await.is_ok() {
            health.database_ok();
            health.progress();
        }
    }
}

/// Serves the API until `shutdown` resolves, then finishes the requests under way.
///
/// # Errors
/// When a listener cannot be bound or the key ring is unusable.
pub async fn serve(settings: ApiSettings, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let pool = crate::db::pool(&settings.database.url, settings.database.pool_size)?;
    let state = AppState {
        pool: pool.clone(),
        key_ring: settings.key_ring,
        policy: settings.policy,
        tokens: Arc::default(),
        bootstrap: settings.bootstrap_token_sha256,
        throttle: Arc::new(throttle::Throttle::new(settings.rate_limit)),
        // At most half the connections write message batches; the rest serve everything else.
        ingest: ingest::Ingest::start(pool.clone(), (settings.database.pool_size as usize / 2).min(ingest::WRITERS)),
    };
    if let Some(addr) = settings.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let health = Arc::new(Health::default());
        tokio::spawn(watch_database(pool.clone(), Arc::clone(&health)));
        // The API has no dispatcher to stall: it is alive while it serves.
        let probes = server::Probes { ready_window: READY_WINDOW, stall_timeout: None };
        let app = server::router(metrics::install(), health, probes);
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    metrics::install();
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding the API listener on {}", settings.addr))?;
    tracing::info!("Management API listening on {}", settings.addr);
    // An answer is one small write; without TCP_NODELAY it can wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "Could not set TCP_NODELAY on an API connection");
        }
    });
    axum::serve(listener, router(state, settings.max_body_bytes)).with_graceful_shutdown(shutdown).await?;
    pool.close().await;
    Ok(())
}

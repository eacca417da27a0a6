//! `/metrics`, `/healthz` and `/readyz` on the metrics port.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::observe::health::Health;

/// What the probes judge by.
#[derive(Debug, Clone, Copy)]
pub struct Probes {
    /// `/readyz` fails when the database or the dispatcher showed nothing for this long.
    pub ready_window: Duration,
    /// `/healthz` fails when the dispatcher stalled for this long while the database answers
    /// ([`Health::alive`]); `None`: a process without a dispatcher (the API), alive while it serves.
    pub stall_timeout: Option<Duration>,
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
    probes: Probes,
}

/// The router: `/healthz` answers 200 unless the dispatcher stalled while the database answers;
/// `/readyz` only while the database answers and the dispatcher makes progress.
pub fn router(metrics: PrometheusHandle, health: Arc<Health>, probes: Probes) -> Router {
    Router::new()
        .route("/metrics", get(|State(state): State<AppState>| async move { state.metrics.render() }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health, probes })
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.probes.stall_timeout.map_or(Ok(()), |stall| state.health.alive(stall)) {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not alive: {reason}\n")),
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.health.ready(state.probes.ready_window) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

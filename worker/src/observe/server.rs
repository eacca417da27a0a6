//! `/metrics`, `/healthz` and `/readyz` on the metrics port.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::observe::health::Health;

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
    ready_window: Duration,
}

/// The router: `/healthz` answers while the process runs; `/readyz` only while the database answers
/// and the dispatcher makes progress within `ready_window`.
pub fn router(metrics: PrometheusHandle, health: Arc<Health>, ready_window: Duration) -> Router {
    Router::new()
        .route("/metrics", get(|State(state): State<AppState>| async move { state.metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health, ready_window })
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.health.ready(state.ready_window) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

//! Operating the process: [`metrics`] (every metric name and label), [`health`] (what `/readyz`
//! reports), [`server`] (`/metrics`, `/healthz`, `/readyz`), [`telemetry`] (logging).

pub mod health;
pub mod metrics;
pub mod server;
pub mod telemetry;

//! Operator operations as a library: what the CLI does today and the management API will do.
//! Each module owns its SQL and its rules; callers only format the results.
//!
//! - [`endpoints`]: register, change, pause, disable, delete, rotate secrets; [`endpoints::read`]
//!   lists and shows them with their health.
//! - [`deliveries`]: list, show with attempts, replay dead letters.
//! - [`enqueue`]: the producer's SQL function, for operators and tests.
//! - [`keys`]: which keys seal what; online re-encryption under the active key.
//! - [`stats`]: queue depth, age and the endpoints behind them.
//! - [`schema`]: migrations and the schema version.

pub mod deliveries;
pub mod endpoints;
pub mod enqueue;
pub mod keys;
pub mod schema;
pub mod stats;

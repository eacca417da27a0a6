//! Operator operations as a library: what the CLI does today and the management API will do.
//! Each module owns its SQL and its rules; callers only format the results.
//!
//! - [`applications`]: the tenants; [`ids`]: public ids (`app_…`, `ep_…`) and the caller's
//!   [`ids::Scope`]; [`page`]: Svix-shaped pages.
//! - [`endpoints`]: register, change, pause, disable, delete, rotate secrets; [`endpoints::read`]
//!   lists and shows them with their health; [`endpoints::tenant`] reads them per application.
//! - [`messages`]: send (through `webhook.enqueue()`), read, list, resend; [`message_batch`]:
//!   send many in one statement; [`attempts`]: their history; [`event_types`]: the catalogue.
//! - [`tokens`]: management API tokens.
//! - [`deliveries`]: list, show with attempts, replay dead letters.
//! - [`enqueue`]: the producer's SQL function, for operators and tests.
//! - [`keys`]: which keys seal what; online re-encryption under the active key.
//! - [`stats`]: queue depth, age and the endpoints behind them.
//! - [`schema`]: migrations and the schema version.

pub mod applications;
pub mod attempts;
pub mod deliveries;
pub mod endpoints;
pub mod enqueue;
pub mod event_types;
pub mod ids;
pub mod keys;
pub mod message_batch;
pub mod messages;
pub mod page;
pub mod schema;
pub mod stats;
pub mod tokens;

//! webhook-delivery: stateless workers that deliver signed webhooks from a PostgreSQL queue.
//!
//! # Layout
//! Rooms, each allowed to use only the rooms listed after it (`rooms_import_only_downwards`
//! checks this):
//! - [`cli`]: the `webhook-worker` commands: parse, call [`admin`], [`api`] or [`engine`], format (text, `--json`).
//! - [`api`]: the management API (Svix v1 shape) over [`admin`].
//! - [`testkit`] (feature `testkit`): the demo, a verifying receiver, a throwaway cluster.
//! - [`admin`]: operator operations as a library (endpoints, deliveries and replay, keys, stats).
//! - [`engine`]: the delivery path: queue → dispatcher → attempt → completer, protection, maintenance.
//! - [`config`]: the only code reading flags and the environment; one validated settings tree.
//! - [`observe`]: metrics (every name and label), health, the metrics server, logging.
//! - [`db`]: pool, reachability wait, embedded migrations; [`tls`]: the process's TLS provider.
//! - [`sql`]: the registry of every fixed SQL statement, prepared by one test.
//! - [`policy`]: pure decisions, no I/O: retry, signing, crypto, address policy, circuit, states.

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod engine;
pub mod observe;
pub mod policy;
pub mod sql;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;

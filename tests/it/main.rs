//! Integration tests: real PostgreSQL (`DATABASE_URL`, or a throwaway cluster started by the
//! harness), real HTTP/HTTPS receivers on loopback. One binary, so one cluster serves them all.

#![expect(clippy::unwrap_used, reason = "a test fails loudly at the first unexpected error")]

mod api;
mod bad_input;
mod chaos;
mod delivery;
mod egress;
mod faults;
mod fleet;
mod history;
mod hostile;
mod house;
mod ingest;
mod observe;
mod operate;
mod operational;
mod process;
mod producer;
mod properties;
mod protection;
mod queue;
mod sharding;
mod support;
mod tenants;
mod tls;

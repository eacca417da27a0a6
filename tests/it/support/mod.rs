//! Shared test harness: databases, workers, endpoints.

pub mod db;
pub mod worker;

pub use db::TestDb;
pub use worker::{TestWorker, endpoint, insert_deliveries, settings, wait_until};

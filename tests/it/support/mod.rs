//! Shared test harness: databases, workers, endpoints.

pub mod api;
pub mod cli;
pub mod db;
pub mod python;
pub mod worker;

pub use db::TestDb;
pub use worker::{TestWorker, endpoint, insert_deliveries, settings, wait_until, worker_args};

/// How many migrations `schema/migrations` holds (the schema version after `migrate`).
pub fn migration_count() -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".up.sql"))
        .count() as i64
}

/// The newest migration's version (its `NNNN_` prefix): the schema version after `migrate`. Not
/// the count, which differs while a branch adds a migration whose predecessor is on another.
pub fn latest_migration() -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().split('_').next()?.parse().ok())
        .max()
        .unwrap()
}

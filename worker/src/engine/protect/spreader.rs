//! Spreading an endpoint's waiting backlog over time in the database (`queue::spread_backlog`),
//! in the background and at most once at a time per endpoint in this worker: a spread that takes
//! long (a backlog of an hour) must not have the next one queue up behind it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::observe::metrics::{self, Deferral};

/// How far ahead a backlog is spread at most per call.
const HORIZON: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Spreader {
    pool: PgPool,
    /// The endpoints whose backlog this worker is spreading now.
    running: Arc<Mutex<HashSet<Uuid>>>,
}

impl Spreader {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, running: Arc::default() }
    }

    /// Spreads `endpoint`'s waiting backlog `interval_ms` apart, in the background; nothing when
    /// this worker's previous spread of it is still running.
    pub fn spread(&self, endpoint: Uuid, interval_ms: f64, reason: Deferral) {
        if !self.running.lock().expect("spreader lock poisoned").insert(endpoint) {
            return;
        }
        let (pool, running) = (self.pool.clone(), Arc::clone(&self.running));
        tokio::spawn(async move {
            let outcome = crate::engine::queue::spread_backlog(&pool, endpoint, interval_ms, HORIZON).await;
            running.lock().expect("spreader lock poisoned").remove(&endpoint);
            match outcome {
                Ok(spread) => {
                    metrics::protection_deferred(reason, u64::try_from(spread.later).unwrap_or(0));
                    if spread.moved > 0 {
                        tracing::info!(
                            endpoint.id = %endpoint, moved = spread.moved, later = spread.later, interval_ms,
                            reason = reason.as_str(),
                            "Spread the backlog of endpoint {endpoint} {interval_ms:.3} ms apart"
                        );
                    }
                }
                Err(err) => tracing::warn!(endpoint.id = %endpoint, error = %err, "Spreading a backlog failed"),
            }
        });
    }
}

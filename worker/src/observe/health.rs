//! Liveness and readiness facts shared by the dispatcher, the maintenance task and `/readyz`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// When the database last answered and when the dispatcher last went round its loop.
#[derive(Debug, Default)]
pub struct Health {
    database_ok_ms: AtomicI64,
    progress_ms: AtomicI64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Health {
    /// The database answered a query.
    pub fn database_ok(&self) {
        self.database_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The dispatcher completed a loop.
    pub fn progress(&self) {
        let now = now_ms();
        self.progress_ms.store(now, Ordering::Relaxed);
        crate::observe::metrics::dispatcher_progress(now as f64 / 1000.0);
    }

    /// `Ok` when both happened within `window`, else why not.
    ///
    /// # Errors
    /// A sentence naming what is stale.
    pub fn ready(&self, window: Duration) -> Result<(), String> {
        let now = now_ms();
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let database = self.database_ok_ms.load(Ordering::Relaxed);
        if now - database > window_ms {
            return Err(format!("the database has not answered for {} ms", now - database));
        }
        let progress = self.progress_ms.load(Ordering::Relaxed);
        if now - progress > window_ms {
            return Err(format!("the dispatcher has made no progress for {} ms", now - progress));
        }
        Ok(())
    }
}

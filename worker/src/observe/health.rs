//! Liveness and readiness facts shared by the dispatcher, the completer, the maintenance task and
//! `/healthz` and `/readyz`.
//!
//! Instants are milliseconds since the `Health` was made, on tokio's clock: tests pause and
//! advance it (`start_paused`) instead of sleeping.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// An instant that has not happened yet.
const NEVER: i64 = i64::MIN;

/// When the database last answered and failed, when the dispatcher last went round its loop, and
/// how many dispatcher or completer statements are running.
#[derive(Debug)]
pub struct Health {
    origin: Instant,
    database_ok_ms: AtomicI64,
    progress_ms: AtomicI64,
    last_db_error_ms: AtomicI64,
    db_calls_in_flight: AtomicUsize,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            database_ok_ms: AtomicI64::new(NEVER),
            progress_ms: AtomicI64::new(NEVER),
            last_db_error_ms: AtomicI64::new(NEVER),
            db_calls_in_flight: AtomicUsize::new(0),
        }
    }
}

/// What liveness is decided on, read at one instant (`now_ms`; every field on the same clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub now_ms: i64,
    /// When the dispatcher last went round its loop; `None`: it has not started.
    pub progress_ms: Option<i64>,
    /// Dispatcher and completer statements running now.
    pub db_calls_in_flight: usize,
    /// When a database statement last failed; `None`: never.
    pub last_db_error_ms: Option<i64>,
}

impl Facts {
    /// `Err` only when the stall is the worker's own: the dispatcher has started, has made no
    /// progress for longer than `stall_timeout`, and the database is not to blame — no statement
    /// is waiting on it (a lock, a slow query) and none failed within `stall_timeout` (an outage).
    /// Restarting a pod fixes neither of those, and restarting every pod in an outage would drop
    /// the results they hold for writing.
    ///
    /// # Errors
    /// A sentence saying for how long the dispatcher has been stalled.
    pub fn alive(&self, stall_timeout: Duration) -> Result<(), String> {
        let stall_ms = millis(stall_timeout);
        let Some(progress) = self.progress_ms else { return Ok(()) };
        let stalled_ms = self.now_ms.saturating_sub(progress);
        let recent_error = self.last_db_error_ms.is_some_and(|at| self.now_ms.saturating_sub(at) <= stall_ms);
        if stalled_ms <= stall_ms || self.db_calls_in_flight > 0 || recent_error {
            return Ok(());
        }
        Err(format!("the dispatcher has made no progress for {stalled_ms} ms while the database answers"))
    }
}

/// Marks one dispatcher or completer statement as running until dropped (also when the future
/// holding it is cancelled).
#[derive(Debug)]
#[must_use = "the statement counts as running only while the guard lives"]
pub struct DbCall<'a>(&'a AtomicUsize);

impl Drop for DbCall<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn known(at: i64) -> Option<i64> {
    (at != NEVER).then_some(at)
}

impl Health {
    fn now_ms(&self) -> i64 {
        millis(self.origin.elapsed())
    }

    /// The database answered a query.
    pub fn database_ok(&self) {
        self.database_ok_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A database statement of `operation` failed: counted in `webhook_database_errors_total` and
    /// remembered, so that liveness does not blame the worker for the database's outage. Every
    /// database error of the worker is reported here.
    pub fn database_error(&self, operation: &'static str) {
        self.last_db_error_ms.store(self.now_ms(), Ordering::Relaxed);
        crate::observe::metrics::database_error(operation);
    }

    /// A dispatcher or completer statement starts; it ends when the guard is dropped.
    pub fn db_call(&self) -> DbCall<'_> {
        self.db_calls_in_flight.fetch_add(1, Ordering::Relaxed);
        DbCall(&self.db_calls_in_flight)
    }

    /// The dispatcher completed a loop.
    pub fn progress(&self) {
        self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
        let unix_ms = chrono::Utc::now().timestamp_millis();
        crate::observe::metrics::dispatcher_progress(unix_ms as f64 / 1000.0);
    }

    /// The facts liveness is decided on, now.
    pub fn facts(&self) -> Facts {
        Facts {
            now_ms: self.now_ms(),
            progress_ms: known(self.progress_ms.load(Ordering::Relaxed)),
            db_calls_in_flight: self.db_calls_in_flight.load(Ordering::Relaxed),
            last_db_error_ms: known(self.last_db_error_ms.load(Ordering::Relaxed)),
        }
    }

    /// `Ok` unless the dispatcher stalled for longer than `stall_timeout` while the database
    /// answers (see [`Facts::alive`]).
    ///
    /// # Errors
    /// A sentence saying for how long the dispatcher has been stalled.
    pub fn alive(&self, stall_timeout: Duration) -> Result<(), String> {
        self.facts().alive(stall_timeout)
    }

    /// `Ok` when the database answered and the dispatcher made progress within `window`, else
    /// why not. A process whose database never answered is not ready, however recently it
    /// started: during a rollout, a new pod that cannot reach its database must not count as
    /// available while the old ones are taken down.
    ///
    /// # Errors
    /// A sentence naming what is stale or has not happened yet.
    pub fn ready(&self, window: Duration) -> Result<(), String> {
        let now = self.now_ms();
        let window_ms = millis(window);
        let age = |at: &AtomicI64| known(at.load(Ordering::Relaxed)).map(|at| now - at);
        match age(&self.database_ok_ms) {
            None => return Err("the database has not answered since the process started".to_owned()),
            Some(database) if database > window_ms => {
                return Err(format!("the database has not answered for {database} ms"));
            }
            Some(_) => {}
        }
        match age(&self.progress_ms) {
            None => Err("the dispatcher has not started yet".to_owned()),
            Some(progress) if progress > window_ms => {
                Err(format!("the dispatcher has made no progress for {progress} ms"))
            }
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(120);
    const STALL_MS: i64 = 120_000;

    /// A dispatcher that last went round its loop `stalled_ms` ago, with the database idle.
    fn stalled(stalled_ms: i64) -> Facts {
        Facts {
            now_ms: 1_000_000,
            progress_ms: Some(1_000_000 - stalled_ms),
            db_calls_in_flight: 0,
            last_db_error_ms: None,
        }
    }

    #[test]
    fn a_dispatcher_stalled_past_the_timeout_while_the_database_answers_is_not_alive() {
        let err = stalled(STALL_MS + 1).alive(STALL).unwrap_err();
        assert_eq!(err, "the dispatcher has made no progress for 120001 ms while the database answers");
        assert_eq!(stalled(STALL_MS).alive(STALL), Ok(()), "at the timeout itself it is still alive");
        assert_eq!(stalled(0).alive(STALL), Ok(()));
    }

    #[test]
    fn a_dispatcher_that_has_not_started_is_alive() {
        let facts = Facts { progress_ms: None, ..stalled(0) };
        assert_eq!(facts.alive(STALL), Ok(()), "waiting for the database at start is not a stall");
    }

    #[test]
    fn a_statement_in_flight_keeps_a_stalled_dispatcher_alive() {
        let facts = Facts { db_calls_in_flight: 1, ..stalled(10 * STALL_MS) };
        assert_eq!(facts.alive(STALL), Ok(()), "a lock or a slow statement is the database's, not the pod's");
    }

    #[test]
    fn a_recent_database_error_keeps_a_stalled_dispatcher_alive_until_it_is_older_than_the_timeout() {
        let now = stalled(10 * STALL_MS).now_ms;
        let recent = Facts { last_db_error_ms: Some(now - STALL_MS), ..stalled(10 * STALL_MS) };
        assert_eq!(recent.alive(STALL), Ok(()), "an outage must not restart the pod");
        let old = Facts { last_db_error_ms: Some(now - STALL_MS - 1), ..stalled(10 * STALL_MS) };
        assert!(old.alive(STALL).is_err(), "an error long past does not excuse a stall now");
    }

    #[tokio::test(start_paused = true)]
    async fn health_records_progress_errors_and_statements_on_its_clock() {
        let health = Health::default();
        assert_eq!(health.alive(STALL), Ok(()));
        health.progress();
        tokio::time::advance(STALL + Duration::from_millis(5)).await;
        assert!(health.alive(STALL).unwrap_err().starts_with("the dispatcher has made no progress for 120005 ms"));
        {
            let _first = health.db_call();
            let _second = health.db_call();
            assert_eq!(health.facts().db_calls_in_flight, 2);
            assert_eq!(health.alive(STALL), Ok(()));
        }
        assert_eq!(health.facts().db_calls_in_flight, 0, "dropping the guards ends the statements");
        assert!(health.alive(STALL).is_err());
        health.database_error("claim");
        assert_eq!(health.alive(STALL), Ok(()));
        tokio::time::advance(STALL + Duration::from_millis(1)).await;
        assert!(health.alive(STALL).is_err(), "the error aged out");
        health.progress();
        assert_eq!(health.alive(STALL), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_names_what_is_stale() {
        let health = Health::default();
        let window = Duration::from_secs(10);
        health.database_ok();
        health.progress();
        tokio::time::advance(window + Duration::from_millis(1)).await;
        assert_eq!(health.ready(window).unwrap_err(), "the database has not answered for 10001 ms");
        health.database_ok();
        assert_eq!(health.ready(window).unwrap_err(), "the dispatcher has made no progress for 10001 ms");
        health.progress();
        assert_eq!(health.ready(window), Ok(()));
    }

    #[test]
    fn a_process_whose_database_never_answered_is_not_ready_even_at_once() {
        let health = Health::default();
        let window = Duration::from_secs(10);
        assert_eq!(health.ready(window).unwrap_err(), "the database has not answered since the process started");
        health.database_ok();
        assert_eq!(health.ready(window).unwrap_err(), "the dispatcher has not started yet");
        health.progress();
        assert_eq!(health.ready(window), Ok(()));
    }
}

//! Batched completion: attempts hand their results here, and one task writes them to Postgres in
//! a single statement every few milliseconds or every few hundred results.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::health::Health;
use crate::queue::{self, Completion};

const MAX_BATCH: usize = 500;
const LINGER: Duration = Duration::from_millis(2);
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Sends completions to the writer task.
#[derive(Debug, Clone)]
pub struct Completer {
    tx: mpsc::Sender<Completion>,
}

impl Completer {
    /// Queues one completion; waits while the writer is `capacity` completions behind.
    pub async fn send(&self, completion: Completion) {
        if self.tx.send(completion).await.is_err() {
            tracing::error!("The completion writer stopped; the lease will expire and the delivery will be retried");
        }
    }
}

/// Starts the writer. It runs until every [`Completer`] is dropped and everything received is
/// written; a failing write is retried with backoff (the statement is atomic and fenced, so a
/// retry is safe).
pub fn spawn(pool: PgPool, worker_id: String, health: Arc<Health>, capacity: usize) -> (Completer, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(write_loop(pool, worker_id, health, rx));
    (Completer { tx }, task)
}

async fn write_loop(pool: PgPool, worker_id: String, health: Arc<Health>, mut rx: mpsc::Receiver<Completion>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        write(&pool, &worker_id, &health, &batch).await;
        batch.clear();
    }
}

async fn write(pool: &PgPool, worker_id: &str, health: &Health, batch: &[Completion]) {
    let mut backoff = RETRY_MIN;
    loop {
        match queue::complete_batch(pool, worker_id, batch).await {
            Ok(applied) => {
                health.database_ok();
                let stale = i64::try_from(batch.len()).unwrap_or(i64::MAX) - applied;
                if stale > 0 {
                    tracing::warn!(
                        stale,
                        "{stale} completions were stale: their leases had expired and the deliveries will be retried"
                    );
                }
                return;
            }
            Err(err) => {
                crate::metrics::database_error("complete");
                tracing::warn!(error = %err, size = batch.len(), "Writing completions failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

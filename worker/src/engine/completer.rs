//! Batched completion: attempts hand their results here, and one task writes them to Postgres in
//! a single statement every few milliseconds or every few hundred results.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;

use crate::engine::completion::Completion;
use crate::engine::queue;
use crate::observe::health::Health;
use crate::policy::states::CircuitState;

const MAX_BATCH: usize = 500;
/// Writers working concurrently: while one statement runs, the next batch is already being
/// written, which keeps the window between a receiver's answer and its commit (what a crash turns
/// into a duplicate) short under load. Fencing by lease token makes their order irrelevant.
const WRITERS: usize = 2;
const LINGER: Duration = Duration::from_millis(2);
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One result on its way to the database, with the delivery slot it occupies until committed.
type Pending = (Completion, Option<OwnedSemaphorePermit>);

/// Sends completions to the writer task.
#[derive(Debug, Clone)]
pub struct Completer {
    tx: mpsc::Sender<Pending>,
}

impl Completer {
    /// Queues one completion; waits while the writer is `capacity` completions behind.
    pub async fn send(&self, completion: Completion) {
        self.send_holding(completion, None).await;
    }

    /// Queues one completion whose delivery slot (`permit`) is released only once the result is
    /// committed. A slot is free when its result is durable: the dispatcher never claims more
    /// while answers wait for their commit, so the work a crash would repeat (answered but not
    /// committed) stays within the worker's concurrency, however far the database falls behind.
    pub async fn send_holding(&self, completion: Completion, permit: Option<OwnedSemaphorePermit>) {
        if self.tx.send((completion, permit)).await.is_err() {
            tracing::error!("The completion writer stopped; the lease will expire and the delivery will be retried");
        }
    }
}

/// What the writer needs.
#[derive(Debug, Clone)]
pub struct Writer {
    pub pool: PgPool,
    pub worker_id: String,
    pub health: Arc<Health>,
}

/// Starts the writer. It runs until every [`Completer`] is dropped and everything received is
/// written; a failing write is retried with backoff (the statement is atomic and fenced, so a
/// retry is safe).
pub fn spawn(writer: Writer, capacity: usize) -> (Completer, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let writers: Vec<JoinHandle<()>> =
        (0..WRITERS).map(|_| tokio::spawn(write_loop(writer.clone(), Arc::clone(&rx)))).collect();
    let task = tokio::spawn(async move {
        for handle in writers {
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "A completion writer failed");
            }
        }
    });
    (Completer { tx }, task)
}

async fn write_loop(writer: Writer, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        // Gather one batch while holding the receiver, then write it without: the other writer
        // gathers the next batch meanwhile.
        let (batch, permits): (Vec<Completion>, Vec<Option<OwnedSemaphorePermit>>) = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            batch.push(first);
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    Ok(None) | Err(_) => break,
                }
            }
            batch.into_iter().unzip()
        };
        write(&writer, &batch).await;
        drop(permits);
    }
}

async fn write(writer: &Writer, batch: &[Completion]) {
    let mut backoff = RETRY_MIN;
    loop {
        let written = {
            let _call = writer.health.db_call();
            queue::complete_batch(&writer.pool, &writer.worker_id, batch).await
        };
        match written {
            Ok(done) => {
                writer.health.database_ok();
                crate::observe::metrics::operational_events(done.operational.as_deref().unwrap_or_default());
                let reopened = done.reopened.unwrap_or_default();
                for _ in 0..done.closed {
                    crate::observe::metrics::breaker_transition(CircuitState::Closed);
                }
                for _ in 0..reopened.len() {
                    crate::observe::metrics::breaker_transition(CircuitState::Open);
                }
                if done.closed > 0 || !reopened.is_empty() {
                    tracing::info!(closed = done.closed, reopened = reopened.len(), "Circuit probes decided");
                }
                if !reopened.is_empty() {
                    defer_backlog(writer, &reopened).await;
                }
                let stale = i64::try_from(batch.len()).unwrap_or(i64::MAX) - done.applied;
                if stale > 0 {
                    tracing::warn!(
                        stale,
                        "{stale} completions were stale: their leases had expired and the deliveries will be retried"
                    );
                }
                return;
            }
            Err(err) => {
                writer.health.database_error("complete");
                tracing::warn!(error = %err, size = batch.len(), "Writing completions failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Moves reopened endpoints' backlog behind their cool-down. Failing here only costs deferrals:
/// the claim skips an open endpoint's deliveries anyway, so it is logged, not retried.
async fn defer_backlog(writer: &Writer, endpoints: &[uuid::Uuid]) {
    let deferred = {
        let _call = writer.health.db_call();
        queue::defer_reopened_backlog(&writer.pool, endpoints).await
    };
    match deferred {
        Ok(moved) => crate::observe::metrics::protection_deferred(crate::observe::metrics::Deferral::Circuit, moved),
        Err(err) => {
            writer.health.database_error("complete");
            tracing::warn!(error = %err, "Moving the backlog of reopened circuits failed; the claim skips them meanwhile");
        }
    }
}

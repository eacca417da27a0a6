//! The API's message writer: messages that arrive while earlier ones are being written are sent
//! together, in one statement and one commit ([`crate::admin::message_batch`]). A lone message
//! is written at once (no waiting window), so batching costs an idle API no latency; under load
//! a batch is whatever queued while the writers were busy.
//!
//! A batch that fails on a value (a payload Postgres refuses, say) is retried message by message,
//! so only the faulty message fails; any other failure answers every message of the batch.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::error::ApiError;
use crate::admin::message_batch::{self, Batched};
use crate::admin::messages::{self, Sent};

/// Batches written at once at most. Few writers make large batches, and a batch costs Postgres
/// little more than one message; two cores gain nothing from more.
pub const WRITERS: usize = 2;
/// Messages in one statement at most.
const MAX_BATCH: usize = 500;
/// Messages waiting for a writer at most; more wait in their handlers.
const QUEUE: usize = 4096;

/// What a message's sender is told: sent, no such application (for this caller), or a failure.
type Reply = Result<Option<Sent>, ApiError>;

struct Job {
    message: Batched,
    reply: oneshot::Sender<Reply>,
}

/// A handle to the writer task.
#[derive(Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("waiting", &(QUEUE - self.jobs.capacity())).finish()
    }
}

impl Ingest {
    /// Starts the writer task with up to `writers` batches written at once on `pool`. It ends
    /// when the last handle is dropped.
    pub fn start(pool: PgPool, writers: usize) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue, writers.max(1)));
        Self { jobs }
    }

    /// Sends `message` with the next batch; `None` when its application does not exist or its
    /// caller may not see it.
    ///
    /// # Errors
    /// The message's own refusal (422), or the batch's failure (503 when the database does not
    /// answer).
    pub async fn send(&self, message: Batched) -> Reply {
        let (reply, answer) = oneshot::channel();
        let stopped = || ApiError::Unavailable("the API is shutting down".into());
        self.jobs.send(Job { message, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: PgPool, mut queue: mpsc::Receiver<Job>, writers: usize) {
    let writers = Arc::new(Semaphore::new(writers));
    while let Some(first) = queue.recv().await {
        // While every writer is busy, the messages behind `first` join its batch.
        let Ok(permit) = Arc::clone(&writers).acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
            drop(permit);
        });
    }
}

async fn write(pool: &PgPool, batch: Vec<Job>) {
    let messages: Vec<Batched> = batch.iter().map(|job| job.message.clone()).collect();
    match message_batch::send_batch(pool, &messages).await {
        Ok(sent) => {
            for (job, sent) in batch.into_iter().zip(sent) {
                let _ = job.reply.send(Ok(sent));
            }
        }
        Err(err) if batch.len() > 1 && refused_value(&err) => {
            for job in batch {
                let one = message_batch::send_batch(pool, std::slice::from_ref(&job.message)).await;
                let _ = job.reply.send(one.map(|mut sent| sent.pop().flatten()).map_err(ApiError::from));
            }
        }
        Err(err) => {
            let err = ApiError::from(err);
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Whether Postgres refused one of the values (data exception or constraint violation), which
/// is one message's fault rather than the batch's.
fn refused_value(err: &messages::Error) -> bool {
    let messages::Error::Database(db) = err else { return false };
    db.as_database_error().and_then(|e| e.code()).is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

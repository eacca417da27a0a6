//! Waking the dispatcher: producers' inserts `NOTIFY webhook_deliveries` (once per statement),
//! and one dedicated connection LISTENs and reconnects after errors. Losing a notification only
//! costs latency: the dispatcher also polls.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The channel producers notify.
const CHANNEL: &str = "webhook_deliveries";
/// How long to wait before reconnecting a lost LISTEN connection.
const RECONNECT: Duration = Duration::from_secs(2);

/// The LISTEN task and what it wakes.
#[derive(Debug)]
pub struct Wake {
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Wake {
    /// Starts listening until `stop`.
    pub fn listen(pool: PgPool, stop: CancellationToken) -> Self {
        let notify = Arc::new(Notify::new());
        let task = tokio::spawn(listen(pool, Arc::clone(&notify), stop));
        Self { notify, task }
    }

    /// What a notification wakes.
    pub fn notify(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// Waits for the task to end (after its `stop`).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn listen(pool: PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::debug!(error = %err, "LISTEN connection failed; relying on polling for now");
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %err, "LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(_) => wake.notify_one(),
                    Err(err) => {
                        tracing::debug!(error = %err, "LISTEN connection lost");
                        break;
                    }
                },
                () = stop.cancelled() => return,
            }
        }
    }
}

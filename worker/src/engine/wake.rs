//! Notifications from the database, on one dedicated connection that LISTENs and reconnects
//! after errors: producers' inserts `NOTIFY webhook_deliveries` (once per statement) and wake the
//! dispatcher; operator changes to an endpoint `NOTIFY webhook_endpoints` with its id and drop it
//! from the endpoint cache. Losing a notification only costs time: the dispatcher also polls, and
//! cache entries expire after a few seconds.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::endpoints::EndpointCache;

/// The channel producers notify.
const DELIVERIES: &str = "webhook_deliveries";
/// The channel operator changes to an endpoint notify, with its id.
const ENDPOINTS: &str = "webhook_endpoints";
/// How long to wait before reconnecting a lost LISTEN connection.
const RECONNECT: Duration = Duration::from_secs(2);

/// The LISTEN task and what it wakes.
#[derive(Debug)]
pub struct Wake {
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Wake {
    /// Starts listening until `stop`; changed endpoints are dropped from `endpoints`.
    pub fn listen(pool: PgPool, endpoints: Arc<EndpointCache>, stop: CancellationToken) -> Self {
        let notify = Arc::new(Notify::new());
        let task = tokio::spawn(listen(pool, Arc::clone(&notify), endpoints, stop));
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

async fn listen(pool: PgPool, wake: Arc<Notify>, endpoints: Arc<EndpointCache>, stop: CancellationToken) {
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
        if let Err(err) = listener.listen_all([DELIVERIES, ENDPOINTS]).await {
            tracing::debug!(error = %err, "LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(note) if note.channel() == ENDPOINTS => {
                        if let Ok(id) = note.payload().parse() {
                            endpoints.forget(id);
                        }
                    }
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

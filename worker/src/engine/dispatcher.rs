//! The main loop: wait for a free slot, claim up to the free slots (of each endpoint no more than
//! its in-flight cap still allows, a slot reserved for each), start one attempt per claimed
//! delivery, idle on LISTEN/NOTIFY or a jittered poll when the queue is empty, wait for a slot of
//! a saturated endpoint when a claim had to leave its rows, drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::config::DispatchSettings;
use crate::engine::attempt::{self, AttemptContext};
use crate::engine::completer::Completer;
use crate::engine::completion::Completion;
use crate::engine::endpoints::{Endpoint, EndpointCache};
use crate::engine::protect::Reservation;
use crate::engine::queue::{self, ClaimedDelivery, ScanPosition};
use crate::engine::shutdown::Shutdown;
use crate::observe::health::Health;
use crate::policy::states::DeliveryOutcome;

/// Why a claim round failed (logged and counted where it happened; the loop backs off).
#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error("claiming deliveries failed")]
    Claim(#[source] sqlx::Error),
    #[error("loading the claimed deliveries' endpoints failed")]
    Endpoints(#[source] sqlx::Error),
}

/// A claimed delivery, its endpoint (`None`: unknown) and the in-flight slot reserved for it.
type Claimed = (ClaimedDelivery, Option<Arc<Endpoint>>, Option<Reservation>);

/// What one claim round brought.
struct Round {
    batch: Vec<Claimed>,
    /// Rows were left because their endpoints had no room in this worker.
    crowded: bool,
}

/// Shared parts the dispatcher hands to every attempt.
#[derive(Debug, Clone)]
pub struct Parts {
    pub pool: PgPool,
    pub endpoints: Arc<EndpointCache>,
    pub attempt: Arc<AttemptContext>,
    pub completer: Completer,
    pub health: Arc<Health>,
    /// Notified when producers insert deliveries.
    pub wake: Arc<Notify>,
}

/// Runs until `shutdown.stop_claiming`, then waits for in-flight attempts (which hand their
/// deliveries back if `shutdown.abort_in_flight` fires first) and returns.
pub async fn run(settings: DispatchSettings, parts: Parts, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(settings.concurrency));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(100);
    let mut position = ScanPosition::default();
    loop {
        parts.health.progress();
        crate::observe::metrics::in_flight(settings.concurrency - slots.available_permits());
        let first = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.stop_claiming.cancelled() => break,
        };
        let free = (1 + slots.available_permits()).min(settings.batch_size);
        let notified = parts.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let round = match claim(&settings, &parts, free, &mut position).await {
            Ok(round) => {
                backoff = Duration::from_millis(100);
                round
            }
            Err(_logged) => {
                drop(first);
                idle(backoff, &shutdown, std::future::pending()).await;
                backoff = (backoff * 2).min(settings.error_backoff_max);
                continue;
            }
        };
        let Round { batch, crowded } = round;
        if batch.is_empty() && !crowded {
            drop(first);
            idle(idle_time(&parts, settings.poll_interval).await, &shutdown, notified).await;
            continue;
        }
        let short = batch.len() < free;
        if batch.is_empty() {
            drop(first);
        } else {
            start_attempts(&parts, &slots, &tracker, first, batch, &shutdown);
        }
        if crowded && short {
            // The rows left wait for slots of their endpoints: a claim before one frees would find
            // the same rows. Inserts and the poll still wake it, for rows of other endpoints.
            let room = parts.attempt.guard.room_freed();
            let woken = async {
                tokio::select! {
                    () = room.notified() => {}
                    () = notified => {}
                }
            };
            idle(jittered(settings.poll_interval), &shutdown, woken).await;
        }
    }
    tracker.close();
    tracing::info!(in_flight = tracker.len(), "Stopped claiming; waiting for in-flight deliveries");
    tracker.wait().await;
}

/// Claims up to `free` deliveries, of each endpoint no more than it may still start here, loads
/// their endpoints and reserves a slot for each. Saturated endpoints whose rows the claim had to
/// leave may have their backlog spread. On a database error the claimed rows are handed back (if
/// any); the error is logged and counted here.
async fn claim(
    settings: &DispatchSettings,
    parts: &Parts,
    free: usize,
    position: &mut ScanPosition,
) -> Result<Round, ClaimError> {
    let spec = queue::Claim {
        worker_id: &settings.worker_id,
        limit: free,
        lease: settings.lease_duration,
        max_payload_bytes: settings.max_payload_bytes,
    };
    let guard = &parts.attempt.guard;
    let room = guard.room();
    let now = tokio::time::Instant::now();
    let claimed = {
        let _call = parts.health.db_call();
        queue::claim_resuming(&parts.pool, &spec, Some(&room), position, now).await
    };
    let claimed = match claimed {
        Ok(claimed) => claimed,
        Err(err) => {
            parts.health.database_error("claim");
            let error = crate::db::explain(&parts.pool, &err).await;
            tracing::warn!(%error, "Claiming deliveries failed");
            return Err(ClaimError::Claim(err));
        }
    };
    let took = now.elapsed();
    guard.claim_took(took);
    parts.health.database_ok();
    crate::observe::metrics::claim_batch(claimed.deliveries.len(), took);
    let crowded = !claimed.crowded.is_empty();
    let batch = claimed.deliveries;
    if batch.is_empty() {
        guard.crowded(&claimed.crowded);
        return Ok(Round { batch: Vec::new(), crowded });
    }
    let mut ids: Vec<_> = batch.iter().map(|d| d.endpoint_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let loaded = {
        let _call = parts.health.db_call();
        parts.endpoints.get_many(&ids).await
    };
    match loaded {
        Ok(endpoints) => {
            let batch = batch
                .into_iter()
                .map(|d| {
                    let endpoint = endpoints.get(&d.endpoint_id).cloned().flatten();
                    let reserved = endpoint.as_deref().and_then(|e| guard.reserve(e));
                    (d, endpoint, reserved)
                })
                .collect();
            guard.crowded(&claimed.crowded);
            Ok(Round { batch, crowded })
        }
        Err(err) => {
            parts.health.database_error("endpoints");
            tracing::warn!(error = %err, "Loading endpoints failed; handing the claimed deliveries back");
            for delivery in &batch {
                parts.completer.send(Completion::release(delivery, Duration::ZERO, DeliveryOutcome::Deferred)).await;
            }
            Err(ClaimError::Endpoints(err))
        }
    }
}

fn start_attempts(
    parts: &Parts,
    slots: &Arc<Semaphore>,
    tracker: &TaskTracker,
    first: OwnedSemaphorePermit,
    batch: Vec<Claimed>,
    shutdown: &Shutdown,
) {
    let mut first = Some(first);
    for (delivery, endpoint, reserved) in batch {
        // We are the only acquirer and claimed no more rows than there were free permits.
        let permit = first
            .take()
            .unwrap_or_else(|| Arc::clone(slots).try_acquire_owned().expect("claimed no more than the free slots"));
        let ctx = Arc::clone(&parts.attempt);
        let completer = parts.completer.clone();
        let cache = Arc::clone(&parts.endpoints);
        let abort = shutdown.abort_in_flight.clone();
        tracker.spawn(async move {
            let result = std::panic::AssertUnwindSafe(attempt::run(&ctx, &delivery, endpoint, reserved, &abort))
                .catch_unwind()
                .await;
            let completion = result.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                tracing::error!(delivery.id = delivery.id, "Attempt panicked: {message}");
                attempt::panicked(&ctx, &delivery, &message)
            });
            if let Some(reason) = &completion.disable_endpoint {
                cache.mark_disabled(completion.endpoint_id, reason);
            }
            completer.send_holding(completion, Some(permit)).await;
        });
    }
}

async fn idle(wait: Duration, shutdown: &Shutdown, woken: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = woken => {}
        () = shutdown.stop_claiming.cancelled() => {}
    }
}

/// How long to idle with nothing claimable: until the next scheduled delivery is due (retries,
/// deferrals), but no longer than a jittered poll interval. Inserts wake the dispatcher earlier.
async fn idle_time(parts: &Parts, poll: Duration) -> Duration {
    let poll = jittered(poll);
    let next = {
        let _call = parts.health.db_call();
        queue::next_due(&parts.pool).await
    };
    match next {
        Ok(Some(due)) => (due - chrono::Utc::now()).to_std().unwrap_or_default().clamp(Duration::from_millis(5), poll),
        Ok(None) | Err(_) => poll,
    }
}

/// `base` ± 20 %, so that idle workers do not poll in lockstep (`config` keeps the stall timeout
/// above the longest of these waits).
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.8..=1.2))
}

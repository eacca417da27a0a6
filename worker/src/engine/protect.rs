//! Endpoint protection in one worker, coordinated with the fleet through Postgres:
//!
//! - **Circuit**: the shared state on the endpoint row is honoured before every send; a worker
//!   whose last attempt to the endpoint failed re-reads it first, so that after a trip no worker
//!   keeps sending what it had already claimed. Failures feed a [`Detector`]; a trip opens the
//!   circuit for the whole fleet (`engine::circuit::trip`).
//! - **Rate limit**: a governor limiter per endpoint whose quota is the endpoint's limit divided by
//!   the live workers (from heartbeats), so the fleet together holds the limit.
//! - **Isolation**: at most `max_in_flight` requests per endpoint in this worker.
//!
//! A delivery that may not go now is deferred without spending an attempt, to a time that spreads
//! the endpoint's deliveries at the rate it can take them; the first deferral of a saturated
//! endpoint also spreads its whole waiting backlog in the database (`queue::spread_backlog`), so a
//! large backlog stops sitting at the head of the queue where it would slow every claim.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

pub use crate::config::ProtectSettings;
use crate::engine::endpoints::Endpoint;
use crate::policy::circuit::{Circuit, Detector};
use crate::policy::states::{CircuitState, DeliveryOutcome};

/// What the gate decided for one delivery.
#[derive(Debug)]
pub enum Admission {
    /// Send; hold the pass while the request is in flight.
    Go(Pass),
    /// Not now: try again after this long, counted as `outcome` (throttled or deferred).
    Defer { after: Duration, outcome: DeliveryOutcome },
}

/// Proof of an in-flight slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Pass {
    _permit: OwnedSemaphorePermit,
    /// When the delivery is its endpoint's probe: the half-open circuit it probes, whose next
    /// state the attempt's result decides.
    pub probe: Option<Circuit>,
}

/// A per-pod share of an endpoint's rate limit.
#[derive(Debug)]
struct Throttle {
    limit: u32,
    burst: u32,
    workers: usize,
    limiter: DefaultDirectRateLimiter,
}

/// The quota of one worker among `workers` for `limit` requests/s with `burst` fleet-wide.
pub fn pod_quota(limit: u32, burst: u32, workers: usize) -> Quota {
    let workers = workers.max(1);
    let period = Duration::from_secs_f64(workers as f64 / f64::from(limit.max(1)));
    let pod_burst = u32::try_from((burst as usize).div_ceil(workers)).unwrap_or(1).max(1);
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(pod_burst).expect("at least one"))
}

#[derive(Debug)]
struct Entry {
    detector: Detector,
    in_flight: Arc<Semaphore>,
    cap: usize,
    throttle: Option<Throttle>,
    /// The next time a deferred delivery may be scheduled (spreads deferrals).
    cursor: Instant,
    last_spread: Option<Instant>,
    /// Moving average of attempt durations, for the in-flight cap's deferrals.
    mean_ms: f64,
}

/// The protection state of every endpoint this worker has seen.
#[derive(Debug)]
pub struct Guard {
    pool: PgPool,
    settings: ProtectSettings,
    live_workers: Arc<AtomicUsize>,
    entries: Mutex<HashMap<Uuid, Entry>>,
}

/// How far ahead a saturated endpoint's backlog is spread at most per call.
const SPREAD_HORIZON: Duration = Duration::from_secs(3600);
/// A worker spreads one endpoint's backlog at most this often.
const SPREAD_EVERY: Duration = Duration::from_secs(5);

impl Guard {
    pub fn new(pool: PgPool, settings: ProtectSettings, live_workers: Arc<AtomicUsize>) -> Self {
        Self { pool, settings, live_workers, entries: Mutex::new(HashMap::new()) }
    }

    /// The settings in force.
    pub fn settings(&self) -> &ProtectSettings {
        &self.settings
    }

    /// Decides whether delivery `delivery_id` to `endpoint` may be sent now.
    pub async fn admit(&self, endpoint: &Endpoint, delivery_id: i64) -> Admission {
        let recheck = endpoint.circuit.state != CircuitState::Closed
            || self.with_entry(endpoint, |entry| entry.detector.failing());
        let circuit = if recheck {
            self.fresh_circuit(endpoint.id).await.unwrap_or_else(|| endpoint.circuit.clone())
        } else {
            endpoint.circuit.clone()
        };
        if !circuit.lets_through(delivery_id) {
            let until = circuit.open_until.map(|t| (t - chrono::Utc::now()).to_std().unwrap_or_default());
            let after = until.unwrap_or(self.settings.breaker.cooldown).max(Duration::from_secs(1));
            return Admission::Defer { after, outcome: DeliveryOutcome::Deferred };
        }
        let workers = self.live_workers.load(Ordering::Relaxed).max(1);
        let (mut admission, spread) =
            self.with_entry(endpoint, |entry| admit_locally(entry, endpoint, workers, &self.settings));
        if let Admission::Go(pass) = &mut admission
            && circuit.state == CircuitState::HalfOpen
        {
            pass.probe = Some(circuit);
        }
        if let Some(interval_ms) = spread {
            let (pool, id) = (self.pool.clone(), endpoint.id);
            tokio::spawn(async move {
                match crate::engine::queue::spread_backlog(&pool, id, interval_ms, SPREAD_HORIZON).await {
                    Ok(moved) if moved > 0 => {
                        tracing::info!(endpoint.id = %id, moved, "Spread the backlog of saturated endpoint {id} over time")
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(endpoint.id = %id, error = %err, "Spreading a backlog failed"),
                }
            });
        }
        admission
    }

    /// Records how an attempt to `endpoint` went (`None`: it says nothing about the endpoint's
    /// health) and trips the fleet's circuit when the detector says so.
    pub async fn record(&self, endpoint: Uuid, success: Option<bool>, elapsed: Duration) {
        let Some(success) = success else { return };
        let trip = {
            let mut entries = self.entries.lock().expect("guard lock poisoned");
            let Some(entry) = entries.get_mut(&endpoint) else { return };
            entry.mean_ms = 0.8 * entry.mean_ms + 0.2 * elapsed.as_secs_f64() * 1000.0;
            entry.detector.record(&self.settings.breaker, Instant::now(), success)
        };
        if trip && let Err(err) = crate::engine::circuit::trip(&self.pool, endpoint, &self.settings.breaker).await {
            tracing::warn!(endpoint.id = %endpoint, error = %err, "Opening the circuit failed");
        }
    }

    fn with_entry<T>(&self, endpoint: &Endpoint, f: impl FnOnce(&mut Entry) -> T) -> T {
        let cap = endpoint.max_in_flight.unwrap_or(self.settings.max_in_flight).max(1) as usize;
        let mut entries = self.entries.lock().expect("guard lock poisoned");
        let entry = entries.entry(endpoint.id).or_insert_with(|| Entry {
            detector: Detector::default(),
            in_flight: Arc::new(Semaphore::new(cap)),
            cap,
            throttle: None,
            cursor: Instant::now(),
            last_spread: None,
            mean_ms: 100.0,
        });
        if entry.cap != cap {
            // A changed cap takes effect with a fresh semaphore; requests in flight keep theirs.
            entry.in_flight = Arc::new(Semaphore::new(cap));
            entry.cap = cap;
        }
        f(entry)
    }

    async fn fresh_circuit(&self, endpoint: Uuid) -> Option<Circuit> {
        crate::engine::circuit::load(&self.pool, endpoint).await.ok().flatten()
    }
}

/// The in-memory part of admission: in-flight cap, then rate limit. Returns the admission and,
/// when the endpoint is saturated and was not spread lately, the interval to spread its backlog at.
fn admit_locally(
    entry: &mut Entry,
    endpoint: &Endpoint,
    workers: usize,
    settings: &ProtectSettings,
) -> (Admission, Option<f64>) {
    let limit = endpoint.rate_limit.or(settings.rate_limit);
    let burst = endpoint.burst.or(settings.burst).or(limit).unwrap_or(1);
    match limit {
        Some(limit) => {
            let stale =
                entry.throttle.as_ref().is_none_or(|t| t.limit != limit || t.burst != burst || t.workers != workers);
            if stale {
                entry.throttle = Some(Throttle {
                    limit,
                    burst,
                    workers,
                    limiter: RateLimiter::direct(pod_quota(limit, burst, workers)),
                });
            }
        }
        None => entry.throttle = None,
    }
    let now = Instant::now();
    let Ok(permit) = Arc::clone(&entry.in_flight).try_acquire_owned() else {
        // Busy: the fleet drains this endpoint at about cap × workers per mean request time.
        let fleet_interval_ms = entry.mean_ms.max(1.0) / (entry.cap * workers) as f64;
        let after = defer(
            entry,
            now,
            Duration::ZERO,
            Duration::from_secs_f64(entry.mean_ms.max(1.0) / 1000.0 / entry.cap as f64),
        );
        return (
            Admission::Defer { after, outcome: DeliveryOutcome::Deferred },
            spread_due(entry, now, fleet_interval_ms),
        );
    };
    if let Some(throttle) = &entry.throttle
        && let Err(not_until) = throttle.limiter.check()
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let pod_period = Duration::from_secs_f64(workers as f64 / f64::from(throttle.limit));
        let fleet_interval_ms = 1000.0 / f64::from(throttle.limit);
        let after = defer(entry, now, wait, pod_period);
        return (
            Admission::Defer { after, outcome: DeliveryOutcome::Throttled },
            spread_due(entry, now, fleet_interval_ms),
        );
    }
    (Admission::Go(Pass { _permit: permit, probe: None }), None)
}

/// The next deferral slot: no earlier than `now + wait`, `period` after the previous one.
fn defer(entry: &mut Entry, now: Instant, wait: Duration, period: Duration) -> Duration {
    let slot = entry.cursor.max(now + wait);
    entry.cursor = slot + period;
    (slot - now).max(period)
}

fn spread_due(entry: &mut Entry, now: Instant, interval_ms: f64) -> Option<f64> {
    if entry.last_spread.is_some_and(|at| now.duration_since(at) < SPREAD_EVERY) {
        return None;
    }
    entry.last_spread = Some(now);
    Some(interval_ms)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    /// How many cells `quota` admits in `seconds` of saturated demand, ticking every millisecond.
    fn admitted(quota: Quota, seconds: u64) -> u64 {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        let mut count = 0;
        for _ in 0..seconds * 1000 {
            while limiter.check().is_ok() {
                count += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        count
    }

    #[test]
    fn the_fleet_together_holds_the_limit() {
        // 50/s over 3 workers, burst 3 fleet-wide: each pod gets 1/3 of the rate and 1 of burst.
        let per_pod = admitted(pod_quota(50, 3, 3), 10);
        assert!((3 * per_pod) <= 50 * 10 + 3, "three pods admitted {} in 10 s", 3 * per_pod);
        assert!((3 * per_pod) >= 50 * 10 - 3, "three pods admitted only {} in 10 s", 3 * per_pod);
    }

    #[test]
    fn a_single_worker_gets_the_whole_limit_and_burst() {
        // The burst of 5 at once, then one every 100 ms within the second: 5 + 9.
        assert_eq!(admitted(pod_quota(10, 5, 1), 1), 14);
    }

    #[test]
    fn deferrals_are_spread_one_period_apart() {
        let now = Instant::now();
        let mut entry = Entry {
            detector: Detector::default(),
            in_flight: Arc::new(Semaphore::new(1)),
            cap: 1,
            throttle: None,
            cursor: now,
            last_spread: None,
            mean_ms: 100.0,
        };
        let period = Duration::from_millis(100);
        let waits: Vec<u128> =
            (0..4).map(|_| defer(&mut entry, now, Duration::from_millis(50), period).as_millis()).collect();
        assert_eq!(waits, [100, 150, 250, 350]);
    }
}

//! Endpoint protection in one worker, coordinated with the fleet through Postgres:
//!
//! - **Circuit**: the shared state on the endpoint row is honoured before every send; a worker
//!   whose last attempt to the endpoint failed re-reads it first, so that after a trip no worker
//!   keeps sending what it had already claimed; the worker that tripped sends nothing until the
//!   trip is stored. Failures feed a [`Detector`]; a trip opens the
//!   circuit for the whole fleet (`engine::circuit::trip`).
//! - **Rate limit**: a governor limiter per endpoint whose quota is the endpoint's limit divided by
//!   the live workers (from heartbeats), so the fleet together holds the limit.
//! - **Isolation**: at most `max_in_flight` requests per endpoint in this worker, enforced where
//!   work is taken. A claim takes of each endpoint no more rows than it may still start
//!   ([`Guard::room`], `queue::claim_resuming`) and the dispatcher reserves a slot for each
//!   ([`Guard::reserve`]), so a healthy endpoint is never deferred by its own cap. An endpoint
//!   whose ready rows a claim had to leave is crowded ([`Guard::crowded`]): when it frees slots
//!   less often than claims come, its waiting backlog is spread in the database at its measured
//!   pace ([`pace`], `queue::spread_backlog`), so that it stops sitting at the head of the queue,
//!   in every claim's way.
//!
//! A delivery that may not go now (circuit, rate limit, or, rarely, no slot) is deferred without
//! spending an attempt, to a time that spreads the endpoint's deliveries at the rate it can take
//! them. Every delivery moved into the future is counted by reason
//! (`webhook_protection_deferred_total`). `docs/protection.md` explains the design.

pub mod pace;
mod slots;
mod spreader;
mod throttle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use self::pace::Pace;
pub use self::slots::Reservation;
use self::slots::Slots;
use self::spreader::Spreader;
use self::throttle::Throttle;
pub use self::throttle::pod_quota;
pub use crate::config::ProtectSettings;
use crate::engine::endpoints::Endpoint;
use crate::engine::queue::{Held, Room};
use crate::observe::metrics::{self, Deferral};
use crate::policy::circuit::{Circuit, Detector};
use crate::policy::states::{CircuitState, DeliveryOutcome};

/// What the gate decided for one delivery.
#[derive(Debug)]
pub enum Admission {
    /// Send; hold the pass while the request is in flight.
    Go(Pass),
    /// Not now: try again after this long, counted as `outcome` (throttled or deferred).
    Defer { after: Duration, outcome: DeliveryOutcome, reason: Deferral },
}

/// Proof of an in-flight slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Pass {
    _slot: Reservation,
    /// When the delivery is its endpoint's probe: the half-open circuit it probes, whose next
    /// state the attempt's result decides.
    pub probe: Option<Circuit>,
}

#[derive(Debug)]
struct Entry {
    detector: Detector,
    /// This worker's detector tripped and the fleet's circuit is being opened: until that is
    /// stored, the shared row still reads closed, and this worker sends nothing.
    tripping: bool,
    slots: Arc<Slots>,
    throttle: Option<Throttle>,
    /// The next time a deferred delivery may be scheduled (spreads deferrals).
    cursor: Instant,
    /// When the backlog was last spread at the rate limit.
    rate_spread: Option<Instant>,
    /// The measured service time, for the in-flight cap's spreads.
    pace: Pace,
}

impl Entry {
    fn new(cap: usize, now: Instant, freed: &Arc<Notify>) -> Self {
        Self {
            detector: Detector::default(),
            tripping: false,
            slots: Slots::new(cap, Arc::clone(freed)),
            throttle: None,
            cursor: now,
            rate_spread: None,
            pace: Pace::default(),
        }
    }

    /// Takes a free slot, or with `ahead` a place in the endpoint's queue, noting when the
    /// endpoint goes from idle to busy.
    fn take_slot(&mut self, now: Instant, ahead: usize) -> Option<Reservation> {
        let was_idle = self.slots.held() == 0;
        let reservation = self.slots.reserve(ahead)?;
        self.pace.started(now, was_idle);
        Some(reservation)
    }

    /// How many deliveries may be claimed for it beyond its cap, to wait here for a slot: two
    /// caps' worth when it frees slots faster than claims come (as measured), so that a claim
    /// refills the queue while a cap's worth still waits; none for a slow endpoint (they would
    /// only hold worker slots) or a rate-limited one (they would be throttled).
    fn ahead(&self, now: Instant, claim_ms: f64) -> usize {
        let cap = self.slots.cap();
        let fast = self.throttle.is_none() && self.pace.frees_slots_faster_than_claims(now, cap, claim_ms);
        if fast { 2 * cap } else { 0 }
    }
}

/// The protection state of every endpoint this worker has seen.
#[derive(Debug)]
pub struct Guard {
    pool: PgPool,
    settings: ProtectSettings,
    live_workers: Arc<AtomicUsize>,
    entries: Mutex<HashMap<Uuid, Entry>>,
    room_freed: Arc<Notify>,
    spreader: Spreader,
    /// Moving average of the dispatcher's claim round trips, microseconds.
    claim_us: AtomicU64,
}

/// How long a delivery claimed ahead waits for a slot at most; longer means its endpoint is no
/// longer fast, and it goes back to the queue.
const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// A worker spreads one endpoint's backlog at its rate limit at most this often.
const RATE_SPREAD_EVERY: Duration = pace::SPREAD_EVERY;

impl Guard {
    pub fn new(pool: PgPool, settings: ProtectSettings, live_workers: Arc<AtomicUsize>) -> Self {
        Self {
            spreader: Spreader::new(pool.clone()),
            pool,
            settings,
            live_workers,
            entries: Mutex::new(HashMap::new()),
            room_freed: Arc::new(Notify::new()),
            claim_us: AtomicU64::new(0),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &ProtectSettings {
        &self.settings
    }

    /// What each endpoint may still start in this worker, for the next claim: the endpoints
    /// holding slots, how many, and how many more they may have queued (at most one entry per
    /// delivery held).
    pub fn room(&self) -> Room {
        let (now, claim_ms) = (Instant::now(), self.claim_ms());
        let entries = self.entries.lock().expect("guard lock poisoned");
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let held = entries
            .iter()
            .filter_map(|(id, entry)| {
                let held = entry.slots.held();
                (held > 0).then(|| Held { endpoint: *id, held: count(held), ahead: count(entry.ahead(now, claim_ms)) })
            })
            .collect();
        Room { held, default_cap: self.settings.max_in_flight }
    }

    /// Reserves a slot of `endpoint`'s in-flight cap for a delivery just claimed, or a place in
    /// its queue for one; `None` when neither is free (its attempt then defers it).
    pub fn reserve(&self, endpoint: &Endpoint) -> Option<Reservation> {
        let (now, claim_ms) = (Instant::now(), self.claim_ms());
        self.with_entry(endpoint, |entry| {
            let ahead = entry.ahead(now, claim_ms);
            entry.take_slot(now, ahead)
        })
    }

    /// Notified whenever a slot is freed: a dispatcher whose claim left rows for want of room
    /// waits on it before claiming again.
    pub fn room_freed(&self) -> Arc<Notify> {
        Arc::clone(&self.room_freed)
    }

    /// Records how long a claim took: an endpoint that frees a slot more often than that does not
    /// need its backlog spread.
    pub fn claim_took(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self.claim_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
            Some(if mean == 0 { sample } else { (mean * 4 + sample) / 5 })
        });
    }

    fn claim_ms(&self) -> f64 {
        self.claim_us.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn workers(&self) -> usize {
        self.live_workers.load(Ordering::Relaxed).max(1)
    }

    /// A claim left ready rows of these `endpoints` for want of room: spreads the backlog of
    /// each that is slower than claims come, at its measured pace.
    pub fn crowded(&self, endpoints: &[Uuid]) {
        let (now, claim_ms, workers) = (Instant::now(), self.claim_ms(), self.workers());
        let spreads: Vec<(Uuid, f64)> = {
            let mut entries = self.entries.lock().expect("guard lock poisoned");
            endpoints
                .iter()
                .filter_map(|id| {
                    let entry = entries.get_mut(id)?;
                    let cap = entry.slots.cap();
                    let service = entry.pace.crowded(now, cap, claim_ms)?;
                    Some((*id, pace::interval_ms(service, cap, workers)))
                })
                .collect()
        };
        for (endpoint, interval_ms) in spreads {
            self.spreader.spread(endpoint, interval_ms, Deferral::Saturation);
        }
    }

    /// Decides whether delivery `delivery_id` to `endpoint` may be sent now, in the slot
    /// `reserved` for it at claim time (waiting for it if it was queued), or one taken now.
    pub async fn admit(&self, endpoint: &Endpoint, delivery_id: i64, reserved: Option<Reservation>) -> Admission {
        let reserved = match reserved {
            Some(mut reservation) => reservation.ready(QUEUE_WAIT).await.then_some(reservation),
            None => None,
        };
        let (tripping, failing) = self.with_entry(endpoint, |entry| (entry.tripping, entry.detector.failing()));
        if tripping {
            metrics::protection_deferred(Deferral::Circuit, 1);
            let after = self.settings.breaker.cooldown.max(Duration::from_secs(1));
            return Admission::Defer { after, outcome: DeliveryOutcome::Deferred, reason: Deferral::Circuit };
        }
        let recheck = endpoint.circuit.state != CircuitState::Closed || failing;
        let circuit = if recheck {
            self.fresh_circuit(endpoint.id).await.unwrap_or_else(|| endpoint.circuit.clone())
        } else {
            endpoint.circuit.clone()
        };
        if !circuit.lets_through(delivery_id) {
            let until = circuit.open_until.map(|t| (t - chrono::Utc::now()).to_std().unwrap_or_default());
            let after = until.unwrap_or(self.settings.breaker.cooldown).max(Duration::from_secs(1));
            metrics::protection_deferred(Deferral::Circuit, 1);
            return Admission::Defer { after, outcome: DeliveryOutcome::Deferred, reason: Deferral::Circuit };
        }
        let workers = self.workers();
        let (mut admission, spread) =
            self.with_entry(endpoint, |entry| admit_locally(entry, endpoint, (workers, &self.settings), reserved));
        match &mut admission {
            Admission::Go(pass) if circuit.state == CircuitState::HalfOpen => pass.probe = Some(circuit),
            Admission::Go(_) => {}
            Admission::Defer { reason, .. } => metrics::protection_deferred(*reason, 1),
        }
        if let Some(interval_ms) = spread {
            self.spreader.spread(endpoint.id, interval_ms, Deferral::RateLimit);
        }
        admission
    }

    /// Records how an attempt to `endpoint` went (`None`: it says nothing about the endpoint's
    /// health), trips the fleet's circuit when the detector says so, and spreads a spread backlog
    /// again when the endpoint's pace changed.
    pub async fn record(&self, endpoint: Uuid, success: Option<bool>, elapsed: Duration) {
        let Some(success) = success else { return };
        let (now, claim_ms, workers) = (Instant::now(), self.claim_ms(), self.workers());
        let (trip, respread) = {
            let mut entries = self.entries.lock().expect("guard lock poisoned");
            let Some(entry) = entries.get_mut(&endpoint) else { return };
            let cap = entry.slots.cap();
            entry.pace.answered(now, elapsed);
            let respread = entry.pace.respread(now, cap, claim_ms);
            let respread = respread.map(|service| pace::interval_ms(service, cap, workers));
            let trip = entry.detector.record(&self.settings.breaker, now, success);
            entry.tripping |= trip;
            (trip, respread)
        };
        if let Some(interval_ms) = respread {
            self.spreader.spread(endpoint, interval_ms, Deferral::Saturation);
        }
        if trip {
            if let Err(err) = crate::engine::circuit::trip(&self.pool, endpoint, &self.settings.breaker).await {
                tracing::warn!(endpoint.id = %endpoint, error = %err, "Opening the circuit failed");
            }
            // Stored (or failed): from here the shared row is the truth again, re-read before each
            // send while the detector says failing.
            if let Some(entry) = self.entries.lock().expect("guard lock poisoned").get_mut(&endpoint) {
                entry.tripping = false;
            }
        }
    }

    fn with_entry<T>(&self, endpoint: &Endpoint, f: impl FnOnce(&mut Entry) -> T) -> T {
        let cap = endpoint.max_in_flight.unwrap_or(self.settings.max_in_flight).max(1) as usize;
        let mut entries = self.entries.lock().expect("guard lock poisoned");
        let entry = entries.entry(endpoint.id).or_insert_with(|| Entry::new(cap, Instant::now(), &self.room_freed));
        if entry.slots.cap() != cap {
            // A changed cap takes effect with fresh slots; requests in flight keep theirs.
            entry.slots = Slots::new(cap, Arc::clone(&self.room_freed));
        }
        f(entry)
    }

    async fn fresh_circuit(&self, endpoint: Uuid) -> Option<Circuit> {
        crate::engine::circuit::load(&self.pool, endpoint).await.ok().flatten()
    }
}

/// The in-memory part of admission: in-flight slot (reserved at claim time, or taken now), then
/// rate limit. Returns the admission and, when the endpoint is throttled and was not spread
/// lately, the interval to spread its backlog at.
fn admit_locally(
    entry: &mut Entry,
    endpoint: &Endpoint,
    (workers, settings): (usize, &ProtectSettings),
    reserved: Option<Reservation>,
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
    let slot = match reserved {
        Some(slot) => Some(slot),
        None => entry.take_slot(now, 0),
    };
    let Some(slot) = slot else {
        // No slot: the claim admits by room, so this is a cap that changed or a claim that raced
        // one. One delivery waits about one measured slot period; the backlog is not touched.
        let period_ms = entry.pace.saturated_ms(now).max(1.0) / entry.slots.cap() as f64;
        let after = defer(entry, now, Duration::ZERO, Duration::from_secs_f64(period_ms / 1000.0));
        let admission = Admission::Defer { after, outcome: DeliveryOutcome::Deferred, reason: Deferral::Saturation };
        return (admission, None);
    };
    if let Some(throttle) = &entry.throttle
        && let Err(not_until) = throttle.limiter.check()
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let pod_period = Duration::from_secs_f64(workers as f64 / f64::from(throttle.limit));
        let fleet_interval_ms = 1000.0 / f64::from(throttle.limit);
        let after = defer(entry, now, wait, pod_period);
        let spread = rate_spread_due(entry, now).then_some(fleet_interval_ms);
        return (Admission::Defer { after, outcome: DeliveryOutcome::Throttled, reason: Deferral::RateLimit }, spread);
    }
    (Admission::Go(Pass { _slot: slot, probe: None }), None)
}

/// The next deferral slot: no earlier than `now + wait`, `period` after the previous one.
fn defer(entry: &mut Entry, now: Instant, wait: Duration, period: Duration) -> Duration {
    let slot = entry.cursor.max(now + wait);
    entry.cursor = slot + period;
    (slot - now).max(period)
}

fn rate_spread_due(entry: &mut Entry, now: Instant) -> bool {
    if entry.rate_spread.is_some_and(|at| now.duration_since(at) < RATE_SPREAD_EVERY) {
        return false;
    }
    entry.rate_spread = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferrals_are_spread_one_period_apart() {
        let now = Instant::now();
        let mut entry = Entry::new(1, now, &Arc::new(Notify::new()));
        let period = Duration::from_millis(100);
        let waits: Vec<u128> =
            (0..4).map(|_| defer(&mut entry, now, Duration::from_millis(50), period).as_millis()).collect();
        assert_eq!(waits, [100, 150, 250, 350]);
    }
}

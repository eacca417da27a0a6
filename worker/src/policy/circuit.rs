//! The circuit breaker, decided here and only here:
//!
//! - [`Detector`]: when one worker's view of an endpoint says "failing" (consecutive failures,
//!   or a failure ratio over a sliding window counted in buckets);
//! - [`transition`]: the state machine `(circuit, event, now) → circuit`: closed → open on a
//!   trip; open → half-open with one probe once the cool-down is over (or a lost probe replaced);
//!   half-open → closed when the probe is delivered, → open again with the cool-down doubled up
//!   to the maximum when it fails.
//!
//! The circuit is shared by the fleet through the endpoint row. `engine::circuit` stores the
//! decided states, fenced by the state they were decided from, and the completion statement
//! stores a probe's decision with its result; neither decides anything. Time comes in as an
//! argument.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::policy::states::CircuitState;

/// Breaker thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Trip after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when at least this fraction of the attempts in the window failed…
    pub failure_ratio: f64,
    /// …and the window holds at least this many attempts.
    pub min_requests: u32,
    pub window: Duration,
    /// First cool-down; each failed probe doubles it up to `max_cooldown`.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
        }
    }
}

impl BreakerSettings {
    /// The cool-down after a failed probe that followed a cool-down of `previous`.
    pub fn next_cooldown(&self, previous: Duration) -> Duration {
        (previous * 2).clamp(self.cooldown, self.max_cooldown.max(self.cooldown))
    }
}

/// An endpoint's circuit, as stored on its row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Circuit {
    #[sqlx(rename = "circuit_state")]
    pub state: CircuitState,
    /// While open: when the cool-down ends.
    #[sqlx(rename = "circuit_open_until")]
    pub open_until: Option<DateTime<Utc>>,
    /// While open or half-open: the cool-down in force, which a failed probe doubles.
    #[sqlx(rename = "circuit_cooldown_ms")]
    pub cooldown_ms: Option<i32>,
    /// While half-open: the one delivery allowed through.
    #[sqlx(rename = "circuit_probe_delivery")]
    pub probe: Option<i64>,
}

impl Circuit {
    /// A closed circuit.
    pub const CLOSED: Self = Self { state: CircuitState::Closed, open_until: None, cooldown_ms: None, probe: None };

    /// Whether `delivery` may be sent through this circuit.
    pub fn lets_through(&self, delivery: i64) -> bool {
        self.state == CircuitState::Closed || self.probe == Some(delivery)
    }

    fn open(now: DateTime<Utc>, cooldown: Duration) -> Self {
        let cooldown_ms = i32::try_from(cooldown.as_millis()).unwrap_or(i32::MAX);
        Self {
            state: CircuitState::Open,
            open_until: Some(now + chrono::Duration::milliseconds(i64::from(cooldown_ms))),
            cooldown_ms: Some(cooldown_ms),
            probe: None,
        }
    }
}

impl Default for Circuit {
    fn default() -> Self {
        Self::CLOSED
    }
}

/// What happened to a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A worker's [`Detector`] tripped.
    Tripped,
    /// The leader looked at a circuit that is not closed: `candidate` is the endpoint's oldest
    /// waiting delivery (`None`: nothing waits), `probe_exists` whether the current probe's
    /// delivery is still in the queue.
    ProbeDue { candidate: Option<i64>, probe_exists: bool },
    /// The probe's attempt answered 2xx.
    ProbeDelivered,
    /// The probe's attempt failed (it will be retried or became a dead letter).
    ProbeFailed,
}

/// The circuit after `event` at `now`, or `None` when the event changes nothing (a trip of an
/// already open circuit, a cool-down not over yet, a probe result for a circuit that moved on).
pub fn transition(circuit: &Circuit, event: Event, now: DateTime<Utc>, settings: &BreakerSettings) -> Option<Circuit> {
    use CircuitState::{Closed, HalfOpen, Open};
    match (circuit.state, event) {
        (Closed, Event::Tripped) => Some(Circuit::open(now, settings.cooldown)),
        (Open, Event::ProbeDue { candidate: Some(probe), .. }) if circuit.open_until.is_none_or(|t| t <= now) => {
            Some(Circuit { state: HalfOpen, probe: Some(probe), ..circuit.clone() })
        }
        (HalfOpen, Event::ProbeDue { candidate: Some(probe), probe_exists: false }) => {
            Some(Circuit { state: HalfOpen, probe: Some(probe), ..circuit.clone() })
        }
        (HalfOpen, Event::ProbeDelivered) => Some(Circuit::CLOSED),
        (HalfOpen, Event::ProbeFailed) => {
            let previous =
                Duration::from_millis(circuit.cooldown_ms.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0));
            Some(Circuit::open(now, settings.next_cooldown(previous)))
        }
        _ => None,
    }
}

/// Buckets the window is counted in: outcomes leave it in steps of a twentieth of the window.
const BUCKETS: u32 = 20;

/// Recent outcomes of one endpoint, as one worker saw them. The window is kept as counts per
/// bucket, not one entry per outcome: recording is O(1) and the memory per endpoint is fixed,
/// whatever the request rate (a busy endpoint sees hundreds of thousands of outcomes a minute).
#[derive(Debug, Default)]
pub struct Detector {
    consecutive: u32,
    /// Whether the last outcome was a failure. Kept through a trip, which restarts the counts:
    /// the worker that tripped must not take its cached closed circuit for the truth.
    last_failed: bool,
    /// (bucket start, attempts, failures), oldest first.
    buckets: VecDeque<(Instant, u32, u32)>,
    total: u32,
    failures: u32,
}

impl Detector {
    /// Records an outcome at `now`; returns `true` when the endpoint should be tripped (the
    /// detector then starts afresh).
    pub fn record(&mut self, settings: &BreakerSettings, now: Instant, success: bool) -> bool {
        self.consecutive = if success { 0 } else { self.consecutive + 1 };
        while let Some(&(start, total, failures)) = self.buckets.front() {
            if now.duration_since(start) <= settings.window {
                break;
            }
            self.buckets.pop_front();
            self.total -= total;
            self.failures -= failures;
        }
        let span = settings.window / BUCKETS;
        match self.buckets.back_mut() {
            Some((start, total, failures)) if now.duration_since(*start) < span => {
                *total += 1;
                *failures += u32::from(!success);
            }
            _ => self.buckets.push_back((now, 1, u32::from(!success))),
        }
        self.total += 1;
        self.failures += u32::from(!success);
        let by_ratio = self.total >= settings.min_requests
            && f64::from(self.failures) >= settings.failure_ratio * f64::from(self.total);
        let trip = !success && (self.consecutive >= settings.consecutive_failures || by_ratio);
        if trip {
            *self = Self { last_failed: true, ..Self::default() };
        } else {
            self.last_failed = !success;
        }
        trip
    }

    /// Whether the last outcome was a failure, including the one that tripped (then the worker
    /// re-checks the shared circuit before each send, until an answer says the endpoint is well).
    pub fn failing(&self) -> bool {
        self.last_failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings { consecutive_failures: 3, min_requests: 10, ..BreakerSettings::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_trip_and_a_success_resets_the_count() {
        let (s, mut d) = (settings(), Detector::default());
        let now = Instant::now();
        assert!(!d.record(&s, now, false));
        assert!(!d.record(&s, now, false));
        assert!(!d.record(&s, now, true), "a success resets");
        assert!(!d.record(&s, now, false));
        assert!(!d.record(&s, now, false));
        assert!(d.failing());
        assert!(d.record(&s, now, false), "third in a row trips");
        assert!(d.failing(), "after a trip the worker still re-checks the shared circuit");
        assert!(!d.record(&s, now, false), "the count starts afresh after a trip");
        assert!(!d.record(&s, now, false));
        assert!(d.record(&s, now, false));
        assert!(!d.record(&s, now, true));
        assert!(!d.failing(), "a success ends the re-checking");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_ratio_over_the_window_trips_once_enough_requests_were_seen() {
        let (s, mut d) = (settings(), Detector::default());
        let now = Instant::now();
        // Alternating: never 3 in a row, but half fail.
        for n in 0..9 {
            assert!(!d.record(&s, now, n % 2 == 0), "too few requests to judge at {n}");
        }
        assert!(d.record(&s, now, false), "10 requests, 5 failures: ratio reached");
    }

    #[tokio::test(start_paused = true)]
    async fn old_outcomes_leave_the_window() {
        let (s, mut d) = (settings(), Detector::default());
        let start = Instant::now();
        for n in 0..9 {
            d.record(&s, start, n % 2 == 0);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!d.record(&s, Instant::now(), false), "the window emptied: 1 request is too few");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_bucket_by_bucket_with_fixed_memory() {
        let (s, mut d) = (settings(), Detector::default());
        // Ten minutes of successes, one per 10 ms: the window never holds more than its buckets.
        for _ in 0..60_000 {
            assert!(!d.record(&s, Instant::now(), true));
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!(d.buckets.len() <= BUCKETS as usize + 1, "{} buckets", d.buckets.len());
        assert!(d.total <= 6_300 && d.total >= 5_700, "about one window of attempts counted: {}", d.total);
        // Failures now, with the consecutive rule out of the way: the ratio counts the whole
        // window, so it takes as many failures as the window holds successes.
        let s = BreakerSettings { consecutive_failures: u32::MAX, ..s };
        let failures = (0..20_000).take_while(|_| !d.record(&s, Instant::now(), false)).count() + 1;
        assert!((5_700..=6_300).contains(&failures), "tripped after {failures} failures");
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_trip_opens_a_closed_circuit_for_the_first_cooldown_only_once() {
        let s = BreakerSettings::default();
        let open = transition(&Circuit::CLOSED, Event::Tripped, at(0), &s).unwrap();
        assert_eq!(open.state, CircuitState::Open);
        assert_eq!(open.open_until, Some(at(30)));
        assert_eq!(open.cooldown_ms, Some(30_000));
        assert_eq!(transition(&open, Event::Tripped, at(1), &s), None, "already open");
        assert!(!open.lets_through(7));
    }

    #[test]
    fn the_cooldown_ends_in_one_probe_and_a_lost_probe_is_replaced() {
        let s = BreakerSettings::default();
        let open = transition(&Circuit::CLOSED, Event::Tripped, at(0), &s).unwrap();
        let due = Event::ProbeDue { candidate: Some(7), probe_exists: false };
        assert_eq!(transition(&open, due, at(29), &s), None, "cool-down not over");
        let nothing_waits = Event::ProbeDue { candidate: None, probe_exists: false };
        assert_eq!(transition(&open, nothing_waits, at(31), &s), None, "no delivery to probe with");
        let half = transition(&open, due, at(30), &s).unwrap();
        assert_eq!((half.state, half.probe), (CircuitState::HalfOpen, Some(7)));
        assert!(half.lets_through(7) && !half.lets_through(8));
        let still_there = Event::ProbeDue { candidate: Some(8), probe_exists: true };
        assert_eq!(transition(&half, still_there, at(40), &s), None, "the probe is still on its way");
        let lost = Event::ProbeDue { candidate: Some(8), probe_exists: false };
        assert_eq!(transition(&half, lost, at(40), &s).unwrap().probe, Some(8));
    }

    #[test]
    fn a_probe_closes_the_circuit_or_reopens_it_with_the_cooldown_doubled_up_to_the_maximum() {
        let s = BreakerSettings::default();
        let mut circuit = transition(&Circuit::CLOSED, Event::Tripped, at(0), &s).unwrap();
        let mut cooldowns = Vec::new();
        for n in 0..7 {
            let now = at(1000 * (n + 1));
            circuit =
                transition(&circuit, Event::ProbeDue { candidate: Some(n), probe_exists: false }, now, &s).unwrap();
            circuit = transition(&circuit, Event::ProbeFailed, now, &s).unwrap();
            assert_eq!(circuit.state, CircuitState::Open);
            cooldowns.push(circuit.cooldown_ms.unwrap() / 1000);
            assert_eq!(
                circuit.open_until,
                Some(now + chrono::Duration::seconds(i64::from(cooldowns[cooldowns.len() - 1])))
            );
        }
        assert_eq!(cooldowns, [60, 120, 240, 480, 600, 600, 600]);
        let half =
            transition(&circuit, Event::ProbeDue { candidate: Some(9), probe_exists: false }, at(9000), &s).unwrap();
        assert_eq!(transition(&half, Event::ProbeDelivered, at(9001), &s), Some(Circuit::CLOSED));
        assert_eq!(transition(&Circuit::CLOSED, Event::ProbeDelivered, at(9002), &s), None);
    }

    #[test]
    fn cooldown_doubles_up_to_the_maximum() {
        let s = BreakerSettings::default();
        assert_eq!(s.next_cooldown(Duration::from_secs(30)), Duration::from_secs(60));
        assert_eq!(s.next_cooldown(Duration::from_secs(400)), Duration::from_secs(600));
        assert_eq!(s.next_cooldown(Duration::ZERO), Duration::from_secs(30));
    }
}

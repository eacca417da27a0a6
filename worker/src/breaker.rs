//! When an endpoint is failing: a pure failure detector (consecutive failures, or a failure ratio
//! over a sliding window) and the cool-down schedule. Time comes in as an argument.
//!
//! The circuit itself — closed, open until a time, half-open with one probe — is shared by the
//! fleet through the endpoint row (see `queue::open_circuit` and the probe handling in
//! `queue::complete_batch`); this module decides when a worker trips it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

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

/// Buckets the window is counted in: outcomes leave it in steps of a twentieth of the window.
const BUCKETS: u32 = 20;

/// Recent outcomes of one endpoint, as one worker saw them. The window is kept as counts per
/// bucket, not one entry per outcome: recording is O(1) and the memory per endpoint is fixed,
/// whatever the request rate (a busy endpoint sees hundreds of thousands of outcomes a minute).
#[derive(Debug, Default)]
pub struct Detector {
    consecutive: u32,
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
            *self = Self::default();
        }
        trip
    }

    /// Whether the last outcome was a failure (then the worker re-checks the shared circuit before
    /// each send).
    pub fn failing(&self) -> bool {
        self.consecutive > 0
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
        assert!(!d.failing(), "the detector starts afresh after a trip");
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

    #[test]
    fn cooldown_doubles_up_to_the_maximum() {
        let s = BreakerSettings::default();
        assert_eq!(s.next_cooldown(Duration::from_secs(30)), Duration::from_secs(60));
        assert_eq!(s.next_cooldown(Duration::from_secs(400)), Duration::from_secs(600));
        assert_eq!(s.next_cooldown(Duration::ZERO), Duration::from_secs(30));
    }
}

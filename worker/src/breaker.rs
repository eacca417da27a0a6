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

/// Recent outcomes of one endpoint, as one worker saw them.
#[derive(Debug, Default)]
pub struct Detector {
    consecutive: u32,
    window: VecDeque<(Instant, bool)>,
}

impl Detector {
    /// Records an outcome at `now`; returns `true` when the endpoint should be tripped (the
    /// detector then starts afresh).
    pub fn record(&mut self, settings: &BreakerSettings, now: Instant, success: bool) -> bool {
        self.consecutive = if success { 0 } else { self.consecutive + 1 };
        self.window.push_back((now, success));
        while self.window.front().is_some_and(|(at, _)| now.duration_since(*at) > settings.window) {
            self.window.pop_front();
        }
        let total = self.window.len();
        let failures = self.window.iter().filter(|(_, ok)| !ok).count();
        let by_ratio =
            total >= settings.min_requests as usize && failures as f64 >= settings.failure_ratio * total as f64;
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

    #[test]
    fn cooldown_doubles_up_to_the_maximum() {
        let s = BreakerSettings::default();
        assert_eq!(s.next_cooldown(Duration::from_secs(30)), Duration::from_secs(60));
        assert_eq!(s.next_cooldown(Duration::from_secs(400)), Duration::from_secs(600));
        assert_eq!(s.next_cooldown(Duration::ZERO), Duration::from_secs(30));
    }
}

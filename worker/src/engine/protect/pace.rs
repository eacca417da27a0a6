//! How fast one endpoint answers, as this worker measured it, and when its waiting backlog should
//! be spread over time. Pure: time comes in as an argument.
//!
//! The service time is never guessed. Until the endpoint has answered, the only thing known is a
//! lower bound: its requests have been in flight for as long as it has been busy without an
//! answer. A spread from that bound moves the backlog out of the claim's way for as long as the
//! bound says; if the endpoint is slower, the rows come back, crowd a claim again, and are spread
//! again once the bound has doubled (an exponential search, so a hanging endpoint costs a handful
//! of spreads). When answers arrive and the measured time moves by half or double, the backlog is
//! spread again at the new pace, which also pulls it back when a slow endpoint recovers.
//! See `docs/protection.md`.

use std::time::Duration;

use tokio::time::Instant;

/// A spread is made again without a change of pace at most this often.
pub const SPREAD_EVERY: Duration = Duration::from_secs(5);
/// Answers re-evaluate a standing spread at most this often (an endpoint whose times swing by 2×
/// from one answer to the next would otherwise be re-spread continuously).
pub const RESPREAD_EVERY: Duration = Duration::from_secs(1);
/// The weight of the newest answer in the moving average.
const WEIGHT: f64 = 0.2;

/// One endpoint's measured pace in this worker.
#[derive(Debug, Default, Clone)]
pub struct Pace {
    /// Moving average of answered attempts' durations, milliseconds; `None` until an answer.
    service_ms: Option<f64>,
    last_answer: Option<Instant>,
    /// When the endpoint last went from nothing in flight to something in flight here.
    busy_since: Option<Instant>,
    /// The last spread of its backlog: when, and at what service time.
    spread: Option<(Instant, f64)>,
}

impl Pace {
    /// A request is starting at `now`; `was_idle`: nothing was in flight before it.
    pub fn started(&mut self, now: Instant, was_idle: bool) {
        if was_idle || self.busy_since.is_none() {
            self.busy_since = Some(now);
        }
    }

    /// An attempt answered at `now` after `elapsed` (a transport failure or timeout counts: the
    /// endpoint held the slot that long).
    pub fn answered(&mut self, now: Instant, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.service_ms = Some(self.service_ms.map_or(ms, |mean| (1.0 - WEIGHT) * mean + WEIGHT * ms));
        self.last_answer = Some(now);
    }

    /// The measured average service time, if the endpoint answered at all.
    pub fn measured_ms(&self) -> Option<f64> {
        self.service_ms
    }

    /// The service time as known at `now` while every slot is taken: the measured average, or
    /// more if the endpoint has been silent for longer than that since it became busy.
    pub fn saturated_ms(&self, now: Instant) -> f64 {
        let since = match (self.last_answer, self.busy_since) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let silent = since.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64() * 1000.0);
        self.service_ms.unwrap_or(0.0).max(silent)
    }

    /// A claim left rows of this saturated endpoint behind (it has `slots` per worker, and a claim
    /// takes `claim_ms`). Returns the service time to spread its backlog at, or `None`: not worth
    /// it (it frees a slot at least once per claim, so its rows leave the claim's window as fast
    /// as claims come), or it was spread lately at about this pace.
    pub fn crowded(&mut self, now: Instant, slots: usize, claim_ms: f64) -> Option<f64> {
        let service = self.saturated_ms(now);
        if !slower_than_claims(service, slots, claim_ms) {
            return None;
        }
        if let Some((at, last)) = self.spread
            && !changed(service, last)
            && now.saturating_duration_since(at) < SPREAD_EVERY
        {
            return None;
        }
        self.spread = Some((now, service));
        Some(service)
    }

    /// Whether, as measured (it has answered), it frees one of its `slots` at least once per claim
    /// of `claim_ms`: then deliveries claimed ahead of a slot wait less than a claim would take.
    pub fn frees_slots_faster_than_claims(&self, now: Instant, slots: usize, claim_ms: f64) -> bool {
        self.service_ms.is_some() && !slower_than_claims(self.saturated_ms(now), slots, claim_ms)
    }

    /// After an answer: when a spread stands and the measured time has since halved or doubled,
    /// the service time to spread the backlog again at. When the endpoint is now fast enough to
    /// need no spread, this is the last one: it pulls the backlog back to the endpoint's pace.
    pub fn respread(&mut self, now: Instant, slots: usize, claim_ms: f64) -> Option<f64> {
        let (at, last) = self.spread?;
        let service = self.service_ms?;
        if !changed(service, last) || now.saturating_duration_since(at) < RESPREAD_EVERY {
            return None;
        }
        self.spread = slower_than_claims(service, slots, claim_ms).then_some((now, service));
        Some(service)
    }
}

/// Whether an endpoint taking `service_ms` per request with `slots` slots frees a slot less often
/// than a claim takes.
fn slower_than_claims(service_ms: f64, slots: usize, claim_ms: f64) -> bool {
    service_ms / slots.max(1) as f64 > claim_ms
}

fn changed(now: f64, before: f64) -> bool {
    now >= 2.0 * before || now <= before / 2.0
}

/// The spacing, in milliseconds, at which `workers` workers with `slots` each drain an endpoint
/// taking `service_ms` per request: the fleet-wide interval between its spread deliveries.
pub fn interval_ms(service_ms: f64, slots: usize, workers: usize) -> f64 {
    service_ms / (slots.max(1) * workers.max(1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIM_MS: f64 = 1.5;

    fn answered_every(pace: &mut Pace, start: Instant, n: u32, each: Duration) -> Instant {
        let mut now = start;
        for _ in 0..n {
            now += each;
            pace.answered(now, each);
        }
        now
    }

    #[test]
    fn an_endpoint_answering_in_a_millisecond_is_spread_at_its_own_pace_or_not_at_all() {
        let start = Instant::now();
        let mut pace = Pace::default();
        pace.started(start, true);
        let now = answered_every(&mut pace, start, 50, Duration::from_millis(1));
        assert!((pace.saturated_ms(now) - 1.0).abs() < 1e-9, "the measured time, not a guess");
        // 32 slots free one every 31 µs: far more often than a claim, so spreading is pointless.
        assert_eq!(pace.crowded(now, 32, CLAIM_MS), None);
        // With one slot it is worth it, at 1 ms per request across 2 workers: 0.5 ms apart, not
        // the 50 ms a 100-ms guess would give.
        let service = pace.crowded(now, 1, 0.1).expect("a spread");
        assert!((interval_ms(service, 1, 2) - 0.5).abs() < 1e-9, "{service}");
    }

    #[test]
    fn a_silent_endpoint_is_spread_from_the_time_it_has_been_silent_doubling() {
        let start = Instant::now();
        let mut pace = Pace::default();
        pace.started(start, true);
        // Nothing is known 10 ms in: 10 ms / 32 slots is below a claim's time.
        assert_eq!(pace.crowded(start + Duration::from_millis(10), 32, CLAIM_MS), None);
        let first = pace.crowded(start + Duration::from_millis(100), 32, CLAIM_MS);
        assert_eq!(first, Some(100.0), "spread from the silence so far, never from a guess");
        assert_eq!(pace.crowded(start + Duration::from_millis(150), 32, CLAIM_MS), None, "not yet doubled");
        assert_eq!(pace.crowded(start + Duration::from_millis(200), 32, CLAIM_MS), Some(200.0));
        // A 2-s timeout answers: the measured time takes over.
        pace.answered(start + Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(pace.crowded(start + Duration::from_millis(2001), 32, CLAIM_MS), Some(2000.0));
    }

    #[test]
    fn a_recovered_endpoints_backlog_is_pulled_back_once_then_left_alone() {
        let start = Instant::now();
        let mut pace = Pace::default();
        pace.started(start, true);
        pace.answered(start + Duration::from_secs(2), Duration::from_secs(2));
        let spread_at = start + Duration::from_secs(2);
        assert_eq!(pace.crowded(spread_at, 32, CLAIM_MS), Some(2000.0));
        // It answers in 1 ms from now on; within a second nothing is re-evaluated.
        let now = answered_every(&mut pace, spread_at, 40, Duration::from_millis(1));
        assert!(now - spread_at < RESPREAD_EVERY);
        assert_eq!(pace.respread(now, 32, CLAIM_MS), None);
        let later = spread_at + RESPREAD_EVERY;
        let service = pace.respread(later, 32, CLAIM_MS).expect("pulled back at the new pace");
        assert!(service < 2.0, "{service}");
        assert_eq!(pace.respread(later + RESPREAD_EVERY, 32, CLAIM_MS), None, "no spread stands any more");
    }

    #[test]
    fn a_steady_slow_endpoint_is_spread_again_only_every_few_seconds() {
        let start = Instant::now();
        let mut pace = Pace::default();
        pace.started(start, true);
        let now = answered_every(&mut pace, start, 10, Duration::from_millis(200));
        assert_eq!(pace.crowded(now, 32, CLAIM_MS), Some(200.0));
        let now = answered_every(&mut pace, now, 5, Duration::from_millis(200));
        assert_eq!(pace.crowded(now, 32, CLAIM_MS), None, "spread a second ago at this pace");
        assert_eq!(pace.respread(now, 32, CLAIM_MS), None, "unchanged pace");
        let now = answered_every(&mut pace, now, 20, Duration::from_millis(200));
        assert_eq!(pace.crowded(now, 32, CLAIM_MS), Some(200.0), "{SPREAD_EVERY:?} later");
    }
}

//! An endpoint's rate limit as one worker holds it: its share of the fleet's quota.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

/// A per-pod share of an endpoint's rate limit.
#[derive(Debug)]
pub(super) struct Throttle {
    pub(super) limit: u32,
    pub(super) burst: u32,
    pub(super) workers: usize,
    pub(super) limiter: DefaultDirectRateLimiter,
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

#[cfg(test)]
mod tests {
    use governor::RateLimiter;
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
}

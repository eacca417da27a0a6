//! Requests per second per token: one client (say, one tenant's integration with a scoped token)
//! cannot take the API from the others. Over its rate, a request gets 429 with `Retry-After`
//! before it touches the database.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A keyed limiter over token hashes. Only authenticated tokens get a key, so its size is bounded
/// by the number of tokens.
#[derive(Debug)]
pub struct Throttle {
    limiter: Option<DefaultKeyedRateLimiter<[u8; 32]>>,
}

impl Throttle {
    /// `per_second` requests per token with bursts of `burst`; `None` does not limit.
    pub fn new(limit: Option<(NonZeroU32, NonZeroU32)>) -> Self {
        let limiter = limit.map(|(rate, burst)| RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)));
        Self { limiter }
    }

    /// `Ok` if the token whose hash is `token` may make a request now, else how long to wait.
    ///
    /// # Errors
    /// The time until the token's next request is allowed.
    pub fn check(&self, token: &[u8; 32]) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(token).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: u32, burst: u32) -> Option<(NonZeroU32, NonZeroU32)> {
        Some((NonZeroU32::new(rate).unwrap(), NonZeroU32::new(burst).unwrap()))
    }

    #[test]
    fn a_token_over_its_burst_is_told_when_to_come_back() {
        let throttle = Throttle::new(limit(1, 3));
        let token = [7; 32];
        for _ in 0..3 {
            assert!(throttle.check(&token).is_ok());
        }
        let wait = throttle.check(&token).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(throttle.check(&[8; 32]).is_ok(), "another token has its own allowance");
    }

    #[test]
    fn without_a_limit_every_request_passes() {
        let throttle = Throttle::new(None);
        assert!((0..10_000).all(|_| throttle.check(&[1; 32]).is_ok()));
    }
}

//! What happened (`Outcome`) → what to do (`Disposition`) → when (`RetryPolicy`).
//!
//! Pure code: the current time and the jitter sample are arguments, so every rule here is tested
//! without a clock or a random number generator.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The facts of one attempt, as the attempt saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status { code: u16, retry_after: Option<Duration> },
    /// The request failed in transport (connect, TLS, timeout, reset, DNS, bad HTTP): worth retrying.
    Transport,
    /// Nothing was sent and retrying cannot help (unknown endpoint, invalid or refused URL,
    /// oversized payload): the delivery becomes a dead letter at once.
    Permanent,
    /// Nothing was sent because of something an operator can fix (a missing encryption key):
    /// retried on the schedule like a transport failure.
    NotSent,
}

/// What to do with the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    /// Try again after this long.
    Retry {
        after: Duration,
    },
    /// Give up: move to the dead letters. `disable_endpoint` when the receiver asked for it (410).
    Dead {
        exhausted: bool,
        disable_endpoint: bool,
    },
}

/// When to retry. `schedule[n]` is the wait after attempt `n + 1`, so a delivery gets
/// `schedule.len() + 1` attempts in all.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    jitter: f64,
    retry_after_max: Duration,
}

/// Why a retry policy was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("jitter must be between 0 and 1, got {0}")]
    Jitter(f64),
}

impl RetryPolicy {
    /// The Standard Webhooks schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    pub fn standard() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            schedule: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            jitter: 0.2,
            retry_after_max: minutes(60),
        }
    }

    /// A policy with the given waits, jitter fraction (0.2 = ±20 %) and `Retry-After` ceiling.
    ///
    /// # Errors
    /// [`PolicyError::Jitter`] unless `0 <= jitter < 1`.
    pub fn try_new(schedule: Vec<Duration>, jitter: f64, retry_after_max: Duration) -> Result<Self, PolicyError> {
        if !(0.0..1.0).contains(&jitter) {
            return Err(PolicyError::Jitter(jitter));
        }
        Ok(Self { schedule, jitter, retry_after_max })
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len()).unwrap_or(u32::MAX - 1) + 1
    }

    /// The wait after attempt number `attempt` (1-based) failed, or `None` when it was the last.
    /// `sample` in `[-1, 1]` scales the jitter; a `Retry-After` from the receiver replaces the
    /// schedule's wait, capped at the ceiling.
    pub fn next_delay(&self, attempt: u32, sample: f64, retry_after: Option<Duration>) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let base = *self.schedule.get(index)?;
        if let Some(asked) = retry_after {
            return Some(asked.min(self.retry_after_max));
        }
        let factor = 1.0 + self.jitter * sample.clamp(-1.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// Decides what follows `outcome` of attempt number `attempt`.
    pub fn classify(&self, outcome: &Outcome, attempt: u32, sample: f64) -> Disposition {
        let retry_after = match outcome {
            Outcome::Status { code: 200..=299, .. } => return Disposition::Delivered,
            Outcome::Status { code: 410, .. } => {
                return Disposition::Dead { exhausted: false, disable_endpoint: true };
            }
            Outcome::Permanent => return Disposition::Dead { exhausted: false, disable_endpoint: false },
            Outcome::Status { code: 429 | 503, retry_after } => *retry_after,
            Outcome::Status { .. } | Outcome::Transport | Outcome::NotSent => None,
        };
        match self.next_delay(attempt, sample, retry_after) {
            Some(after) => Disposition::Retry { after },
            None => Disposition::Dead { exhausted: true, disable_endpoint: false },
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the
/// past means "now". Unparseable values are ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    Some((date.with_timezone(&Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn standard_schedule_follows_standard_webhooks() {
        let policy = RetryPolicy::standard();
        let waits: Vec<u64> = (1..=7).map(|n| policy.next_delay(n, 0.0, None).unwrap().as_secs()).collect();
        assert_eq!(waits, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(policy.max_attempts(), 8);
        assert_eq!(policy.next_delay(8, 0.0, None), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_for_every_sample() {
        let policy = RetryPolicy::standard();
        for attempt in 1..=7 {
            let base = policy.next_delay(attempt, 0.0, None).unwrap();
            for step in -1000..=1000 {
                let sample = f64::from(step) / 1000.0;
                let wait = policy.next_delay(attempt, sample, None).unwrap();
                assert!(wait >= base.mul_f64(0.8) && wait <= base.mul_f64(1.2), "{attempt} {sample} {wait:?}");
            }
            // Out-of-range samples are clamped, never stretch the bounds.
            assert_eq!(policy.next_delay(attempt, 7.0, None), Some(base.mul_f64(1.2)));
            assert_eq!(policy.next_delay(attempt, -7.0, None), Some(base.mul_f64(0.8)));
        }
    }

    #[test]
    fn retry_after_replaces_the_schedule_and_is_clamped() {
        let policy = RetryPolicy::standard();
        assert_eq!(policy.next_delay(1, 0.5, Some(secs(42))), Some(secs(42)));
        assert_eq!(policy.next_delay(1, 0.0, Some(secs(86_400))), Some(secs(3600)));
        assert_eq!(policy.next_delay(8, 0.0, Some(secs(1))), None, "no retry after the last attempt");
    }

    #[test]
    fn retry_after_is_honoured_only_for_429_and_503() {
        let policy = RetryPolicy::standard();
        let asked = Some(secs(42));
        let outcome = |code| Outcome::Status { code, retry_after: asked };
        assert_eq!(policy.classify(&outcome(429), 1, 0.0), Disposition::Retry { after: secs(42) });
        assert_eq!(policy.classify(&outcome(503), 1, 0.0), Disposition::Retry { after: secs(42) });
        assert_eq!(policy.classify(&outcome(500), 1, 0.0), Disposition::Retry { after: secs(5) });
    }

    #[test]
    fn outcomes_map_to_dispositions() {
        let policy = RetryPolicy::standard();
        let status = |code| Outcome::Status { code, retry_after: None };
        assert_eq!(policy.classify(&status(200), 1, 0.0), Disposition::Delivered);
        assert_eq!(policy.classify(&status(204), 8, 0.0), Disposition::Delivered);
        assert_eq!(
            policy.classify(&status(410), 1, 0.0),
            Disposition::Dead { exhausted: false, disable_endpoint: true }
        );
        for failing in [status(302), status(400), status(404), status(500), Outcome::Transport, Outcome::NotSent] {
            assert_eq!(policy.classify(&failing, 1, 0.0), Disposition::Retry { after: secs(5) }, "{failing:?}");
            assert_eq!(
                policy.classify(&failing, 8, 0.0),
                Disposition::Dead { exhausted: true, disable_endpoint: false },
                "{failing:?}"
            );
        }
        assert_eq!(
            policy.classify(&Outcome::Permanent, 1, 0.0),
            Disposition::Dead { exhausted: false, disable_endpoint: false }
        );
    }

    #[test]
    fn an_empty_schedule_means_one_attempt() {
        let policy = RetryPolicy::try_new(vec![], 0.2, secs(60)).unwrap();
        assert_eq!(policy.max_attempts(), 1);
        assert_eq!(
            policy.classify(&Outcome::Transport, 1, 0.0),
            Disposition::Dead { exhausted: true, disable_endpoint: false }
        );
    }

    #[test]
    fn jitter_outside_zero_to_one_is_refused() {
        assert_eq!(RetryPolicy::try_new(vec![], 1.5, secs(1)), Err(PolicyError::Jitter(1.5)));
        assert_eq!(RetryPolicy::try_new(vec![], -0.1, secs(1)), Err(PolicyError::Jitter(-0.1)));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now), Some(secs(90)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}

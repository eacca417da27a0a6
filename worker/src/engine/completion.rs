//! The result of one delivery step, ready to persist: what happens to the queue row ([`Step`]),
//! the facts of the attempt for the history ([`Facts`]) and, for a circuit's probe, the circuit's
//! decided next state. [`Completion::new`] is the one way to build one — for the engine, the
//! tests and the benchmark alike.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::engine::forensics::Forensics;
use crate::engine::queue::ClaimedDelivery;
use crate::policy::circuit::Circuit;
use crate::policy::retry::Disposition;
use crate::policy::states::{DeliveryOutcome, text_enum};

/// Why a 410 disables an endpoint, as recorded on it.
const GONE_REASON: &str = "the receiver answered 410 Gone";

text_enum! {
    /// What a completion does to its row (the `action` column of the completion statement).
    Action {
        /// Delete the row; the attempt history keeps the record.
        Delivered => "delivered",
        /// Back to pending at `run_at`, the attempt spent.
        Retry => "retry",
        /// Move to the dead letters.
        Dead => "dead",
        /// Back to pending at `run_at` with the attempt given back (nothing was sent, or the
        /// worker is shutting down). Not recorded in the attempt history.
        Release => "release",
        /// Parked as `paused` with the attempt given back (its endpoint is paused). Not recorded
        /// in the attempt history.
        Hold => "hold",
    }
}

/// What happens to the queue row, decided by the retry policy (or by admission, for the steps
/// that make no attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Delivered,
    Retry {
        at: DateTime<Utc>,
    },
    /// `disable_endpoint`: the reason recorded on the endpoint when the receiver asked to be
    /// disabled (410).
    Dead {
        disable_endpoint: Option<String>,
    },
    Release {
        at: DateTime<Utc>,
    },
    Hold,
}

impl Step {
    /// The step a retry disposition decided at `now`.
    pub fn decided(disposition: Disposition, now: DateTime<Utc>) -> Self {
        match disposition {
            Disposition::Delivered => Self::Delivered,
            Disposition::Retry { after } => Self::Retry { at: later(now, after) },
            Disposition::Dead { disable_endpoint, .. } => {
                Self::Dead { disable_endpoint: disable_endpoint.then(|| GONE_REASON.to_owned()) }
            }
        }
    }
}

/// The facts of an attempt (for steps without one: when it was decided, and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub attempted_at: DateTime<Utc>,
    pub elapsed: Duration,
    pub outcome: DeliveryOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    /// The connection's dialled address, timings and the response's headers.
    pub forensics: Forensics,
}

impl Facts {
    /// No attempt was made: only when and why.
    pub fn none(outcome: DeliveryOutcome) -> Self {
        Self {
            attempted_at: Utc::now(),
            elapsed: Duration::ZERO,
            outcome,
            status_code: None,
            error: None,
            response_excerpt: None,
            forensics: Forensics::default(),
        }
    }
}

/// The result of one step, ready to persist.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: i64,
    pub lease_token: i64,
    pub message_id: String,
    pub endpoint_id: Uuid,
    pub attempt: i32,
    pub action: Action,
    /// For `Retry` and `Release`; otherwise when it was decided.
    pub run_at: DateTime<Utc>,
    pub facts: Facts,
    pub disable_endpoint: Option<String>,
    /// Set on a circuit's probe: the circuit its result decided (stored only if the circuit is
    /// still half-open with this probe).
    pub circuit: Option<Circuit>,
    /// Refused because its endpoint is disabled: the dead letter is covered by the endpoint's
    /// `endpoint.disabled` operational event and not reported on its own.
    pub endpoint_disabled: bool,
}

impl Completion {
    /// The completion of `delivery` after `step`, with the attempt's `facts`.
    pub fn new(delivery: &ClaimedDelivery, step: Step, facts: Facts) -> Self {
        let (action, run_at, disable_endpoint) = match step {
            Step::Delivered => (Action::Delivered, facts.attempted_at, None),
            Step::Retry { at } => (Action::Retry, at, None),
            Step::Dead { disable_endpoint } => (Action::Dead, facts.attempted_at, disable_endpoint),
            Step::Release { at } => (Action::Release, at, None),
            Step::Hold => (Action::Hold, facts.attempted_at, None),
        };
        Self {
            id: delivery.id,
            lease_token: delivery.lease_token,
            message_id: delivery.message_id.clone(),
            endpoint_id: delivery.endpoint_id,
            attempt: delivery.attempt,
            action,
            run_at,
            facts,
            disable_endpoint,
            circuit: None,
            endpoint_disabled: false,
        }
    }

    /// A first attempt that delivered, and no circuit's probe: nothing follows from it but the
    /// delete and its history (no retry, dead letter, circuit change or operational event).
    pub fn is_first_delivery(&self) -> bool {
        self.action == Action::Delivered
            && self.attempt == 1
            && self.circuit.is_none()
            && self.disable_endpoint.is_none()
    }

    /// Hands `delivery` back to the queue without spending its attempt, to run again after
    /// `after`, counted as `outcome` (deferred or throttled).
    pub fn release(delivery: &ClaimedDelivery, after: Duration, outcome: DeliveryOutcome) -> Self {
        let facts = Facts::none(outcome);
        Self::new(delivery, Step::Release { at: later(facts.attempted_at, after) }, facts)
    }

    /// This completion, carrying the circuit its probe decided.
    #[must_use]
    pub fn deciding(mut self, circuit: Option<Circuit>) -> Self {
        self.circuit = circuit;
        self
    }

    /// Marks a completion refused because its endpoint is disabled (see
    /// [`Completion::endpoint_disabled`]).
    pub fn of_disabled_endpoint(mut self, disabled: bool) -> Self {
        self.endpoint_disabled = disabled;
        self
    }
}

/// `now + after`, saturating far in the future.
fn later(now: DateTime<Utc>, after: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed() -> ClaimedDelivery {
        ClaimedDelivery {
            id: 7,
            message_id: "msg_1".into(),
            endpoint_id: Uuid::nil(),
            event_type: "e".into(),
            attempt: 2,
            lease_token: 3,
            created_at: Utc::now(),
            run_at: Utc::now(),
            payload_bytes: 2,
            payload: Some("{}".into()),
        }
    }

    #[test]
    fn a_410_disposition_becomes_a_dead_step_that_disables_the_endpoint() {
        let now = Utc::now();
        let step = Step::decided(Disposition::Dead { exhausted: false, disable_endpoint: true }, now);
        let completion = Completion::new(&claimed(), step, Facts::none(DeliveryOutcome::Failed));
        assert_eq!(completion.action, Action::Dead);
        assert_eq!(completion.disable_endpoint.as_deref(), Some(GONE_REASON));
        assert_eq!((completion.id, completion.lease_token, completion.attempt), (7, 3, 2));
    }

    #[test]
    fn a_retry_runs_after_its_wait_and_a_release_gives_the_attempt_back_later() {
        let now = Utc::now();
        let step = Step::decided(Disposition::Retry { after: Duration::from_secs(5) }, now);
        let retry = Completion::new(&claimed(), step, Facts::none(DeliveryOutcome::Retried));
        assert_eq!((retry.action, retry.run_at), (Action::Retry, now + chrono::Duration::seconds(5)));
        let release = Completion::release(&claimed(), Duration::from_secs(60), DeliveryOutcome::Throttled);
        assert_eq!(release.action, Action::Release);
        assert!(release.run_at >= now + chrono::Duration::seconds(60));
        assert_eq!(release.facts.outcome, DeliveryOutcome::Throttled);
    }
}

//! One delivery end to end: endpoint checks → sign → send → classify → completion. The only
//! module that combines the others; it never holds a database transaction.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AttemptSettings;
use crate::engine::completion::{Completion, Facts, Step};
use crate::engine::deliver::{self, Deliverer, OutboundRequest};
use crate::engine::endpoints::Endpoint;
use crate::engine::forensics::Forensics;
use crate::engine::protect::{Admission, Guard, Reservation};
use crate::engine::queue::ClaimedDelivery;
use crate::observe::metrics;
use crate::policy::circuit::{self, Circuit, Event};
use crate::policy::retry::{Disposition, Outcome};
use crate::policy::signing;
use crate::policy::states::{CircuitState, DeliveryOutcome, EndpointState};

/// Everything an attempt needs besides its delivery.
#[derive(Debug)]
pub struct AttemptContext {
    pub deliverer: Deliverer,
    pub settings: AttemptSettings,
    pub guard: Guard,
}

/// The facts of an attempt before classification.
struct Attempted {
    outcome: Outcome,
    label: Option<DeliveryOutcome>,
    status: Option<u16>,
    error: Option<String>,
    excerpt: Option<String>,
    /// Boxed: it is most of the size, and `preflight` returns an `Attempted` as its error.
    forensics: Box<Forensics>,
}

impl Attempted {
    /// What the attempt says about the endpoint's health: `Some(false)` for a 5xx, a 429 or a
    /// transport failure, `Some(true)` for any other answer, `None` when nothing was sent.
    fn health(&self) -> Option<bool> {
        match (&self.outcome, self.label) {
            (_, Some(_)) | (Outcome::Permanent | Outcome::NotSent, _) => None,
            (Outcome::Transport, _) => Some(false),
            (Outcome::Status { code, .. }, _) => Some(!(*code >= 500 || *code == 429)),
        }
    }

    fn not_sent(outcome: Outcome, label: DeliveryOutcome, error: String) -> Self {
        Self { outcome, label: Some(label), status: None, error: Some(error), excerpt: None, forensics: Box::default() }
    }
}

/// Runs one attempt of `delivery` to `endpoint` (`None`: the endpoint does not exist) in the
/// in-flight slot `reserved` for it when it was claimed, and returns what to write back. Never
/// fails: every problem becomes a recorded outcome.
pub async fn run(
    ctx: &AttemptContext,
    delivery: &ClaimedDelivery,
    endpoint: Option<Arc<Endpoint>>,
    reserved: Option<Reservation>,
    abort: &CancellationToken,
) -> Completion {
    let started = Instant::now();
    let attempted_at = Utc::now();
    let (attempted, probe) = match preflight(ctx, delivery, endpoint.as_ref()) {
        Err(early) => {
            let disabled = endpoint.as_ref().is_some_and(|e| e.state == EndpointState::Disabled);
            let probe = endpoint.and_then(|e| probed_by(&e.circuit, delivery.id));
            let completion = finish(ctx, delivery, early, (attempted_at, started.elapsed()), probe);
            return completion.of_disabled_endpoint(disabled);
        }
        Ok(Preflight::Hold) => {
            metrics::delivery_finished(DeliveryOutcome::Deferred);
            return Completion::new(delivery, Step::Hold, Facts::none(DeliveryOutcome::Deferred));
        }
        Ok(Preflight::Send(target)) => {
            let endpoint_id = target.endpoint.id;
            let mut pass = match ctx.guard.admit(&target.endpoint, delivery.id, reserved).await {
                Admission::Go(pass) => pass,
                Admission::Defer { after, outcome, .. } => {
                    metrics::delivery_finished(outcome);
                    return Completion::release(delivery, after, outcome);
                }
            };
            let sent = Instant::now();
            let attempted = tokio::select! {
                attempted = send(ctx, delivery, target) => attempted,
                () = abort.cancelled() => {
                    metrics::delivery_finished(DeliveryOutcome::Deferred);
                    return Completion::release(delivery, Duration::ZERO, DeliveryOutcome::Deferred);
                }
            };
            ctx.guard.record(endpoint_id, attempted.health(), sent.elapsed()).await;
            (attempted, pass.probe.take())
        }
    };
    finish(ctx, delivery, attempted, (attempted_at, started.elapsed()), probe)
}

/// The circuit `delivery` probes, if its endpoint's circuit is half-open with it as the probe.
fn probed_by(circuit: &Circuit, delivery: i64) -> Option<Circuit> {
    (circuit.state == CircuitState::HalfOpen && circuit.probe == Some(delivery)).then(|| circuit.clone())
}

enum Preflight {
    Hold,
    Send(Target),
}

/// Where and how to send, once preflight passed.
struct Target {
    endpoint: Arc<Endpoint>,
    url: url::Url,
    timeout: Option<Duration>,
    secrets: Vec<signing::SigningSecret>,
    headers: Vec<(String, String)>,
    identity: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
}

fn preflight(
    ctx: &AttemptContext,
    delivery: &ClaimedDelivery,
    endpoint: Option<&Arc<Endpoint>>,
) -> Result<Preflight, Attempted> {
    let permanent = |label, error| Err(Attempted::not_sent(Outcome::Permanent, label, error));
    let Some(endpoint) = endpoint else {
        return permanent(DeliveryOutcome::Failed, format!("endpoint {} does not exist", delivery.endpoint_id));
    };
    match endpoint.state {
        EndpointState::Paused => return Ok(Preflight::Hold),
        EndpointState::Disabled => {
            let reason = endpoint.state_reason.as_deref().unwrap_or("by an operator");
            return permanent(DeliveryOutcome::Failed, format!("endpoint {} is disabled: {reason}", endpoint.id));
        }
        EndpointState::Active => {}
    }
    if delivery.payload.is_none() {
        return permanent(
            DeliveryOutcome::Failed,
            format!(
                "payload is {} bytes, over the limit of {} bytes (WEBHOOK_MAX_PAYLOAD_BYTES)",
                delivery.payload_bytes, ctx.settings.max_payload_bytes
            ),
        );
    }
    let url = match &endpoint.url {
        Ok(url) => url,
        Err(reason) => return permanent(DeliveryOutcome::Failed, reason.to_string()),
    };
    if let Err(refusal) = ctx.deliverer.policy().check_url(url) {
        return permanent(DeliveryOutcome::Refused, format!("refused: {refusal}"));
    }
    match (&endpoint.secrets, &endpoint.headers, &endpoint.identity) {
        (Ok(secrets), Ok(headers), Ok(identity)) => Ok(Preflight::Send(Target {
            identity: identity.clone(),
            endpoint: Arc::clone(endpoint),
            url: url.clone(),
            timeout: endpoint.timeout,
            secrets: secrets.clone(),
            headers: headers.clone(),
        })),
        (Err(reason), _, _) | (_, Err(reason), _) | (_, _, Err(reason)) => {
            Err(Attempted::not_sent(Outcome::NotSent, DeliveryOutcome::Retried, format!("not sent: {reason}")))
        }
    }
}

async fn send(ctx: &AttemptContext, delivery: &ClaimedDelivery, target: Target) -> Attempted {
    let body = delivery.payload.clone().unwrap_or_default();
    let timestamp = Utc::now().timestamp();
    let signature = signing::signature_header(&target.secrets, &delivery.message_id, timestamp, body.as_bytes());
    let request = OutboundRequest {
        url: &target.url,
        msg_id: &delivery.message_id,
        timestamp,
        signature: &signature,
        body,
        timeout: target.timeout,
        headers: &target.headers,
        identity: target.identity.as_deref().map(|pem| pem.as_slice()),
    };
    let started = Instant::now();
    let (result, forensics) = ctx.deliverer.send(request).await;
    match result {
        Ok(response) => {
            metrics::attempt_duration(Some(response.status), started.elapsed());
            let success = (200..300).contains(&response.status);
            Attempted {
                outcome: Outcome::Status { code: response.status, retry_after: response.retry_after },
                label: None,
                status: Some(response.status),
                error: (!success).then(|| format!("receiver answered HTTP {}", response.status)),
                excerpt: Some(response.excerpt).filter(|text| !text.is_empty()),
                forensics: Box::new(forensics),
            }
        }
        Err(deliver::Error::Refused(refusal)) => {
            Attempted::not_sent(Outcome::Permanent, DeliveryOutcome::Refused, format!("refused: {refusal}"))
        }
        Err(err) => {
            metrics::attempt_duration(None, started.elapsed());
            Attempted {
                outcome: Outcome::Transport,
                label: None,
                status: None,
                error: Some(err.to_string()),
                excerpt: None,
                forensics: Box::new(forensics),
            }
        }
    }
}

/// Classifies `attempted`, counts and logs it, and builds its completion; a probe's result
/// also decides its circuit.
fn finish(
    ctx: &AttemptContext,
    delivery: &ClaimedDelivery,
    attempted: Attempted,
    (attempted_at, elapsed): (chrono::DateTime<Utc>, Duration),
    probe: Option<Circuit>,
) -> Completion {
    let attempt = u32::try_from(delivery.attempt).unwrap_or(1);
    let retry = &ctx.settings.retry;
    let disposition = retry.classify(&attempted.outcome, attempt, rand::random_range(-1.0..=1.0));
    let now = Utc::now();
    let label = match disposition {
        Disposition::Delivered => {
            metrics::delivery_latency((now - delivery.created_at).to_std().unwrap_or_default());
            DeliveryOutcome::Delivered
        }
        Disposition::Retry { .. } => DeliveryOutcome::Retried,
        Disposition::Dead { exhausted, .. } => match attempted.label {
            Some(label @ (DeliveryOutcome::Refused | DeliveryOutcome::Failed)) => label,
            _ if exhausted => DeliveryOutcome::Dead,
            _ => DeliveryOutcome::Failed,
        },
    };
    metrics::delivery_finished(label);
    let error = match (attempted.error, disposition) {
        (Some(error), Disposition::Dead { exhausted: true, .. }) => {
            Some(format!("{error} (attempt {attempt} of {}, no retries left)", retry.max_attempts()))
        }
        (error, _) => error,
    };
    log(delivery, label, error.as_deref());
    let event = match disposition {
        Disposition::Delivered => Event::ProbeDelivered,
        Disposition::Retry { .. } | Disposition::Dead { .. } => Event::ProbeFailed,
    };
    let circuit = probe.and_then(|circuit| circuit::transition(&circuit, event, now, &ctx.guard.settings().breaker));
    let facts = Facts {
        attempted_at,
        elapsed,
        outcome: label,
        status_code: attempted.status,
        error,
        response_excerpt: attempted.excerpt,
        forensics: *attempted.forensics,
    };
    Completion::new(delivery, Step::decided(disposition, now), facts).deciding(circuit)
}

fn log(delivery: &ClaimedDelivery, label: DeliveryOutcome, error: Option<&str>) {
    let error = error.unwrap_or("");
    let (id, endpoint, attempt) = (delivery.id, delivery.endpoint_id, delivery.attempt);
    match label {
        DeliveryOutcome::Delivered => {
            tracing::debug!(delivery.id = id, endpoint.id = %endpoint, attempt, "Delivered {}", delivery.message_id);
        }
        DeliveryOutcome::Retried => {
            tracing::info!(delivery.id = id, endpoint.id = %endpoint, attempt, "Delivery {id} to endpoint {endpoint} failed, will retry: {error}");
        }
        _ => {
            tracing::warn!(delivery.id = id, endpoint.id = %endpoint, attempt, outcome = label.as_str(), "Delivery {id} to endpoint {endpoint} is now a dead letter: {error}");
        }
    }
}

/// The completion for an attempt that panicked: recorded as a failed attempt, retried per policy.
pub fn panicked(ctx: &AttemptContext, delivery: &ClaimedDelivery, message: &str) -> Completion {
    let attempted =
        Attempted::not_sent(Outcome::NotSent, DeliveryOutcome::Retried, format!("the attempt panicked: {message}"));
    finish(ctx, delivery, attempted, (Utc::now(), Duration::ZERO), None)
}

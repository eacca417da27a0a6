//! Every metric name, its labels and buckets. Labels come from bounded enums only: never an
//! endpoint id, a URL or error text.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::policy::states::{CircuitState, DeliveryOutcome, OperationalEvent};

const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
/// A claim takes about a millisecond on a healthy queue; dead rows it must walk over (vacuum held
/// back by a long transaction) make it slower.
const CLAIM_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Installs the process-wide Prometheus recorder once and returns its handle.
///
/// # Panics
/// If another metrics recorder was installed by someone else first.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("webhook_claim_batch_size".into()), BATCH_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("webhook_claim_duration_seconds".into()), CLAIM_BUCKETS)
                })
                .expect("bucket lists are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            register_zeroes();
            gauge!("webhook_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// Every labelled series exists from the start (at zero), so dashboards and alerts see them and
/// `rate()` has a starting point.
fn register_zeroes() {
    for outcome in DeliveryOutcome::ALL {
        counter!("webhook_deliveries_total", "outcome" => outcome.as_str()).increment(0);
    }
    for to in CircuitState::ALL {
        counter!("webhook_breaker_transitions_total", "to" => to.as_str()).increment(0);
    }
    for event in OperationalEvent::ALL {
        counter!("webhook_operational_events_total", "event" => event.as_str()).increment(0);
    }
    for reason in Deferral::ALL {
        counter!("webhook_protection_deferred_total", "reason" => reason.as_str()).increment(0);
    }
    for operation in ["connect", "claim", "complete", "endpoints", "heartbeat", "stats", "maintenance"] {
        counter!("webhook_database_errors_total", "operation" => operation).increment(0);
    }
    for state in ["ready", "scheduled", "running", "paused"] {
        gauge!("webhook_queue_depth", "state" => state).set(0.0);
    }
    for gauge_name in [
        "webhook_dead_letters",
        "webhook_queue_oldest_ready_age_seconds",
        "webhook_in_flight",
        "webhook_breaker_open_endpoints",
        "webhook_workers_live",
        "webhook_database_oldest_transaction_age_seconds",
    ] {
        gauge!(gauge_name).set(0.0);
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("webhook_deliveries_total", "Delivery steps by outcome");
    describe_histogram!("webhook_attempt_duration_seconds", Unit::Seconds, "HTTP attempt duration by status class");
    describe_histogram!("webhook_delivery_latency_seconds", Unit::Seconds, "Enqueue to delivered");
    describe_gauge!("webhook_queue_depth", "Deliveries in the queue by state (computed by the leader)");
    describe_gauge!("webhook_dead_letters", "Dead letters kept");
    describe_gauge!("webhook_queue_oldest_ready_age_seconds", Unit::Seconds, "Age of the oldest ready delivery");
    describe_gauge!("webhook_in_flight", "Deliveries in flight in this worker");
    describe_histogram!("webhook_claim_batch_size", "Rows per claim");
    describe_histogram!("webhook_claim_duration_seconds", Unit::Seconds, "Duration of one claim statement");
    describe_counter!("webhook_api_requests_total", "Management API requests by route template and status class");
    describe_histogram!("webhook_api_request_duration_seconds", "Management API request duration by route template");
    describe_counter!("webhook_breaker_transitions_total", "Circuit breaker transitions by target state");
    describe_gauge!("webhook_breaker_open_endpoints", "Endpoints whose circuit is open");
    describe_counter!("webhook_operational_events_total", "Operational events emitted by this worker, by event type");
    describe_counter!("webhook_database_errors_total", "Database errors by operation");
    describe_counter!(
        "webhook_protection_deferred_total",
        "Deliveries moved into the future by endpoint protection, by reason (no attempt spent)"
    );
    describe_gauge!("webhook_workers_live", "Workers with a recent heartbeat");
    describe_gauge!(
        "webhook_database_oldest_transaction_age_seconds",
        Unit::Seconds,
        "Age of the oldest transaction holding back vacuum in the database (computed by the leader)"
    );
    describe_gauge!("webhook_build_info", "Build information");
    describe_gauge!("webhook_dispatcher_last_progress_timestamp_seconds", Unit::Seconds, "Last dispatcher loop");
}

/// Why endpoint protection moved deliveries into the future: the `reason` label of
/// `webhook_protection_deferred_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// The endpoint's rate limit: a throttled delivery, or its backlog spread at the limit.
    RateLimit,
    /// The in-flight cap: the backlog of an endpoint slower than its slots, spread at its measured
    /// pace (or a delivery that found no slot).
    Saturation,
    /// An open circuit: a delivery held back, or the backlog moved behind the cool-down.
    Circuit,
}

impl Deferral {
    pub const ALL: [Deferral; 3] = [Deferral::RateLimit, Deferral::Saturation, Deferral::Circuit];

    pub fn as_str(self) -> &'static str {
        match self {
            Deferral::RateLimit => "rate_limit",
            Deferral::Saturation => "saturation",
            Deferral::Circuit => "circuit",
        }
    }
}

/// Counts `deliveries` moved into the future by protection for `reason`.
pub fn protection_deferred(reason: Deferral, deliveries: u64) {
    counter!("webhook_protection_deferred_total", "reason" => reason.as_str()).increment(deliveries);
}

/// Counts one finished delivery step.
pub fn delivery_finished(outcome: DeliveryOutcome) {
    counter!("webhook_deliveries_total", "outcome" => outcome.as_str()).increment(1);
}

/// Records an HTTP attempt's duration; `status` `None` is a transport error.
pub fn attempt_duration(status: Option<u16>, elapsed: Duration) {
    let class = match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None => "error",
    };
    histogram!("webhook_attempt_duration_seconds", "status_class" => class).record(elapsed.as_secs_f64());
}

/// Records enqueue → delivered.
pub fn delivery_latency(elapsed: Duration) {
    histogram!("webhook_delivery_latency_seconds").record(elapsed.as_secs_f64());
}

/// Records one claim's size and how long its statement took.
pub fn claim_batch(size: usize, took: Duration) {
    histogram!("webhook_claim_batch_size").record(size as f64);
    histogram!("webhook_claim_duration_seconds").record(took.as_secs_f64());
}

/// Sets deliveries in flight.
pub fn in_flight(count: usize) {
    gauge!("webhook_in_flight").set(count as f64);
}

/// Counts one management API request by its route template (never an id) and status class, and
/// records its duration.
pub fn api_request(route: &str, status: u16, elapsed: Duration) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!("webhook_api_requests_total", "route" => route.to_owned(), "status_class" => class).increment(1);
    histogram!("webhook_api_request_duration_seconds", "route" => route.to_owned()).record(elapsed.as_secs_f64());
}

/// Counts a database error of `operation` (`connect`, `claim`, `complete`, `endpoints`,
/// `maintenance`…). The worker reports its errors through `Health::database_error`, which calls this.
pub fn database_error(operation: &'static str) {
    counter!("webhook_database_errors_total", "operation" => operation).increment(1);
}

/// Publishes the leader's queue statistics.
pub fn queue_stats(state: &'static str, count: i64) {
    gauge!("webhook_queue_depth", "state" => state).set(count as f64);
}

/// Publishes the dead-letter count.
pub fn dead_letters(count: i64) {
    gauge!("webhook_dead_letters").set(count as f64);
}

/// Publishes the age of the oldest ready delivery.
pub fn oldest_ready_age(age: Duration) {
    gauge!("webhook_queue_oldest_ready_age_seconds").set(age.as_secs_f64());
}

/// Publishes the number of live workers.
pub fn workers_live(count: i64) {
    gauge!("webhook_workers_live").set(count as f64);
}

/// Publishes the age of the oldest transaction of another session that holds back the vacuum of
/// the queue (0 when there is none).
pub fn oldest_transaction_age(age: Duration) {
    gauge!("webhook_database_oldest_transaction_age_seconds").set(age.as_secs_f64());
}

/// Marks dispatcher progress (unix seconds).
pub fn dispatcher_progress(unix_seconds: f64) {
    gauge!("webhook_dispatcher_last_progress_timestamp_seconds").set(unix_seconds);
}

/// Counts a circuit breaker transition (`open`, `half_open`, `closed`).
pub fn breaker_transition(to: CircuitState) {
    counter!("webhook_breaker_transitions_total", "to" => to.as_str()).increment(1);
}

/// Publishes how many endpoints have a circuit that is not closed.
pub fn breaker_open_endpoints(count: i64) {
    gauge!("webhook_breaker_open_endpoints").set(count as f64);
}

/// Counts `count` operational events of type `event` emitted by a statement of this worker.
pub fn operational_event(event: OperationalEvent, count: u64) {
    counter!("webhook_operational_events_total", "event" => event.as_str()).increment(count);
}

/// Counts the operational events a statement of this worker emitted, by the event type names it
/// returned (a name that is no [`OperationalEvent`] is not counted, so the label stays bounded).
pub fn operational_events<S: AsRef<str>>(emitted: &[S]) {
    for name in emitted {
        if let Ok(event) = name.as_ref().parse::<OperationalEvent>() {
            operational_event(event, 1);
        }
    }
}

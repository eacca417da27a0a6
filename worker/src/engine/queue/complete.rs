//! Completing: one statement applies a batch of results, fenced by lease token, and records
//! every attempt in the history. A batch of first attempts that all delivered takes a lean form
//! of it ([`COMPLETE_DELIVERED`]): the common case in a healthy fleet.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::completion::{Action, Completion};
use crate::policy::states::{CircuitState, DeliveryOutcome};

/// The batch as rows: one array per column ([`Columns`]). Both statements bind the same
/// parameters, so they differ only in what they do with the rows.
macro_rules! results {
    () => {
        r#"
WITH r AS (
    SELECT *
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::integer[],
                $7::uuid[], $8::text[], $9::integer[], $10::timestamptz[], $11::integer[], $12::text[],
                $13::text[], $14::text[], $15::text[], $16::timestamptz[], $17::integer[],
                $19::text[], $20::integer[], $21::integer[], $22::integer[], $23::integer[], $24::boolean[],
                $25::boolean[], $26::text[], $27::boolean[])
      AS r(id, lease_token, action, run_at, error, status_code, endpoint_id, message_id, attempt,
           attempted_at, duration_ms, outcome, response_excerpt, disable_reason,
           circuit_state, circuit_open_until, circuit_cooldown_ms,
           remote_ip, dns_ms, connect_ms, tls_ms, first_byte_ms, connection_reused, via_proxy, response_headers,
           endpoint_disabled)
)"#
    };
}

/// Deletes the delivered rows still `running` under the completion's lease token.
macro_rules! delete_delivered {
    () => {
        r#"
delivered AS (
    DELETE FROM webhook.deliveries d USING r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action = 'delivered'
    RETURNING d.id
)"#
    };
}

/// Every attempt goes into the history, stale or not; releases and holds made none.
macro_rules! record_history {
    () => {
        r#"
history AS (
    INSERT INTO webhook.delivery_attempts
        (delivery_id, message_id, endpoint_id, attempt, attempted_at, duration_ms, outcome, status_code,
         error, response_excerpt, worker_id,
         remote_ip, dns_ms, connect_ms, tls_ms, first_byte_ms, connection_reused, via_proxy, response_headers)
    SELECT id, message_id, endpoint_id, attempt, attempted_at, duration_ms, outcome, status_code,
           error, response_excerpt, $18,
           remote_ip::inet, dns_ms, connect_ms, tls_ms, first_byte_ms, connection_reused, via_proxy, response_headers
    FROM r
    WHERE action NOT IN ('release', 'hold')
)"#
    };
}

pub(super) const COMPLETE_BATCH: &str = concat!(
    results!(),
    ",",
    delete_delivered!(),
    r#", retried AS (
    UPDATE webhook.deliveries d
    SET state = 'pending', run_at = r.run_at, last_error = r.error, last_status = r.status_code,
        leased_by = NULL, lease_expires_at = NULL
    FROM r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action = 'retry'
    RETURNING d.id
), released AS (
    UPDATE webhook.deliveries d
    -- A hold parks the row only if the endpoint is still paused by the database's account (the
    -- worker's endpoint cache may be a moment behind a resume).
    SET state = CASE WHEN r.action = 'hold'
                      AND EXISTS (SELECT 1 FROM webhook.endpoints e WHERE e.id = d.endpoint_id AND e.state = 'paused')
                     THEN 'paused' ELSE 'pending' END,
        run_at = r.run_at, attempt = greatest(d.attempt - 1, 0), leased_by = NULL, lease_expires_at = NULL
    FROM r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action IN ('release', 'hold')
    RETURNING d.id
), dead AS (
    DELETE FROM webhook.deliveries d USING r
    WHERE d.id = r.id AND d.lease_token = r.lease_token AND d.state = 'running' AND r.action = 'dead'
    RETURNING d.id, d.message_id, d.endpoint_id, d.event_type, d.payload, d.attempt, d.created_at,
              r.error, r.status_code, r.attempted_at, r.endpoint_disabled
), buried AS (
    INSERT INTO webhook.dead_letters
        (delivery_id, message_id, endpoint_id, event_type, payload, attempts, enqueued_at, last_error, last_status)
    SELECT id, message_id, endpoint_id, event_type, payload, attempt, created_at,
           coalesce(error, 'no error recorded'), status_code
    FROM dead
    ON CONFLICT (delivery_id) DO NOTHING
)"#,
    ",",
    record_history!(),
    r#", disabled AS (
    UPDATE webhook.endpoints e
    SET state = 'disabled', state_reason = r.disable_reason, state_changed_at = now(), updated_at = now()
    FROM r
    WHERE e.id = r.endpoint_id AND r.disable_reason IS NOT NULL AND e.state <> 'disabled'
    RETURNING e.id, r.attempted_at
), probed AS (
    -- A probe's result carries the circuit it decided (policy::circuit): stored only while the
    -- circuit is still half-open with this very probe.
    UPDATE webhook.endpoints e
    SET circuit_state = r.circuit_state, circuit_open_until = r.circuit_open_until,
        circuit_cooldown_ms = r.circuit_cooldown_ms, circuit_probe_delivery = NULL, circuit_changed_at = now()
    FROM r
    WHERE r.circuit_state IS NOT NULL AND e.circuit_probe_delivery = r.id AND e.circuit_state = 'half_open'
    RETURNING e.id, e.circuit_state
), attempt_events AS (
    -- Svix's per-message events: a dead letter (exhausted), a retry after the fourth failed
    -- attempt (failing), and a delivery after it (recovered), each once, by the lease token's fence.
    -- The attempt number is filtered on the batch first: most rows are none of these.
    SELECT 'message.attempt.exhausted' AS event_type,
           x.id, x.message_id, x.endpoint_id, x.attempt, x.attempted_at, x.status_code, x.endpoint_disabled
    FROM dead x
    UNION ALL
    SELECT CASE r.action WHEN 'retry' THEN 'message.attempt.failing' ELSE 'message.attempt.recovered' END,
           r.id, r.message_id, r.endpoint_id, r.attempt, r.attempted_at, r.status_code, r.endpoint_disabled
    FROM r
    WHERE ((r.action = 'retry' AND r.attempt = 4) OR (r.action = 'delivered' AND r.attempt > 4))
      AND (EXISTS (SELECT 1 FROM retried x WHERE x.id = r.id) OR EXISTS (SELECT 1 FROM delivered x WHERE x.id = r.id))
), operational AS (
    -- Operational events (docs/operational-events.md), written by the statement that makes the
    -- fenced transition, so each exists exactly when its transition does. The messages of a
    -- disabled endpoint are covered by `endpoint.disabled`, not reported one by one: not when the
    -- worker refused a delivery because its endpoint is disabled (it may know of a 410 before the
    -- database does), nor when a 410 of this very batch disables it, nor (attempt_event checks)
    -- when it is disabled already.
    SELECT 'endpoint.disabled' AS event_type,
           webhook.operational_event('endpoint.disabled', x.id,
               jsonb_build_object('failSince', x.attempted_at, 'trigger', 'automatic')) AS message_id
    FROM disabled x
    UNION ALL
    SELECT x.event_type,
           webhook.attempt_event(x.event_type, x.endpoint_id, x.message_id, x.id, x.attempt, x.attempted_at, x.status_code)
    FROM attempt_events x
    WHERE NOT x.endpoint_disabled
      AND NOT EXISTS (SELECT 1 FROM r WHERE r.endpoint_id = x.endpoint_id AND r.disable_reason IS NOT NULL)
    UNION ALL
    SELECT 'endpoint.circuit.closed', webhook.operational_event('endpoint.circuit.closed', x.id, '{}')
    FROM probed x
    WHERE x.circuit_state = 'closed'
)
SELECT (SELECT count(*) FROM delivered) + (SELECT count(*) FROM retried)
     + (SELECT count(*) FROM released) + (SELECT count(*) FROM dead) AS applied,
       (SELECT count(*) FROM probed WHERE circuit_state = 'closed') AS closed,
       (SELECT array_agg(id) FROM probed WHERE circuit_state = 'open') AS reopened,
       (SELECT array_agg(event_type) FROM operational WHERE message_id IS NOT NULL) AS operational
"#
);

/// [`COMPLETE_BATCH`] for a batch of first attempts that all delivered: nothing can follow from
/// them but the delete and the history (no retry, dead letter, circuit or operational event).
/// Leaving out the CTEs that would find nothing made a call 4–18 % cheaper (BENCHMARKS.md).
pub(super) const COMPLETE_DELIVERED: &str = concat!(
    results!(),
    ",",
    delete_delivered!(),
    ",",
    record_history!(),
    r#"
SELECT (SELECT count(*) FROM delivered) AS applied, 0::bigint AS closed, NULL::uuid[] AS reopened,
       NULL::text[] AS operational
"#
);

/// What a completion batch did besides the rows themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Completed {
    /// Rows changed (the rest were stale).
    pub applied: i64,
    /// Circuits closed by a successful probe.
    pub closed: i64,
    /// Endpoints whose circuit a failed probe opened again: their backlog must be moved behind
    /// the new cool-down with [`defer_reopened_backlog`].
    pub reopened: Option<Vec<Uuid>>,
    /// The operational events the batch emitted, by event type (`None`: none).
    pub operational: Option<Vec<String>>,
}

/// A batch of completions as the statement's columns: one array per column.
#[derive(Debug, Default)]
struct Columns<'a> {
    ids: Vec<i64>,
    tokens: Vec<i64>,
    actions: Vec<Action>,
    run_ats: Vec<DateTime<Utc>>,
    errors: Vec<Option<&'a str>>,
    statuses: Vec<Option<i32>>,
    endpoints: Vec<Uuid>,
    messages: Vec<&'a str>,
    attempts: Vec<i32>,
    attempted: Vec<DateTime<Utc>>,
    durations: Vec<i32>,
    outcomes: Vec<DeliveryOutcome>,
    excerpts: Vec<Option<&'a str>>,
    disables: Vec<Option<&'a str>>,
    circuit_states: Vec<Option<CircuitState>>,
    circuit_until: Vec<Option<DateTime<Utc>>>,
    circuit_cooldowns: Vec<Option<i32>>,
    endpoint_disabled: Vec<bool>,
    forensics: Forensics<'a>,
}

/// The history's forensics columns (`engine::forensics::Forensics`), one array each.
#[derive(Debug, Default)]
struct Forensics<'a> {
    remote_ips: Vec<Option<String>>,
    dns: Vec<Option<i32>>,
    connect: Vec<Option<i32>>,
    tls: Vec<Option<i32>>,
    first_byte: Vec<Option<i32>>,
    reused: Vec<Option<bool>>,
    via_proxy: Vec<Option<bool>>,
    headers: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a [Completion]) -> Self {
        let mut c = Self::default();
        for done in batch {
            let facts = &done.facts;
            c.ids.push(done.id);
            c.tokens.push(done.lease_token);
            c.actions.push(done.action);
            c.run_ats.push(done.run_at);
            c.errors.push(facts.error.as_deref());
            c.statuses.push(facts.status_code.map(i32::from));
            c.endpoints.push(done.endpoint_id);
            c.messages.push(&done.message_id);
            c.attempts.push(done.attempt);
            c.attempted.push(facts.attempted_at);
            c.durations.push(i32::try_from(facts.elapsed.as_millis()).unwrap_or(i32::MAX));
            c.outcomes.push(facts.outcome);
            c.excerpts.push(facts.response_excerpt.as_deref());
            c.disables.push(done.disable_endpoint.as_deref());
            c.circuit_states.push(done.circuit.as_ref().map(|circuit| circuit.state));
            c.circuit_until.push(done.circuit.as_ref().and_then(|circuit| circuit.open_until));
            c.circuit_cooldowns.push(done.circuit.as_ref().and_then(|circuit| circuit.cooldown_ms));
            c.endpoint_disabled.push(done.endpoint_disabled);
            let (f, seen) = (&mut c.forensics, &facts.forensics);
            f.remote_ips.push(seen.remote_ip.map(|ip| ip.to_string()));
            f.dns.push(seen.dns_ms);
            f.connect.push(seen.connect_ms);
            f.tls.push(seen.tls_ms);
            f.first_byte.push(seen.first_byte_ms);
            f.reused.push(seen.connection_reused);
            f.via_proxy.push(seen.via_proxy);
            f.headers.push(seen.response_headers.as_deref());
        }
        c
    }
}

/// Applies a batch of completions in one statement and records every attempt (not releases) in
/// the history. Each row changes only if it is still `running` under the completion's lease token
/// (the rest were stale: their lease had expired). A probe's completion stores the circuit it
/// decided. The operational events of the transitions the batch makes (endpoint disabled, dead
/// letters, fourth failures and recoveries, circuit closed) are enqueued by the same statement.
///
/// Moving a reopened endpoint's backlog is a separate statement ([`defer_reopened_backlog`]):
/// inside this one, even never executed, it cost 100–200 ms per batch with millions of rows
/// pending (measured by the benchmark's backlog phase), against about 1 ms for the rest.
///
/// # Errors
/// The database error; nothing was applied then, and the caller may retry the same batch.
pub async fn complete_batch(pool: &PgPool, worker_id: &str, batch: &[Completion]) -> Result<Completed, sqlx::Error> {
    let statement = if batch.iter().all(Completion::is_first_delivery) { COMPLETE_DELIVERED } else { COMPLETE_BATCH };
    let c = Columns::of(batch);
    sqlx::query_as(statement)
        .bind(c.ids)
        .bind(c.tokens)
        .bind(c.actions)
        .bind(c.run_ats)
        .bind(c.errors)
        .bind(c.statuses)
        .bind(c.endpoints)
        .bind(c.messages)
        .bind(c.attempts)
        .bind(c.attempted)
        .bind(c.durations)
        .bind(c.outcomes)
        .bind(c.excerpts)
        .bind(c.disables)
        .bind(c.circuit_states)
        .bind(c.circuit_until)
        .bind(c.circuit_cooldowns)
        .bind(worker_id)
        .bind(c.forensics.remote_ips)
        .bind(c.forensics.dns)
        .bind(c.forensics.connect)
        .bind(c.forensics.tls)
        .bind(c.forensics.first_byte)
        .bind(c.forensics.reused)
        .bind(c.forensics.via_proxy)
        .bind(c.forensics.headers)
        .bind(c.endpoint_disabled)
        .fetch_one(pool)
        .await
}

pub(super) const DEFER_REOPENED_BACKLOG: &str = r#"
UPDATE webhook.deliveries d
SET run_at = e.circuit_open_until
FROM webhook.endpoints e
WHERE e.id = ANY ($1::uuid[]) AND e.circuit_state = 'open'
  AND d.endpoint_id = e.id AND d.state = 'pending' AND d.run_at < e.circuit_open_until
"#;

/// Moves the waiting backlog of `endpoints` whose circuit is open behind their cool-down, out of
/// the claim's way (no attempt is spent). Called after a completion batch reopened circuits.
/// Returns the rows moved.
///
/// # Errors
/// The database error.
pub async fn defer_reopened_backlog(pool: &PgPool, endpoints: &[Uuid]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(DEFER_REOPENED_BACKLOG).bind(endpoints).execute(pool).await?.rows_affected())
}

//! The circuit breaker's storage: the only code that reads or writes an endpoint's circuit
//! (besides the claim, which skips open circuits, and the completion statement, which stores a
//! probe's decision). Every change here was decided by [`crate::policy::circuit::transition`]
//! and is stored fenced by the state it was decided from, so two workers deciding at once change
//! the row once. Transitions are counted and logged here.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::observe::metrics;
use crate::policy::circuit::{BreakerSettings, Circuit, Event, transition};
use crate::policy::states::{CircuitState, OperationalEvent};

pub(crate) const LOAD_CIRCUIT: &str = r#"
SELECT circuit_state, circuit_open_until, circuit_cooldown_ms, circuit_probe_delivery
FROM webhook.endpoints WHERE id = $1
"#;

/// The endpoint's circuit as the database has it now (`None`: no such endpoint).
///
/// # Errors
/// The database error.
pub async fn load(pool: &PgPool, endpoint: Uuid) -> Result<Option<Circuit>, sqlx::Error> {
    sqlx::query_as(LOAD_CIRCUIT).bind(endpoint).fetch_optional(pool).await
}

pub(crate) const STORE_TRANSITIONS: &str = r#"
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::timestamptz[], $6::integer[], $7::bigint[])
      AS r(id, from_state, from_probe, state, open_until, cooldown_ms, probe)
), changed AS (
    UPDATE webhook.endpoints e
    SET circuit_state = r.state, circuit_open_until = r.open_until, circuit_cooldown_ms = r.cooldown_ms,
        circuit_probe_delivery = r.probe, circuit_changed_at = now()
    FROM r
    WHERE e.id = r.id AND e.circuit_state = r.from_state AND e.circuit_probe_delivery IS NOT DISTINCT FROM r.from_probe
    RETURNING e.id, e.circuit_state, e.circuit_open_until, e.circuit_probe_delivery, r.from_state
), probe_due AS (
    -- A half-open circuit's probe is made due now.
    UPDATE webhook.deliveries d SET run_at = now()
    FROM changed c
    WHERE c.circuit_state = 'half_open' AND d.id = c.circuit_probe_delivery AND d.state = 'pending'
), deferred AS (
    -- An opened circuit's waiting backlog moves behind the cool-down, out of the claim's way.
    UPDATE webhook.deliveries d SET run_at = c.circuit_open_until
    FROM changed c
    WHERE c.circuit_state = 'open' AND d.endpoint_id = c.id AND d.state = 'pending' AND d.run_at < c.circuit_open_until
    RETURNING d.id
), operational AS (
    -- The operational event of a circuit that opened (docs/operational-events.md), in the
    -- statement that stored the fenced transition: once fleet-wide. A failed probe's reopening
    -- (half-open → open) is not a new one: the circuit never closed.
    SELECT webhook.operational_event('endpoint.circuit.opened', c.id,
               jsonb_build_object('openUntil', c.circuit_open_until)) AS message_id
    FROM changed c
    WHERE c.from_state = 'closed' AND c.circuit_state = 'open'
)
SELECT circuit_state, (SELECT count(*) FROM deferred) AS deferred,
       (SELECT count(message_id) FROM operational) AS operational
FROM changed
"#;

/// Stores `(endpoint, from, to)` transitions, each only if the circuit is still `from`; returns
/// the states actually stored (one per transition that applied).
async fn store<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    changes: &[(Uuid, Circuit, Circuit)],
) -> Result<Vec<CircuitState>, sqlx::Error> {
    let ids: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
    let from_states: Vec<CircuitState> = changes.iter().map(|c| c.1.state).collect();
    let from_probes: Vec<Option<i64>> = changes.iter().map(|c| c.1.probe).collect();
    let states: Vec<CircuitState> = changes.iter().map(|c| c.2.state).collect();
    let until: Vec<Option<DateTime<Utc>>> = changes.iter().map(|c| c.2.open_until).collect();
    let cooldowns: Vec<Option<i32>> = changes.iter().map(|c| c.2.cooldown_ms).collect();
    let probes: Vec<Option<i64>> = changes.iter().map(|c| c.2.probe).collect();
    let stored: Vec<(CircuitState, i64, i64)> = sqlx::query_as(STORE_TRANSITIONS)
        .bind(ids)
        .bind(from_states)
        .bind(from_probes)
        .bind(states)
        .bind(until)
        .bind(cooldowns)
        .bind(probes)
        .fetch_all(executor)
        .await?;
    // The statement's counts of backlog moved behind cool-downs and of events emitted, repeated
    // on every row.
    let (deferred, opened) = stored.first().map_or((0, 0), |(_, deferred, opened)| (*deferred, *opened));
    metrics::protection_deferred(metrics::Deferral::Circuit, u64::try_from(deferred).unwrap_or(0));
    metrics::operational_event(OperationalEvent::CircuitOpened, u64::try_from(opened).unwrap_or(0));
    for (state, ..) in &stored {
        metrics::breaker_transition(*state);
    }
    Ok(stored.into_iter().map(|(state, ..)| state).collect())
}

/// Opens the closed circuit of `endpoint` for the whole fleet after this worker's detector
/// tripped, moving its waiting backlog behind the cool-down. Returns whether this call opened it
/// (another worker may have been first).
///
/// # Errors
/// The database error.
pub async fn trip(pool: &PgPool, endpoint: Uuid, settings: &BreakerSettings) -> Result<bool, sqlx::Error> {
    let Some(open) = transition(&Circuit::CLOSED, Event::Tripped, Utc::now(), settings) else { return Ok(false) };
    let opened = !store(pool, &[(endpoint, Circuit::CLOSED, open)]).await?.is_empty();
    if opened {
        tracing::warn!(endpoint.id = %endpoint, "Circuit of endpoint {endpoint} opened for {:?}: it keeps failing", settings.cooldown);
    }
    Ok(opened)
}

/// One circuit that is not closed, as the leader sees it.
#[derive(Debug, sqlx::FromRow)]
struct NotClosed {
    endpoint_id: Uuid,
    #[sqlx(flatten)]
    circuit: Circuit,
    probe_exists: bool,
    candidate: Option<i64>,
}

pub(crate) const NOT_CLOSED: &str = r#"
SELECT e.id AS endpoint_id, e.circuit_state, e.circuit_open_until, e.circuit_cooldown_ms, e.circuit_probe_delivery,
       EXISTS (SELECT 1 FROM webhook.deliveries p WHERE p.id = e.circuit_probe_delivery) AS probe_exists,
       -- The probe: of the oldest waiting deliveries, one that has spent the fewest attempts, so
       -- that a long outage spends one attempt of many deliveries, not every attempt of the oldest
       -- (a reopened circuit moves its whole backlog to one time, and the oldest stays oldest).
       (SELECT w.id FROM (SELECT d.id, d.attempt, d.run_at FROM webhook.deliveries d
                          WHERE d.endpoint_id = e.id AND d.state = 'pending'
                          ORDER BY d.run_at, d.id LIMIT 100) w
        ORDER BY w.attempt, w.run_at, w.id LIMIT 1) AS candidate
FROM webhook.endpoints e
WHERE e.circuit_state <> 'closed'
"#;

/// Gives every open circuit whose cool-down has passed (and every half-open circuit whose probe
/// vanished) one probe: of the endpoint's 100 oldest waiting deliveries, the one that spent the
/// fewest attempts, made due now. Circuits with nothing waiting stay as they are until something
/// arrives. Run by the leader; returns how many circuits went half-open.
///
/// # Errors
/// The database error.
pub async fn pick_probes(
    connection: &mut sqlx::PgConnection,
    settings: &BreakerSettings,
) -> Result<usize, sqlx::Error> {
    let rows: Vec<NotClosed> = sqlx::query_as(NOT_CLOSED).fetch_all(&mut *connection).await?;
    let now = Utc::now();
    let changes: Vec<(Uuid, Circuit, Circuit)> = rows
        .into_iter()
        .filter_map(|row| {
            let event = Event::ProbeDue { candidate: row.candidate, probe_exists: row.probe_exists };
            transition(&row.circuit, event, now, settings).map(|next| (row.endpoint_id, row.circuit, next))
        })
        .collect();
    if changes.is_empty() {
        return Ok(0);
    }
    Ok(store(&mut *connection, &changes).await?.len())
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] =
    &[("load_circuit", LOAD_CIRCUIT), ("store_transitions", STORE_TRANSITIONS), ("not_closed", NOT_CLOSED)];

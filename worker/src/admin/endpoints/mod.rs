//! Operator changes to endpoints: create, update, state changes, secret rotation, headers,
//! deletion, and the health view of `endpoint show`. Every statement names the endpoint by id
//! and reports an unknown id as [`Error::NotFound`].

pub mod read;
mod sealed;
mod sql;
pub mod tenant;
mod validate;

use self::sealed::{add_secret, replace_headers, replace_identity};
pub use self::sql::STATEMENTS;
use self::sql::*;
use self::validate::{check_event_types, check_uid, check_url, parse_header};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::policy::crypto::KeyRing;
use crate::policy::signing::SigningSecret;
use crate::policy::states::{EndpointState, OperationalEvent};

/// Why an endpoint change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no endpoint with id {0}")]
    NotFound(Uuid),
    #[error("invalid endpoint URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Refused(#[from] crate::policy::address::Refusal),
    #[error("invalid event type {0:?}: use a non-empty name without spaces")]
    EventType(String),
    #[error("invalid header {0:?}: use `Name: value` with a token name and a printable value")]
    Header(String),
    #[error("the client certificate and key are not valid PEM: {0}")]
    ClientIdentity(String),
    #[error("header `{0}` is set by the worker and cannot be overridden")]
    ReservedHeader(String),
    #[error("endpoint {id} is {state}; {action} needs it {needed}")]
    State { id: Uuid, state: EndpointState, action: &'static str, needed: &'static str },
    #[error("endpoint {id} still has {backlog} deliveries in the queue; pass --force to delete them too")]
    Backlog { id: Uuid, backlog: i64 },
    #[error("an endpoint with uid `{0}` exists already in this application")]
    UidTaken(String),
    #[error("invalid uid {0:?}: use 1 to 256 of a-z A-Z 0-9 . _ -, not an id")]
    Uid(String),
    #[error("the stored signing secret of endpoint {0} is unusable")]
    UnusableSecret(Uuid),
    #[error(transparent)]
    Crypto(#[from] crate::policy::crypto::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Optional endpoint settings; `None` leaves a setting as it is (or at its default on create).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// Requests per second across the fleet; `Some(None)` removes it (the application's default
    /// applies again).
    pub rate_limit_per_second: Option<Option<i32>>,
    pub rate_limit_burst: Option<i32>,
    pub max_in_flight: Option<i32>,
    pub timeout_ms: Option<i32>,
    pub ordered: Option<bool>,
    /// `Name: value` lines; replaces all custom headers when given.
    pub headers: Option<Vec<String>>,
    /// PEM certificate chain and private key to present (mTLS); `Some(None)` removes it.
    pub client_identity: Option<Option<Vec<u8>>>,
    /// On create: the application it belongs to (default: the default application). On update:
    /// a fence — the endpoint must belong to it.
    pub application: Option<Uuid>,
    /// The caller's own id for the endpoint, unique within its application; `Some(None)` clears it.
    pub uid: Option<Option<String>>,
    /// Free-form string pairs shown back by the API.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Tells the workers (on commit) that endpoint `id` changed, so they drop it from their cache
/// at once instead of after its few seconds.
async fn changed(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: Uuid) -> Result<(), Error> {
    sqlx::query(NOTIFY_CHANGED).bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// A unique violation on insert or update can only be the uid.
fn uid_taken(err: sqlx::Error, changes: &Changes) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::UidTaken(changes.uid.clone().flatten().unwrap_or_default())
        }
        _ => err.into(),
    }
}

/// Creates an endpoint with its sealed secret and headers in one transaction.
///
/// # Errors
/// [`Error`] for a bad URL, event type or header, or a database failure.
pub async fn create(
    pool: &PgPool,
    key_ring: &KeyRing,
    changes: &Changes,
    secret: &SigningSecret,
) -> Result<Uuid, Error> {
    let url = check_url(changes.url.as_deref().unwrap_or_default())?;
    let event_types = changes.event_types.clone().unwrap_or_default();
    check_event_types(&event_types)?;
    check_uid(changes)?;
    let headers = changes
        .headers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    sqlx::query(INSERT_ENDPOINT)
        .bind(id)
        .bind(&url)
        .bind(&event_types)
        .bind(changes.description.as_deref().unwrap_or(""))
        .bind(changes.rate_limit_per_second.flatten())
        .bind(changes.rate_limit_burst)
        .bind(changes.max_in_flight)
        .bind(changes.timeout_ms)
        .bind(changes.ordered.unwrap_or(false))
        .bind(changes.application)
        .bind(changes.uid.clone().flatten())
        .bind(changes.metadata.as_ref().map(sqlx::types::Json))
        .execute(&mut *tx)
        .await
        .map_err(|err| uid_taken(err, changes))?;
    add_secret(&mut tx, key_ring, id, secret).await?;
    replace_headers(&mut tx, key_ring, id, &headers).await?;
    if let Some(identity) = &changes.client_identity {
        replace_identity(&mut tx, key_ring, id, identity.as_deref()).await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// Applies `changes` to endpoint `id`; `key_ring` is needed only when headers or the client
/// certificate change.
///
/// # Errors
/// [`Error::NotFound`], a validation error, or a database failure.
pub async fn update(pool: &PgPool, key_ring: Option<&KeyRing>, id: Uuid, changes: &Changes) -> Result<(), Error> {
    let url = changes.url.as_deref().map(check_url).transpose()?;
    if let Some(types) = &changes.event_types {
        check_event_types(types)?;
    }
    check_uid(changes)?;
    let headers = changes
        .headers
        .as_ref()
        .map(|h| h.iter().map(|l| parse_header(l)).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(UPDATE_ENDPOINT)
        .bind(id)
        .bind(url)
        .bind(&changes.event_types)
        .bind(&changes.description)
        .bind(changes.rate_limit_per_second.flatten())
        .bind(changes.rate_limit_burst)
        .bind(changes.max_in_flight)
        .bind(changes.timeout_ms)
        .bind(changes.ordered)
        .bind(changes.uid.is_some())
        .bind(changes.uid.clone().flatten())
        .bind(changes.metadata.as_ref().map(sqlx::types::Json))
        .bind(changes.application)
        .bind(changes.rate_limit_per_second.is_some())
        .execute(&mut *tx)
        .await
        .map_err(|err| uid_taken(err, changes))?
        .rows_affected();
    if updated == 0 {
        return Err(Error::NotFound(id));
    }
    if let Some(headers) = headers {
        let key_ring = key_ring.ok_or(crate::policy::crypto::Error::EmptyKeyRing)?;
        replace_headers(&mut tx, key_ring, id, &headers).await?;
    }
    if let Some(identity) = &changes.client_identity {
        let key_ring = key_ring.ok_or(crate::policy::crypto::Error::EmptyKeyRing)?;
        replace_identity(&mut tx, key_ring, id, identity.as_deref()).await?;
    }
    changed(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// A state change an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    Pause,
    Resume,
    Disable,
    Enable,
}

/// Changes the endpoint's state, recording `reason`. Pausing parks its pending deliveries
/// (they keep their schedule and spend no attempts); resuming returns them to the queue.
/// Disabling and enabling emit `endpoint.disabled` (trigger manual) and `endpoint.enabled`
/// (docs/operational-events.md) in the same transaction. Returns how many deliveries were parked
/// or returned.
///
/// # Errors
/// [`Error::NotFound`], [`Error::State`] when the change does not apply, or a database failure.
pub async fn change_state(pool: &PgPool, id: Uuid, change: StateChange, reason: Option<&str>) -> Result<u64, Error> {
    use EndpointState::{Active, Disabled, Paused};
    // (verb, the states it applies to, the state it sets, what the refusal says is needed)
    let (action, from, to, needed): (_, &[EndpointState], _, _) = match change {
        StateChange::Pause => ("pausing", &[Active], Paused, "active"),
        StateChange::Resume => ("resuming", &[Paused], Active, "paused"),
        StateChange::Disable => ("disabling", &[Active, Paused], Disabled, "not disabled"),
        StateChange::Enable => ("enabling", &[Disabled], Active, "disabled"),
    };
    let mut tx = pool.begin().await?;
    let state: Option<EndpointState> = sqlx::query_scalar(LOCK_STATE).bind(id).fetch_optional(&mut *tx).await?;
    let state = state.ok_or(Error::NotFound(id))?;
    if !from.contains(&state) {
        return Err(Error::State { id, state, action, needed });
    }
    let default_reason = match change {
        StateChange::Pause => Some("paused by an operator"),
        StateChange::Disable => Some("disabled by an operator"),
        StateChange::Resume | StateChange::Enable => None,
    };
    // Svix's operational events for an operator's change: `endpoint.disabled` (trigger manual)
    // and `endpoint.enabled`; pausing and resuming have none.
    let event = match change {
        StateChange::Disable => Some((OperationalEvent::EndpointDisabled, serde_json::json!({ "trigger": "manual" }))),
        StateChange::Enable => Some((OperationalEvent::EndpointEnabled, serde_json::json!({}))),
        StateChange::Pause | StateChange::Resume => None,
    };
    let (event, data) = event.unzip();
    sqlx::query(SET_STATE)
        .bind(id)
        .bind(to)
        .bind(reason.or(default_reason))
        .bind(event)
        .bind(data)
        .execute(&mut *tx)
        .await?;
    let moved = match change {
        StateChange::Pause => sqlx::query(PARK_DELIVERIES).bind(id).execute(&mut *tx).await?.rows_affected(),
        // A disabled endpoint's parked deliveries return to the queue too, where the workers turn
        // them into dead letters (replayable once it is enabled again).
        StateChange::Resume | StateChange::Disable => {
            sqlx::query(UNPARK_DELIVERIES).bind(id).execute(&mut *tx).await?.rows_affected()
        }
        StateChange::Enable => 0,
    };
    changed(&mut tx, id).await?;
    tx.commit().await?;
    Ok(moved)
}

/// Deletes the endpoint and its secrets and headers. With `force`, its queued deliveries too;
/// without, an endpoint with a backlog is refused. Dead letters and history are kept.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Backlog`] or a database failure.
pub async fn delete(pool: &PgPool, id: Uuid, force: bool) -> Result<i64, Error> {
    let mut tx = pool.begin().await?;
    let exists: Option<Uuid> = sqlx::query_scalar(LOCK_ENDPOINT).bind(id).fetch_optional(&mut *tx).await?;
    exists.ok_or(Error::NotFound(id))?;
    let backlog: i64 = sqlx::query_scalar(BACKLOG).bind(id).fetch_one(&mut *tx).await?;
    if backlog > 0 && !force {
        return Err(Error::Backlog { id, backlog });
    }
    sqlx::query(DELETE_DELIVERIES).bind(id).execute(&mut *tx).await?;
    sqlx::query(DELETE_ENDPOINT).bind(id).execute(&mut *tx).await?;
    changed(&mut tx, id).await?;
    tx.commit().await?;
    Ok(backlog)
}

/// Adds a new signing secret; the current ones keep signing until `now + grace` and are then
/// removed by the leader. Returns when the old secrets expire.
///
/// # Errors
/// [`Error::NotFound`] or a database failure.
pub async fn rotate_secret(
    pool: &PgPool,
    key_ring: &KeyRing,
    id: Uuid,
    secret: &SigningSecret,
    grace: std::time::Duration,
) -> Result<DateTime<Utc>, Error> {
    let mut tx = pool.begin().await?;
    let exists: Option<Uuid> = sqlx::query_scalar(LOCK_ENDPOINT).bind(id).fetch_optional(&mut *tx).await?;
    exists.ok_or(Error::NotFound(id))?;
    let expires: DateTime<Utc> = sqlx::query_scalar(EXPIRY).bind(grace.as_secs_f64()).fetch_one(&mut *tx).await?;
    sqlx::query(EXPIRE_SECRETS).bind(id).bind(expires).execute(&mut *tx).await?;
    add_secret(&mut tx, key_ring, id, secret).await?;
    changed(&mut tx, id).await?;
    tx.commit().await?;
    Ok(expires)
}

//! Operator changes to endpoints: create, update, state changes, secret rotation, headers,
//! deletion, and the health view of `endpoint show`. Every statement names the endpoint by id
//! and reports an unknown id as [`Error::NotFound`].

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use url::Url;
use uuid::Uuid;

use crate::crypto::KeyRing;
use crate::netguard::NetPolicy;
use crate::signing::SigningSecret;

/// Why an endpoint change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no endpoint with id {0}")]
    NotFound(Uuid),
    #[error("invalid endpoint URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Refused(#[from] crate::netguard::Refusal),
    #[error("invalid event type {0:?}: use a non-empty name without spaces")]
    EventType(String),
    #[error("invalid header {0:?}: use `Name: value` with a token name and a printable value")]
    Header(String),
    #[error("the client certificate and key are not valid PEM: {0}")]
    ClientIdentity(String),
    #[error("header `{0}` is set by the worker and cannot be overridden")]
    ReservedHeader(String),
    #[error("endpoint {id} is {state}; {action} needs it {needed}")]
    State { id: Uuid, state: String, action: &'static str, needed: &'static str },
    #[error("endpoint {id} still has {backlog} deliveries in the queue; pass --force to delete them too")]
    Backlog { id: Uuid, backlog: i64 },
    #[error(transparent)]
    Crypto(#[from] crate::crypto::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Headers the worker owns.
const RESERVED_HEADERS: &[&str] =
    &["content-type", "content-length", "host", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"];

/// Optional endpoint settings; `None` leaves a setting as it is (or at its default on create).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub rate_limit_per_second: Option<i32>,
    pub rate_limit_burst: Option<i32>,
    pub max_in_flight: Option<i32>,
    pub timeout_ms: Option<i32>,
    pub ordered: Option<bool>,
    /// `Name: value` lines; replaces all custom headers when given.
    pub headers: Option<Vec<String>>,
    /// PEM certificate chain and private key to present (mTLS); `Some(None)` removes it.
    pub client_identity: Option<Option<Vec<u8>>>,
}

fn check_url(text: &str) -> Result<String, Error> {
    let url = Url::parse(text).map_err(|err| Error::Url { url: text.to_owned(), reason: err.to_string() })?;
    // Registration checks the form only (scheme, credentials): whether an address may be reached
    // is the delivering fleet's decision (its allow-list), checked at every delivery.
    NetPolicy::new(vec!["0.0.0.0/0".parse().expect("CIDR"), "::/0".parse().expect("CIDR")], false).check_url(&url)?;
    Ok(url.to_string())
}

fn check_event_types(types: &[String]) -> Result<(), Error> {
    match types.iter().find(|t| t.is_empty() || t.chars().any(char::is_whitespace)) {
        Some(bad) => Err(Error::EventType(bad.clone())),
        None => Ok(()),
    }
}

fn parse_header(line: &str) -> Result<(String, String), Error> {
    let (name, value) = line.split_once(':').ok_or_else(|| Error::Header(line.to_owned()))?;
    let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c);
    if name.is_empty() || !name.chars().all(token) || value.chars().any(|c| c.is_control()) {
        return Err(Error::Header(line.to_owned()));
    }
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(Error::ReservedHeader(name));
    }
    Ok((name, value))
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
    let headers = changes
        .headers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook.endpoints (id, url, event_types, description, rate_limit_per_second, rate_limit_burst, \
         max_in_flight, timeout_ms, ordered) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(&url)
    .bind(&event_types)
    .bind(changes.description.as_deref().unwrap_or(""))
    .bind(changes.rate_limit_per_second)
    .bind(changes.rate_limit_burst)
    .bind(changes.max_in_flight)
    .bind(changes.timeout_ms)
    .bind(changes.ordered.unwrap_or(false))
    .execute(&mut *tx)
    .await?;
    add_secret(&mut tx, key_ring, id, secret).await?;
    replace_headers(&mut tx, key_ring, id, &headers).await?;
    if let Some(identity) = &changes.client_identity {
        replace_identity(&mut tx, key_ring, id, identity.as_deref()).await?;
    }
    tx.commit().await?;
    Ok(id)
}

async fn replace_identity(
    tx: &mut Transaction<'_, Postgres>,
    key_ring: &KeyRing,
    id: Uuid,
    pem: Option<&[u8]>,
) -> Result<(), Error> {
    sqlx::query("DELETE FROM webhook.endpoint_client_identities WHERE endpoint_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let Some(pem) = pem else { return Ok(()) };
    crate::deliver::install_crypto_provider();
    reqwest::Identity::from_pem(pem).map_err(|err| {
        Error::ClientIdentity(std::error::Error::source(&err).map_or_else(|| err.to_string(), ToString::to_string))
    })?;
    insert_sealed(tx, key_ring, id, pem, INSERT_IDENTITY, None).await
}

const INSERT_SECRET: &str =
    "INSERT INTO webhook.endpoint_secrets (endpoint_id, key_id, ciphertext) VALUES ($1, $2, $3)";
const INSERT_HEADER: &str =
    "INSERT INTO webhook.endpoint_headers (endpoint_id, key_id, ciphertext, name) VALUES ($1, $2, $3, $4)";
const INSERT_IDENTITY: &str =
    "INSERT INTO webhook.endpoint_client_identities (endpoint_id, key_id, ciphertext) VALUES ($1, $2, $3)";

/// Seals `plaintext` for endpoint `id` and inserts it with `sql` (endpoint, key id, ciphertext and,
/// for headers, the name).
async fn insert_sealed(
    tx: &mut Transaction<'_, Postgres>,
    key_ring: &KeyRing,
    id: Uuid,
    plaintext: &[u8],
    sql: &'static str,
    name: Option<&str>,
) -> Result<(), Error> {
    let sealed = key_ring.seal(plaintext, id.as_bytes())?;
    let mut query = sqlx::query(sql).bind(id).bind(&sealed.key_id).bind(&sealed.ciphertext);
    if let Some(name) = name {
        query = query.bind(name);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

async fn add_secret(
    tx: &mut Transaction<'_, Postgres>,
    key_ring: &KeyRing,
    id: Uuid,
    secret: &SigningSecret,
) -> Result<(), Error> {
    insert_sealed(tx, key_ring, id, secret.expose_bytes(), INSERT_SECRET, None).await
}

async fn replace_headers(
    tx: &mut Transaction<'_, Postgres>,
    key_ring: &KeyRing,
    id: Uuid,
    headers: &[(String, String)],
) -> Result<(), Error> {
    sqlx::query("DELETE FROM webhook.endpoint_headers WHERE endpoint_id = $1").bind(id).execute(&mut **tx).await?;
    for (name, value) in headers {
        insert_sealed(tx, key_ring, id, value.as_bytes(), INSERT_HEADER, Some(name)).await?;
    }
    Ok(())
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
    let headers = changes
        .headers
        .as_ref()
        .map(|h| h.iter().map(|l| parse_header(l)).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE webhook.endpoints SET url = coalesce($2, url), event_types = coalesce($3, event_types), \
         description = coalesce($4, description), rate_limit_per_second = coalesce($5, rate_limit_per_second), \
         rate_limit_burst = coalesce($6, rate_limit_burst), max_in_flight = coalesce($7, max_in_flight), \
         timeout_ms = coalesce($8, timeout_ms), ordered = coalesce($9, ordered), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(url)
    .bind(&changes.event_types)
    .bind(&changes.description)
    .bind(changes.rate_limit_per_second)
    .bind(changes.rate_limit_burst)
    .bind(changes.max_in_flight)
    .bind(changes.timeout_ms)
    .bind(changes.ordered)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(Error::NotFound(id));
    }
    if let Some(headers) = headers {
        let key_ring = key_ring.ok_or(crate::crypto::Error::EmptyKeyRing)?;
        replace_headers(&mut tx, key_ring, id, &headers).await?;
    }
    if let Some(identity) = &changes.client_identity {
        let key_ring = key_ring.ok_or(crate::crypto::Error::EmptyKeyRing)?;
        replace_identity(&mut tx, key_ring, id, identity.as_deref()).await?;
    }
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
/// Returns how many deliveries were parked or returned.
///
/// # Errors
/// [`Error::NotFound`], [`Error::State`] when the change does not apply, or a database failure.
pub async fn change_state(pool: &PgPool, id: Uuid, change: StateChange, reason: Option<&str>) -> Result<u64, Error> {
    let (action, from, to, needed) = match change {
        StateChange::Pause => ("pausing", "active", "paused", "active"),
        StateChange::Resume => ("resuming", "paused", "active", "paused"),
        StateChange::Disable => ("disabling", "", "disabled", "not disabled"),
        StateChange::Enable => ("enabling", "disabled", "active", "disabled"),
    };
    let mut tx = pool.begin().await?;
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM webhook.endpoints WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let state = state.ok_or(Error::NotFound(id))?;
    let applies = if from.is_empty() { state != to } else { state == from };
    if !applies {
        return Err(Error::State { id, state, action, needed });
    }
    sqlx::query("UPDATE webhook.endpoints SET state = $2, state_reason = $3, state_changed_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(to)
        .bind(reason.or(match change {
            StateChange::Pause => Some("paused by an operator"),
            StateChange::Disable => Some("disabled by an operator"),
            StateChange::Resume | StateChange::Enable => None,
        }))
        .execute(&mut *tx)
        .await?;
    let moved = match change {
        StateChange::Pause => {
            sqlx::query("UPDATE webhook.deliveries SET state = 'paused' WHERE endpoint_id = $1 AND state = 'pending'")
        }
        StateChange::Resume => {
            sqlx::query("UPDATE webhook.deliveries SET state = 'pending' WHERE endpoint_id = $1 AND state = 'paused'")
        }
        // A disabled endpoint's parked deliveries return to the queue, where the workers turn them
        // into dead letters (replayable once it is enabled again).
        StateChange::Disable => {
            sqlx::query("UPDATE webhook.deliveries SET state = 'pending' WHERE endpoint_id = $1 AND state = 'paused'")
        }
        StateChange::Enable => sqlx::query("SELECT $1::uuid WHERE false"),
    }
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
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
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM webhook.endpoints WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    exists.ok_or(Error::NotFound(id))?;
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook.deliveries WHERE endpoint_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if backlog > 0 && !force {
        return Err(Error::Backlog { id, backlog });
    }
    sqlx::query("DELETE FROM webhook.deliveries WHERE endpoint_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM webhook.endpoints WHERE id = $1").bind(id).execute(&mut *tx).await?;
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
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM webhook.endpoints WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    exists.ok_or(Error::NotFound(id))?;
    let expires: DateTime<Utc> = sqlx::query_scalar("SELECT now() + make_interval(secs => $1)")
        .bind(grace.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE webhook.endpoint_secrets SET expires_at = least(coalesce(expires_at, $2), $2) WHERE endpoint_id = $1",
    )
    .bind(id)
    .bind(expires)
    .execute(&mut *tx)
    .await?;
    add_secret(&mut tx, key_ring, id, secret).await?;
    tx.commit().await?;
    Ok(expires)
}

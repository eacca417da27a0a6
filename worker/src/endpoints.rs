//! Endpoints: their SQL, and the short-lived cache through which workers read them.
//!
//! Workers look endpoints up for every claimed batch; the cache keeps each one (URL parsed,
//! secrets decrypted) for a few seconds so that a busy worker reads the endpoints table a few
//! times per second rather than once per delivery. Changes (pause, disable, new secret) reach
//! every worker within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::time::Instant;
use url::Url;
use uuid::Uuid;

use crate::crypto::{KeyRing, Sealed};
use crate::signing::SigningSecret;

/// An endpoint as the worker uses it.
#[derive(Debug)]
pub struct Endpoint {
    pub id: Uuid,
    /// The parsed URL, or why it does not parse.
    pub url: Result<Url, String>,
    pub state: String,
    pub state_reason: Option<String>,
    pub timeout: Option<Duration>,
    /// Live signing secrets, newest first, or why one could not be decrypted.
    pub secrets: Result<Vec<SigningSecret>, String>,
}

#[derive(Debug, sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    url: String,
    state: String,
    state_reason: Option<String>,
    timeout_ms: Option<i32>,
}

#[derive(Debug, sqlx::FromRow)]
struct SecretRow {
    id: i64,
    endpoint_id: Uuid,
    key_id: String,
    ciphertext: Vec<u8>,
}

const LOAD_ENDPOINTS: &str = r#"
SELECT id, url, state, state_reason, timeout_ms FROM webhook.endpoints WHERE id = ANY($1)
"#;

const LOAD_SECRETS: &str = r#"
SELECT id, endpoint_id, key_id, ciphertext
FROM webhook.endpoint_secrets
WHERE endpoint_id = ANY($1) AND (expires_at IS NULL OR expires_at > now())
ORDER BY id DESC
"#;

/// Loads and decrypts the endpoints `ids`; ids with no endpoint are absent from the result.
///
/// # Errors
/// The database error. Decryption failures are not errors here: they are kept in
/// [`Endpoint::secrets`] so that each delivery records them.
pub async fn load(pool: &PgPool, key_ring: &KeyRing, ids: &[Uuid]) -> Result<HashMap<Uuid, Endpoint>, sqlx::Error> {
    let rows: Vec<EndpointRow> = sqlx::query_as(LOAD_ENDPOINTS).bind(ids).fetch_all(pool).await?;
    let secret_rows: Vec<SecretRow> = sqlx::query_as(LOAD_SECRETS).bind(ids).fetch_all(pool).await?;
    let mut secrets: HashMap<Uuid, Result<Vec<SigningSecret>, String>> = HashMap::new();
    for row in secret_rows {
        let entry = secrets.entry(row.endpoint_id).or_insert_with(|| Ok(Vec::new()));
        let Ok(list) = entry else { continue };
        let sealed = Sealed { key_id: row.key_id, ciphertext: row.ciphertext };
        let opened = key_ring
            .open(&sealed, row.endpoint_id.as_bytes())
            .map_err(|err| format!("signing secret {} could not be decrypted: {err}", row.id))
            .and_then(|bytes| {
                SigningSecret::from_bytes(bytes.to_vec())
                    .map_err(|err| format!("signing secret {} is unusable: {err}", row.id))
            });
        match opened {
            Ok(secret) => list.push(secret),
            Err(reason) => *entry = Err(reason),
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let secrets = match secrets.remove(&row.id) {
                Some(result) => result,
                None => Err("the endpoint has no signing secret".to_owned()),
            };
            let endpoint = Endpoint {
                id: row.id,
                url: Url::parse(&row.url).map_err(|err| format!("endpoint URL `{}` is invalid: {err}", row.url)),
                state: row.state,
                state_reason: row.state_reason,
                timeout: row.timeout_ms.and_then(|ms| u64::try_from(ms).ok()).map(Duration::from_millis),
                secrets,
            };
            (row.id, endpoint)
        })
        .collect())
}

/// When an endpoint was loaded, and what was found (`None`: no such endpoint).
type CacheEntry = (Instant, Option<Arc<Endpoint>>);

/// A few seconds' memory of endpoints, including the ones that do not exist.
#[derive(Debug)]
pub struct EndpointCache {
    pool: PgPool,
    key_ring: Arc<KeyRing>,
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, CacheEntry>>,
}

impl EndpointCache {
    pub fn new(pool: PgPool, key_ring: Arc<KeyRing>, ttl: Duration) -> Self {
        Self { pool, key_ring, ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The endpoints `ids` (`None`: no such endpoint), loading missing or stale ones in one query.
    ///
    /// # Errors
    /// The database error.
    pub async fn get_many(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Option<Arc<Endpoint>>>, sqlx::Error> {
        let now = Instant::now();
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let entries = self.entries.lock().expect("endpoint cache lock poisoned");
            for id in ids {
                match entries.get(id) {
                    Some((loaded, endpoint)) if now.duration_since(*loaded) < self.ttl => {
                        found.insert(*id, endpoint.clone());
                    }
                    _ if !missing.contains(id) => missing.push(*id),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let mut loaded = load(&self.pool, &self.key_ring, &missing).await?;
        let mut entries = self.entries.lock().expect("endpoint cache lock poisoned");
        entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        for id in missing {
            let endpoint = loaded.remove(&id).map(Arc::new);
            entries.insert(id, (now, endpoint.clone()));
            found.insert(id, endpoint);
        }
        Ok(found)
    }
}

impl EndpointCache {
    /// Records locally that `id` was just disabled (its receiver answered 410), so this worker
    /// stops sending to it at once instead of after the cache entry expires.
    pub fn mark_disabled(&self, id: Uuid, reason: &str) {
        let mut entries = self.entries.lock().expect("endpoint cache lock poisoned");
        if let Some((_, Some(endpoint))) = entries.get_mut(&id) {
            let disabled = Endpoint {
                id,
                url: endpoint.url.clone(),
                state: "disabled".to_owned(),
                state_reason: Some(reason.to_owned()),
                timeout: endpoint.timeout,
                secrets: Ok(Vec::new()),
            };
            *endpoint = Arc::new(disabled);
        }
    }
}

/// An endpoint as listed to operators.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EndpointSummary {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub state: String,
    pub state_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub backlog: i64,
}

/// Why an endpoint could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    #[error("invalid endpoint URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Refused(#[from] crate::netguard::Refusal),
    #[error("invalid event type {0:?}: use a non-empty name without spaces")]
    EventType(String),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A new endpoint.
#[derive(Debug)]
pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub event_types: &'a [String],
    pub description: &'a str,
    pub secret: &'a SigningSecret,
}

/// Validates and inserts an endpoint with its sealed secret, in one transaction.
///
/// # Errors
/// [`AddError`] for a bad URL or event type, or a database failure.
pub async fn add(
    pool: &PgPool,
    key_ring: &KeyRing,
    policy: &crate::netguard::NetPolicy,
    new: &NewEndpoint<'_>,
) -> Result<Uuid, AddError> {
    let url = Url::parse(new.url).map_err(|err| AddError::Url { url: new.url.to_owned(), reason: err.to_string() })?;
    policy.check_url(&url)?;
    if let Some(bad) = new.event_types.iter().find(|t| t.is_empty() || t.chars().any(char::is_whitespace)) {
        return Err(AddError::EventType(bad.clone()));
    }
    let id = Uuid::new_v4();
    let sealed = key_ring.seal(new.secret.expose_bytes(), id.as_bytes())?;
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO webhook.endpoints (id, url, event_types, description) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(url.as_str())
        .bind(new.event_types)
        .bind(new.description)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO webhook.endpoint_secrets (endpoint_id, key_id, ciphertext) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(&sealed.key_id)
        .bind(&sealed.ciphertext)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

const LIST: &str = r#"
SELECT e.id, e.url, e.event_types, e.description, e.state, e.state_reason, e.created_at,
       (SELECT count(*) FROM webhook.deliveries d WHERE d.endpoint_id = e.id) AS backlog
FROM webhook.endpoints e
ORDER BY e.created_at, e.id
"#;

/// Every endpoint with its backlog.
///
/// # Errors
/// The database error.
pub async fn list(pool: &PgPool) -> Result<Vec<EndpointSummary>, sqlx::Error> {
    sqlx::query_as(LIST).fetch_all(pool).await
}

/// Every statement of this module, for the test that prepares them against the real schema.
pub const STATEMENTS: &[(&str, &str)] =
    &[("load_endpoints", LOAD_ENDPOINTS), ("load_secrets", LOAD_SECRETS), ("list", LIST)];

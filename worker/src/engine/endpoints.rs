//! Endpoints: their SQL, and the short-lived cache through which workers read them.
//!
//! Workers look endpoints up for every claimed batch; the cache keeps each one (URL parsed,
//! secrets decrypted) for a few seconds so that a busy worker reads the endpoints table a few
//! times per second rather than once per delivery. Changes (pause, disable, new secret) reach
//! every worker within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use url::Url;
use uuid::Uuid;

use crate::policy::circuit::Circuit;
use crate::policy::crypto::{KeyRing, Sealed};
use crate::policy::signing::SigningSecret;
use crate::policy::states::EndpointState;

/// Why an endpoint cannot be sent to; recorded as the delivery's error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    #[error("endpoint URL `{url}` is invalid: {reason}")]
    Url { url: String, reason: url::ParseError },
    #[error("the endpoint has no signing secret")]
    NoSecret,
    #[error("{what} {label} could not be decrypted: {reason}")]
    Sealed { what: &'static str, label: String, reason: std::sync::Arc<crate::policy::crypto::Error> },
    #[error("signing secret {label} is unusable: {reason}")]
    Secret { label: String, reason: std::sync::Arc<crate::policy::signing::Error> },
    #[error("header {label} is not text")]
    HeaderNotText { label: String },
}

/// An endpoint as the worker uses it.
#[derive(Debug)]
pub struct Endpoint {
    pub id: Uuid,
    /// The parsed URL, or why it does not parse.
    pub url: Result<Url, Unusable>,
    pub state: EndpointState,
    pub state_reason: Option<String>,
    pub timeout: Option<Duration>,
    /// Live signing secrets, newest first, or why one could not be decrypted.
    pub secrets: Result<Vec<SigningSecret>, Unusable>,
    /// Custom request headers (name, value), or why one could not be decrypted.
    pub headers: Result<Vec<(String, String)>, Unusable>,
    pub rate_limit: Option<u32>,
    pub burst: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub circuit: Circuit,
    /// The client certificate and key (PEM) for mTLS, or why it could not be decrypted.
    pub identity: Result<Option<Arc<zeroize::Zeroizing<Vec<u8>>>>, Unusable>,
}

#[derive(Debug, sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    url: String,
    state: EndpointState,
    state_reason: Option<String>,
    timeout_ms: Option<i32>,
    rate_limit_per_second: Option<i32>,
    rate_limit_burst: Option<i32>,
    max_in_flight: Option<i32>,
    #[sqlx(flatten)]
    circuit: Circuit,
}

#[derive(Debug, sqlx::FromRow)]
struct SealedRow {
    endpoint_id: Uuid,
    label: String,
    key_id: String,
    ciphertext: Vec<u8>,
}

const LOAD_ENDPOINTS: &str = r#"
SELECT e.id, e.url, e.state, e.state_reason, e.timeout_ms,
       -- An endpoint without its own rate limit has its application's.
       coalesce(e.rate_limit_per_second, a.rate_limit_per_second) AS rate_limit_per_second,
       e.rate_limit_burst, e.max_in_flight,
       e.circuit_state, e.circuit_open_until, e.circuit_cooldown_ms, e.circuit_probe_delivery
FROM webhook.endpoints e LEFT JOIN webhook.applications a ON a.id = e.application_id
WHERE e.id = ANY($1)
"#;

const LOAD_SECRETS: &str = r#"
SELECT endpoint_id, id::text AS label, key_id, ciphertext
FROM webhook.endpoint_secrets
WHERE endpoint_id = ANY($1) AND (expires_at IS NULL OR expires_at > now())
ORDER BY id DESC
"#;

const LOAD_IDENTITIES: &str = r#"
SELECT endpoint_id, 'client certificate' AS label, key_id, ciphertext
FROM webhook.endpoint_client_identities
WHERE endpoint_id = ANY($1)
"#;

const LOAD_HEADERS: &str = r#"
SELECT endpoint_id, name AS label, key_id, ciphertext
FROM webhook.endpoint_headers
WHERE endpoint_id = ANY($1)
ORDER BY name
"#;

/// Opens every sealed row, grouped by endpoint; one failure marks the whole endpoint's group as
/// failed with a reason naming the row (`what` and its label), never the content.
fn open_all<T>(
    key_ring: &KeyRing,
    rows: Vec<SealedRow>,
    what: &'static str,
    convert: impl Fn(&SealedRow, Vec<u8>) -> Result<T, Unusable>,
) -> HashMap<Uuid, Result<Vec<T>, Unusable>> {
    let mut grouped: HashMap<Uuid, Result<Vec<T>, Unusable>> = HashMap::new();
    for row in rows {
        let entry = grouped.entry(row.endpoint_id).or_insert_with(|| Ok(Vec::new()));
        let Ok(list) = entry else { continue };
        let sealed = Sealed { key_id: row.key_id.clone(), ciphertext: row.ciphertext.clone() };
        let opened = key_ring
            .open(&sealed, row.endpoint_id.as_bytes())
            .map_err(|err| Unusable::Sealed { what, label: row.label.clone(), reason: Arc::new(err) })
            .and_then(|bytes| convert(&row, bytes.to_vec()));
        match opened {
            Ok(value) => list.push(value),
            Err(reason) => *entry = Err(reason),
        }
    }
    grouped
}

/// Loads and decrypts the endpoints `ids`; ids with no endpoint are absent from the result.
///
/// # Errors
/// The database error. Decryption failures are not errors here: they are kept in the
/// [`Endpoint`] so that each delivery records them.
pub async fn load(pool: &PgPool, key_ring: &KeyRing, ids: &[Uuid]) -> Result<HashMap<Uuid, Endpoint>, sqlx::Error> {
    let rows: Vec<EndpointRow> = sqlx::query_as(LOAD_ENDPOINTS).bind(ids).fetch_all(pool).await?;
    let secret_rows: Vec<SealedRow> = sqlx::query_as(LOAD_SECRETS).bind(ids).fetch_all(pool).await?;
    let header_rows: Vec<SealedRow> = sqlx::query_as(LOAD_HEADERS).bind(ids).fetch_all(pool).await?;
    let identity_rows: Vec<SealedRow> = sqlx::query_as(LOAD_IDENTITIES).bind(ids).fetch_all(pool).await?;
    let mut identities =
        open_all(key_ring, identity_rows, "the", |_, bytes| Ok(Arc::new(zeroize::Zeroizing::new(bytes))));
    let mut secrets = open_all(key_ring, secret_rows, "signing secret", |row, bytes| {
        SigningSecret::from_bytes(bytes)
            .map_err(|err| Unusable::Secret { label: row.label.clone(), reason: Arc::new(err) })
    });
    let mut headers = open_all(key_ring, header_rows, "header", |row, bytes| {
        String::from_utf8(bytes)
            .map(|value| (row.label.clone(), value))
            .map_err(|_| Unusable::HeaderNotText { label: row.label.clone() })
    });
    Ok(rows
        .into_iter()
        .map(|row| {
            let endpoint = Endpoint {
                id: row.id,
                url: Url::parse(&row.url).map_err(|reason| Unusable::Url { url: row.url.clone(), reason }),
                state: row.state,
                state_reason: row.state_reason,
                timeout: row.timeout_ms.and_then(|ms| u64::try_from(ms).ok()).map(Duration::from_millis),
                secrets: secrets.remove(&row.id).unwrap_or(Err(Unusable::NoSecret)),
                headers: headers.remove(&row.id).unwrap_or_else(|| Ok(Vec::new())),
                rate_limit: row.rate_limit_per_second.and_then(|v| u32::try_from(v).ok()),
                burst: row.rate_limit_burst.and_then(|v| u32::try_from(v).ok()),
                max_in_flight: row.max_in_flight.and_then(|v| u32::try_from(v).ok()),
                circuit: row.circuit,
                identity: identities.remove(&row.id).map_or(Ok(None), |found| found.map(|mut list| list.pop())),
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
    /// Drops `id`, so the next batch that needs it reads it afresh (an operator changed it).
    pub fn forget(&self, id: Uuid) {
        self.entries.lock().expect("endpoint cache lock poisoned").remove(&id);
    }

    /// Records locally that `id` was just disabled (its receiver answered 410), so this worker
    /// stops sending to it at once instead of after the cache entry expires.
    pub fn mark_disabled(&self, id: Uuid, reason: &str) {
        let mut entries = self.entries.lock().expect("endpoint cache lock poisoned");
        if let Some((_, Some(endpoint))) = entries.get_mut(&id) {
            let disabled = Endpoint {
                id,
                url: endpoint.url.clone(),
                state: EndpointState::Disabled,
                state_reason: Some(reason.to_owned()),
                timeout: endpoint.timeout,
                secrets: Ok(Vec::new()),
                headers: Ok(Vec::new()),
                rate_limit: endpoint.rate_limit,
                burst: endpoint.burst,
                max_in_flight: endpoint.max_in_flight,
                circuit: endpoint.circuit.clone(),
                identity: Ok(None),
            };
            *endpoint = Arc::new(disabled);
        }
    }
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("load_endpoints", LOAD_ENDPOINTS),
    ("load_secrets", LOAD_SECRETS),
    ("load_headers", LOAD_HEADERS),
    ("load_identities", LOAD_IDENTITIES),
];

//! An application's endpoints as the management API shows them: found by id or uid only within
//! their application, listed a page at a time, with the current signing secret and the custom
//! headers opened from the key ring.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;
use crate::admin::ids::{self, Kind};
use crate::admin::page::{Page, PageRequest};
use crate::policy::crypto::{KeyRing, Sealed};
use crate::policy::signing::SigningSecret;
use crate::policy::states::EndpointState;

/// An endpoint of an application.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub application_id: Uuid,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub rate_limit_per_second: Option<i32>,
    pub state: EndpointState,
    pub metadata: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const BY_ID: &str = r#"
SELECT id, application_id, uid, url, description, event_types, rate_limit_per_second, state, metadata, created_at, updated_at
FROM webhook.endpoints WHERE id = $1 AND application_id = $2
"#;

const BY_UID: &str = r#"
SELECT id, application_id, uid, url, description, event_types, rate_limit_per_second, state, metadata, created_at, updated_at
FROM webhook.endpoints WHERE uid = $1 AND application_id = $2
"#;

const LIST: &str = r#"
SELECT id, application_id, uid, url, description, event_types, rate_limit_per_second, state, metadata, created_at, updated_at
FROM webhook.endpoints
WHERE application_id = $1
  AND ($2::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM webhook.endpoints WHERE id = $2 AND application_id = $1))
ORDER BY created_at, id
LIMIT $3
"#;

const NEWEST_SECRET: &str = r#"
SELECT key_id, ciphertext FROM webhook.endpoint_secrets
WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())
ORDER BY id DESC LIMIT 1
"#;

const HEADERS: &str =
    "SELECT name, key_id, ciphertext FROM webhook.endpoint_headers WHERE endpoint_id = $1 ORDER BY name";

/// The endpoint of `application` named `reference` (`ep_…`, a uuid, or its uid).
///
/// # Errors
/// [`Error::NotFound`] when there is none in this application, or the database error.
pub async fn find(pool: &PgPool, application: Uuid, reference: &str) -> Result<Endpoint, Error> {
    if reference.contains('\0') {
        return Err(Error::NotFound(Uuid::nil()));
    }
    let found: Option<Endpoint> = match ids::parse(Kind::Endpoint, reference) {
        Some(id) => sqlx::query_as(BY_ID).bind(id).bind(application).fetch_optional(pool).await?,
        None => sqlx::query_as(BY_UID).bind(reference).bind(application).fetch_optional(pool).await?,
    };
    found.ok_or_else(|| Error::NotFound(ids::parse(Kind::Endpoint, reference).unwrap_or_default()))
}

/// A page of `application`'s endpoints, oldest first.
///
/// # Errors
/// The database error.
pub async fn list(pool: &PgPool, application: Uuid, page: &PageRequest) -> Result<Page<Endpoint>, Error> {
    let after = page.iterator.as_deref().and_then(|it| ids::parse(Kind::Endpoint, it));
    let rows: Vec<Endpoint> =
        sqlx::query_as(LIST).bind(application).bind(after).bind(page.fetch()).fetch_all(pool).await?;
    Ok(Page::of(rows, page, |e| ids::endpoint_id(e.id)))
}

/// The secret that signs first (the newest live one).
///
/// # Errors
/// [`Error::Crypto`] when it cannot be opened with this key ring, or the database error.
pub async fn current_secret(pool: &PgPool, key_ring: &KeyRing, endpoint: &Endpoint) -> Result<SigningSecret, Error> {
    let (key_id, ciphertext): (String, Vec<u8>) =
        sqlx::query_as(NEWEST_SECRET).bind(endpoint.id).fetch_one(pool).await?;
    let plain = key_ring.open(&Sealed { key_id, ciphertext }, endpoint.id.as_bytes())?;
    SigningSecret::from_bytes(plain.to_vec()).map_err(|_| Error::UnusableSecret(endpoint.id))
}

/// The custom headers, opened.
///
/// # Errors
/// [`Error::Crypto`] when one cannot be opened, or the database error.
pub async fn headers(pool: &PgPool, key_ring: &KeyRing, endpoint: &Endpoint) -> Result<Vec<(String, String)>, Error> {
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(HEADERS).bind(endpoint.id).fetch_all(pool).await?;
    rows.into_iter()
        .map(|(name, key_id, ciphertext)| {
            let plain = key_ring.open(&Sealed { key_id, ciphertext }, endpoint.id.as_bytes())?;
            Ok((name, String::from_utf8_lossy(&plain).into_owned()))
        })
        .collect()
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] =
    &[("by_id", BY_ID), ("by_uid", BY_UID), ("list", LIST), ("newest_secret", NEWEST_SECRET), ("headers", HEADERS)];

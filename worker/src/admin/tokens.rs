//! Management API tokens: random, shown once, stored only as a SHA-256, optionally scoped to one
//! application. The API looks a presented token up by its hash and compares the hashes in
//! constant time.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin::ids::Scope;

pub use crate::policy::token::{hash, same_hash};

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no token with id {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A token as listed (never the token itself).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub application_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new token: its row, and the token text, which exists nowhere else.
#[derive(Debug)]
pub struct Created {
    pub info: TokenInfo,
    pub token: secrecy::SecretString,
}

const INSERT: &str = r#"
INSERT INTO webhook.api_tokens (name, application_id, token_sha256) VALUES ($1, $2, $3)
RETURNING id, name, application_id, created_at, revoked_at
"#;
const LIST: &str =
    "SELECT id, name, application_id, created_at, revoked_at FROM webhook.api_tokens ORDER BY created_at, id";
const REVOKE: &str = "UPDATE webhook.api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1";
const LOOKUP: &str =
    "SELECT token_sha256, application_id FROM webhook.api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL";

/// Creates a token named `name`, scoped to `application` if given.
///
/// # Errors
/// The database error (an unknown application is a foreign-key violation).
pub async fn create(pool: &PgPool, name: &str, application: Option<Uuid>) -> Result<Created, Error> {
    let token = crate::policy::token::generate();
    let info = sqlx::query_as(INSERT).bind(name).bind(application).bind(&hash(&token)[..]).fetch_one(pool).await?;
    Ok(Created { info, token: token.as_str().into() })
}

/// Every token, revoked ones included.
///
/// # Errors
/// The database error.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>, Error> {
    Ok(sqlx::query_as(LIST).fetch_all(pool).await?)
}

/// Revokes token `id` (again is a no-op).
///
/// # Errors
/// [`Error::NotFound`] or the database error.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<(), Error> {
    match sqlx::query(REVOKE).bind(id).execute(pool).await?.rows_affected() {
        0 => Err(Error::NotFound(id)),
        _ => Ok(()),
    }
}

/// The scope of `token`, or `None` when it is unknown or revoked.
///
/// # Errors
/// The database error.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<Scope>, Error> {
    let presented = hash(token);
    let row: Option<(Vec<u8>, Option<Uuid>)> = sqlx::query_as(LOOKUP).bind(&presented[..]).fetch_optional(pool).await?;
    Ok(row
        .filter(|(stored, _)| same_hash(stored, &presented))
        .map(|(_, app)| app.map_or(Scope::All, Scope::Application)))
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("insert", INSERT), ("list", LIST), ("revoke", REVOKE), ("lookup", LOOKUP)];

//! Encryption key rotation: which keys the stored ciphertexts use, and re-sealing them under the
//! ring's active key — online, in small transactions, resumable at any point (each batch commits
//! on its own and the next run picks up whatever still uses another key).

use sqlx::PgPool;
use uuid::Uuid;

use crate::policy::crypto::{KeyRing, Sealed};

/// Why a rotation stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "{what} of endpoint {endpoint} is sealed with key `{key_id}`, which is not in this key ring: \
         add that key after the active one and run again"
    )]
    MissingKey { what: &'static str, endpoint: Uuid, key_id: String },
    #[error("{what} of endpoint {endpoint} could not be opened")]
    Open { what: &'static str, endpoint: Uuid, source: crate::policy::crypto::Error },
    #[error(transparent)]
    Crypto(#[from] crate::policy::crypto::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How many ciphertexts use one key.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct KeyUsage {
    pub key_id: String,
    pub secrets: i64,
    pub headers: i64,
    pub client_certificates: i64,
}

const USAGE: &str = r#"
SELECT key_id, count(*) FILTER (WHERE kind = 'secret') AS secrets, count(*) FILTER (WHERE kind = 'header') AS headers,
       count(*) FILTER (WHERE kind = 'identity') AS client_certificates
FROM (SELECT key_id, 'secret' AS kind FROM webhook.endpoint_secrets
      UNION ALL SELECT key_id, 'header' FROM webhook.endpoint_headers
      UNION ALL SELECT key_id, 'identity' FROM webhook.endpoint_client_identities) k
GROUP BY key_id ORDER BY key_id
"#;

/// Ciphertext counts per key id.
///
/// # Errors
/// The database error.
pub async fn usage(pool: &PgPool) -> Result<Vec<KeyUsage>, sqlx::Error> {
    sqlx::query_as(USAGE).fetch_all(pool).await
}

/// Which table a batch re-seals.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Secrets,
    Headers,
    Identities,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Self::Secrets => "a signing secret",
            Self::Headers => "a header",
            Self::Identities => "the client certificate",
        }
    }

    fn select(self) -> &'static str {
        match self {
            Self::Secrets => SELECT_SECRETS,
            Self::Headers => SELECT_HEADERS,
            Self::Identities => SELECT_IDENTITIES,
        }
    }

    fn update(self) -> &'static str {
        match self {
            Self::Secrets => UPDATE_SECRETS,
            Self::Headers => UPDATE_HEADERS,
            Self::Identities => UPDATE_IDENTITIES,
        }
    }
}

/// Re-seals up to `batch` ciphertexts of one kind under the active key in one transaction;
/// returns how many.
async fn rotate_batch(pool: &PgPool, ring: &KeyRing, kind: Kind, batch: i64) -> Result<usize, Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(String, Uuid, String, Vec<u8>)> =
        sqlx::query_as(kind.select()).bind(ring.active_key_id()).bind(batch).fetch_all(&mut *tx).await?;
    for (key, endpoint, key_id, ciphertext) in &rows {
        if !ring.contains(key_id) {
            return Err(Error::MissingKey { what: kind.what(), endpoint: *endpoint, key_id: key_id.clone() });
        }
        let sealed = Sealed { key_id: key_id.clone(), ciphertext: ciphertext.clone() };
        let plain = ring.open(&sealed, endpoint.as_bytes()).map_err(|source| Error::Open {
            what: kind.what(),
            endpoint: *endpoint,
            source,
        })?;
        let resealed = ring.seal(&plain, endpoint.as_bytes())?;
        sqlx::query(kind.update())
            .bind(key)
            .bind(endpoint)
            .bind(&resealed.key_id)
            .bind(&resealed.ciphertext)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Re-seals everything not under the active key, `batch` rows per transaction, stopping after
/// `max_batches` batches if given. `progress` is told the running total after each batch.
/// Returns the number of ciphertexts re-sealed.
///
/// # Errors
/// [`Error::MissingKey`] when a ciphertext's key is not in the ring (nothing of that batch is
/// changed; run again after fixing the ring), or the database error.
pub async fn rotate(
    pool: &PgPool,
    ring: &KeyRing,
    batch: i64,
    max_batches: Option<u64>,
    mut progress: impl FnMut(usize),
) -> Result<usize, Error> {
    let mut total = 0;
    let mut batches = 0;
    for kind in [Kind::Secrets, Kind::Headers, Kind::Identities] {
        loop {
            if max_batches.is_some_and(|max| batches >= max) {
                return Ok(total);
            }
            let done = rotate_batch(pool, ring, kind, batch).await?;
            if done == 0 {
                break;
            }
            batches += 1;
            total += done;
            progress(total);
        }
    }
    Ok(total)
}

const SELECT_SECRETS: &str = "SELECT id::text, endpoint_id, key_id, ciphertext FROM webhook.endpoint_secrets WHERE key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED";
const SELECT_HEADERS: &str = "SELECT name, endpoint_id, key_id, ciphertext FROM webhook.endpoint_headers WHERE key_id <> $1 ORDER BY endpoint_id, name LIMIT $2 FOR UPDATE SKIP LOCKED";
const SELECT_IDENTITIES: &str = "SELECT '', endpoint_id, key_id, ciphertext FROM webhook.endpoint_client_identities WHERE key_id <> $1 ORDER BY endpoint_id LIMIT $2 FOR UPDATE SKIP LOCKED";
const UPDATE_SECRETS: &str =
    "UPDATE webhook.endpoint_secrets SET key_id = $3, ciphertext = $4 WHERE id = $1::bigint AND endpoint_id = $2";
const UPDATE_HEADERS: &str =
    "UPDATE webhook.endpoint_headers SET key_id = $3, ciphertext = $4 WHERE name = $1 AND endpoint_id = $2";
const UPDATE_IDENTITIES: &str =
    "UPDATE webhook.endpoint_client_identities SET key_id = $3, ciphertext = $4 WHERE $1 = '' AND endpoint_id = $2";

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("usage", USAGE),
    ("select_secrets", SELECT_SECRETS),
    ("select_headers", SELECT_HEADERS),
    ("select_identities", SELECT_IDENTITIES),
    ("update_secrets", UPDATE_SECRETS),
    ("update_headers", UPDATE_HEADERS),
    ("update_identities", UPDATE_IDENTITIES),
];

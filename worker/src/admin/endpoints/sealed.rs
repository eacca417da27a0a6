//! The encrypted parts of an endpoint: signing secrets, custom headers and the mTLS client
//! identity, each sealed under the key ring with the endpoint's id as associated data.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::Error;
use super::sql::{DELETE_HEADERS, DELETE_IDENTITY, INSERT_HEADER, INSERT_IDENTITY, INSERT_SECRET};
use crate::policy::crypto::KeyRing;
use crate::policy::signing::SigningSecret;

pub(super) async fn replace_identity(
    tx: &mut Transaction<'_, Postgres>,
    key_ring: &KeyRing,
    id: Uuid,
    pem: Option<&[u8]>,
) -> Result<(), Error> {
    sqlx::query(DELETE_IDENTITY).bind(id).execute(&mut **tx).await?;
    let Some(pem) = pem else { return Ok(()) };
    crate::tls::install_crypto_provider();
    reqwest::Identity::from_pem(pem).map_err(|err| {
        Error::ClientIdentity(std::error::Error::source(&err).map_or_else(|| err.to_string(), ToString::to_string))
    })?;
    insert_sealed(tx, key_ring, id, pem, INSERT_IDENTITY, None).await
}

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

pub(super) async fn add_secret(
    tx: &mut Transaction<'_, Postgres>,
    key_ring: &KeyRing,
    id: Uuid,
    secret: &SigningSecret,
) -> Result<(), Error> {
    insert_sealed(tx, key_ring, id, secret.expose_bytes(), INSERT_SECRET, None).await
}

pub(super) async fn replace_headers(
    tx: &mut Transaction<'_, Postgres>,
    key_ring: &KeyRing,
    id: Uuid,
    headers: &[(String, String)],
) -> Result<(), Error> {
    sqlx::query(DELETE_HEADERS).bind(id).execute(&mut **tx).await?;
    for (name, value) in headers {
        insert_sealed(tx, key_ring, id, value.as_bytes(), INSERT_HEADER, Some(name)).await?;
    }
    Ok(())
}

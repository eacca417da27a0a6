//! The schema: apply the embedded migrations, and report the version a database is at.

use sqlx::PgPool;

/// Why the schema could not be migrated or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Migrate(#[from] crate::db::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

const VERSION: &str = "SELECT max(version) FROM webhook._sqlx_migrations WHERE success";

/// Applies every pending migration (safe to run twice and from several pods at once) and returns
/// the schema version.
///
/// # Errors
/// When a migration fails or the database is unreachable.
pub async fn migrate(pool: &PgPool) -> Result<i64, Error> {
    crate::db::migrate(pool).await?;
    Ok(version(pool).await?)
}

/// The newest applied migration (0 before the first).
///
/// # Errors
/// The database error.
pub async fn version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let version: Option<i64> = sqlx::query_scalar(VERSION).fetch_one(pool).await?;
    Ok(version.unwrap_or(0))
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("version", VERSION)];

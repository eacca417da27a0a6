//! Applications (tenants): create, find by id or uid, list, change, delete. Every operation takes
//! the caller's [`Scope`]; an application outside it is reported exactly like one that does not
//! exist, so a scoped caller learns nothing about other tenants.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin::ids::{self, Kind, Scope};
use crate::admin::page::{Page, PageRequest};

/// The operational application (migration 0007): its endpoints receive the operational events
/// (docs/operational-events.md), and events about its own endpoints are never emitted. Its uid
/// is `operational` unless a customer had that uid first.
pub const OPERATIONAL: Uuid = Uuid::from_u128(1);

/// Why an application operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no application {0}")]
    NotFound(String),
    #[error("an application with uid `{0}` exists already")]
    UidTaken(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("a token scoped to one application cannot create or delete applications")]
    Forbidden,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An application as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Application {
    pub id: Uuid,
    pub uid: Option<String>,
    pub name: String,
    pub rate_limit_per_second: Option<i32>,
    pub metadata: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An application's settings (all of them, for create and replace).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub name: String,
    pub uid: Option<String>,
    pub rate_limit_per_second: Option<i32>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Settings {
    fn check(&self) -> Result<(), Error> {
        if self.name.trim().is_empty() {
            return Err(Error::Invalid { field: "name", reason: "must not be empty".into() });
        }
        if let Some(uid) = &self.uid {
            check_uid(uid)?;
        }
        if self.rate_limit_per_second.is_some_and(|rate| rate <= 0) {
            return Err(Error::Invalid { field: "rateLimit", reason: "must be a positive number".into() });
        }
        Ok(())
    }
}

/// A uid is 1–256 of `[a-zA-Z0-9._-]` and never looks like an id.
fn check_uid(uid: &str) -> Result<(), Error> {
    let valid = (1..=256).contains(&uid.len())
        && uid.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && ids::parse(Kind::Application, uid).is_none();
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid { field: "uid", reason: "use 1 to 256 of a-z A-Z 0-9 . _ -, not an id".into() })
    }
}

const INSERT: &str = r#"
INSERT INTO webhook.applications (uid, name, rate_limit_per_second, metadata)
VALUES ($1, $2, $3, $4)
ON CONFLICT (uid) DO NOTHING
RETURNING id, uid, name, rate_limit_per_second, metadata, created_at, updated_at
"#;

const BY_UID: &str = r#"
SELECT id, uid, name, rate_limit_per_second, metadata, created_at, updated_at
FROM webhook.applications WHERE uid = $1
"#;

const BY_ID: &str = r#"
SELECT id, uid, name, rate_limit_per_second, metadata, created_at, updated_at
FROM webhook.applications WHERE id = $1
"#;

const LIST: &str = r#"
SELECT id, uid, name, rate_limit_per_second, metadata, created_at, updated_at
FROM webhook.applications
WHERE ($1::uuid IS NULL OR id = $1)
  AND ($2::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM webhook.applications WHERE id = $2))
ORDER BY created_at, id
LIMIT $3
"#;

const REPLACE: &str = r#"
UPDATE webhook.applications
SET uid = $2, name = $3, rate_limit_per_second = $4, metadata = $5, updated_at = now()
WHERE id = $1
RETURNING id, uid, name, rate_limit_per_second, metadata, created_at, updated_at
"#;

const DELETE_ENDPOINTS: &str = r#"
WITH gone AS (DELETE FROM webhook.endpoints WHERE application_id = $1 RETURNING id)
DELETE FROM webhook.deliveries WHERE endpoint_id IN (SELECT id FROM gone)
"#;

const DELETE: &str = "DELETE FROM webhook.applications WHERE id = $1";

/// Creates an application. With `get_if_exists`, an existing application with the same uid is
/// returned instead of a conflict (the second value says whether it was created).
///
/// # Errors
/// [`Error::Invalid`], [`Error::UidTaken`], [`Error::Forbidden`] for a scoped caller.
pub async fn create(
    pool: &PgPool,
    scope: Scope,
    settings: &Settings,
    get_if_exists: bool,
) -> Result<(Application, bool), Error> {
    settings.check()?;
    let existing = || async {
        let uid = settings.uid.as_deref().unwrap_or_default();
        sqlx::query_as::<_, Application>(BY_UID).bind(uid).fetch_optional(pool).await
    };
    if scope != Scope::All {
        // A scoped caller may only be handed back its own application.
        return match existing().await? {
            Some(app) if get_if_exists && scope.allows(app.id) => Ok((app, false)),
            _ => Err(Error::Forbidden),
        };
    }
    let inserted: Option<Application> = sqlx::query_as(INSERT)
        .bind(&settings.uid)
        .bind(settings.name.trim())
        .bind(settings.rate_limit_per_second)
        .bind(sqlx::types::Json(&settings.metadata))
        .fetch_optional(pool)
        .await?;
    if let Some(created) = inserted {
        return Ok((created, true));
    }
    match existing().await? {
        Some(app) if get_if_exists => Ok((app, false)),
        _ => Err(Error::UidTaken(settings.uid.clone().unwrap_or_default())),
    }
}

/// The application named `reference` (`app_…`, a uuid or a uid), if the caller may see it.
///
/// # Errors
/// [`Error::NotFound`] (also for one outside the scope), or the database error.
pub async fn find(pool: &PgPool, scope: Scope, reference: &str) -> Result<Application, Error> {
    if reference.contains('\0') {
        return Err(Error::NotFound(reference.to_owned()));
    }
    let found: Option<Application> = match ids::parse(Kind::Application, reference) {
        Some(id) => sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await?,
        None => sqlx::query_as(BY_UID).bind(reference).fetch_optional(pool).await?,
    };
    found.filter(|app| scope.allows(app.id)).ok_or_else(|| Error::NotFound(reference.to_owned()))
}

/// A page of the applications the caller may see, oldest first.
///
/// # Errors
/// The database error.
pub async fn list(pool: &PgPool, scope: Scope, page: &PageRequest) -> Result<Page<Application>, Error> {
    let after = page.iterator.as_deref().and_then(|it| ids::parse(Kind::Application, it));
    let rows: Vec<Application> =
        sqlx::query_as(LIST).bind(scope.application()).bind(after).bind(page.fetch()).fetch_all(pool).await?;
    Ok(Page::of(rows, page, |app| ids::app_id(app.id)))
}

/// Replaces the settings of `reference`.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Invalid`], [`Error::UidTaken`], or the database error.
pub async fn replace(pool: &PgPool, scope: Scope, reference: &str, settings: &Settings) -> Result<Application, Error> {
    settings.check()?;
    let app = find(pool, scope, reference).await?;
    let replaced = sqlx::query_as(REPLACE)
        .bind(app.id)
        .bind(&settings.uid)
        .bind(settings.name.trim())
        .bind(settings.rate_limit_per_second)
        .bind(sqlx::types::Json(&settings.metadata))
        .fetch_optional(pool)
        .await;
    match replaced {
        Ok(Some(app)) => Ok(app),
        Ok(None) => Err(Error::NotFound(reference.to_owned())),
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
            Err(Error::UidTaken(settings.uid.clone().unwrap_or_default()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Deletes `reference` with its endpoints and their queued deliveries (history and dead letters
/// are kept, as for a deleted endpoint).
///
/// # Errors
/// [`Error::NotFound`], [`Error::Forbidden`] for a scoped caller, or the database error.
pub async fn delete(pool: &PgPool, scope: Scope, reference: &str) -> Result<(), Error> {
    let app = find(pool, scope, reference).await?;
    if scope != Scope::All {
        return Err(Error::Forbidden);
    }
    let mut tx = pool.begin().await?;
    sqlx::query(DELETE_ENDPOINTS).bind(app.id).execute(&mut *tx).await?;
    sqlx::query(DELETE).bind(app.id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[
    ("insert", INSERT),
    ("by_uid", BY_UID),
    ("by_id", BY_ID),
    ("list", LIST),
    ("replace", REPLACE),
    ("delete_endpoints", DELETE_ENDPOINTS),
    ("delete", DELETE),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_checked_and_may_not_look_like_ids() {
        assert!(check_uid("customer-42.eu_1").is_ok());
        assert!(check_uid("").is_err());
        assert!(check_uid("has space").is_err());
        assert!(check_uid(&format!("app_{}", Uuid::new_v4().simple())).is_err());
        assert!(check_uid(&"x".repeat(257)).is_err());
    }
}

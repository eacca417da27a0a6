//! The catalogue of event types (shared by every application, as in Svix).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::admin::page::{Page, PageRequest};

/// Why an event type operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("event type `{0}` exists already")]
    Exists(String),
    #[error("no event type `{0}`")]
    NotFound(String),
    #[error("invalid event type name {0:?}: use 1 to 256 of a-z A-Z 0-9 . _ -")]
    Name(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An event type.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub schemas: Option<sqlx::types::Json<serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const INSERT: &str = r#"
INSERT INTO webhook.event_types (name, description, archived, schemas) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING
RETURNING name, description, archived, schemas, created_at, updated_at
"#;

const LIST: &str = r#"
SELECT name, description, archived, schemas, created_at, updated_at FROM webhook.event_types
WHERE ($1::text IS NULL OR name > $1) AND ($2 OR NOT archived)
ORDER BY name LIMIT $3
"#;

const GET: &str =
    "SELECT name, description, archived, schemas, created_at, updated_at FROM webhook.event_types WHERE name = $1";

/// Creates an event type.
///
/// # Errors
/// [`Error::Name`], [`Error::Exists`] or the database error.
pub async fn create(
    pool: &PgPool,
    name: &str,
    description: &str,
    archived: bool,
    schemas: Option<&serde_json::Value>,
) -> Result<EventType, Error> {
    let valid = (1..=256).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        return Err(Error::Name(name.to_owned()));
    }
    let created: Option<EventType> = sqlx::query_as(INSERT)
        .bind(name)
        .bind(description)
        .bind(archived)
        .bind(schemas.map(sqlx::types::Json))
        .fetch_optional(pool)
        .await?;
    created.ok_or_else(|| Error::Exists(name.to_owned()))
}

/// Event type `name`.
///
/// # Errors
/// [`Error::NotFound`] or the database error.
pub async fn get(pool: &PgPool, name: &str) -> Result<EventType, Error> {
    let found: Option<EventType> = sqlx::query_as(GET).bind(name).fetch_optional(pool).await?;
    found.ok_or_else(|| Error::NotFound(name.to_owned()))
}

/// A page of event types by name, archived ones only when asked for.
///
/// # Errors
/// The database error.
pub async fn list(pool: &PgPool, include_archived: bool, page: &PageRequest) -> Result<Page<EventType>, Error> {
    let rows: Vec<EventType> = sqlx::query_as(LIST)
        .bind(page.iterator.as_deref())
        .bind(include_archived)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    Ok(Page::of(rows, page, |t| t.name.clone()))
}

/// Every statement of this module, for the registry (`crate::sql`).
pub const STATEMENTS: &[(&str, &str)] = &[("insert", INSERT), ("list", LIST), ("get", GET)];

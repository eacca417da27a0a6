//! Errors as the Svix API answers them: `{code, detail}` with its status codes, and for invalid
//! input a 422 whose `detail` names the field (`[{loc, msg, type}]`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::{applications, endpoints, event_types, messages, tokens};

/// A refusal or failure of one request.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// 401: no token, or one that is unknown or revoked.
    Unauthorized,
    /// 403: the token may not do this.
    Forbidden(String),
    /// 404: nothing the caller may see has this id.
    NotFound(String),
    /// 409: a uid or name is taken.
    Conflict(String),
    /// 413: the body is over the limit.
    TooLarge(String),
    /// 422: `field` is wrong.
    Invalid { field: String, message: String },
    /// 429: the token is over its request rate; it may retry after this long.
    TooMany { retry_after: std::time::Duration },
    /// 503: the database does not answer.
    Unavailable(String),
    /// 500: logged, never shown.
    Internal(String),
}

/// `{code, detail}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HttpErrorOut {
    pub code: String,
    pub detail: String,
}

/// One invalid field.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationError {
    /// Where: `["body", "url"]`, `["query", "limit"]`…
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A 422 body.
#[derive(Debug, Serialize, ToSchema)]
pub struct HttpValidationError {
    pub code: String,
    pub detail: Vec<ValidationError>,
}

impl ApiError {
    /// A 422 for the body field `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let simple = |status: StatusCode, code: &str, detail: String| {
            (status, Json(HttpErrorOut { code: code.to_owned(), detail })).into_response()
        };
        match self {
            Self::Unauthorized => simple(
                StatusCode::UNAUTHORIZED,
                "authentication_failed",
                "a valid `Authorization: Bearer <token>` header is required".into(),
            ),
            Self::Forbidden(detail) => simple(StatusCode::FORBIDDEN, "forbidden", detail),
            Self::NotFound(detail) => simple(StatusCode::NOT_FOUND, "not_found", detail),
            Self::Conflict(detail) => simple(StatusCode::CONFLICT, "conflict", detail),
            Self::TooLarge(detail) => simple(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail),
            Self::TooMany { retry_after } => {
                // Whole seconds, rounded up: a client that waits as told is let through.
                let seconds = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
                let detail =
                    format!("this token is over its request rate (WEBHOOK_API_RATE_LIMIT); retry after {seconds} s");
                let mut response = simple(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail);
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
                response
            }
            Self::Invalid { field, message } => {
                let loc = std::iter::once("body".to_owned()).chain(field.split('.').map(str::to_owned)).collect();
                let detail = vec![ValidationError { loc, msg: message, kind: "value_error".to_owned() }];
                (StatusCode::UNPROCESSABLE_ENTITY, Json(HttpValidationError { code: "validation".into(), detail }))
                    .into_response()
            }
            Self::Unavailable(detail) => simple(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail),
            Self::Internal(reason) => {
                tracing::error!(error = %reason, "A management API request failed");
                simple(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the request failed; see the server's log".into())
            }
        }
    }
}

/// A database refusal of the caller's values is the caller's error (a NUL byte, a number out of
/// range, a CHECK constraint); anything else is ours.
fn database(err: &sqlx::Error) -> ApiError {
    if matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) {
        return ApiError::Unavailable("the database did not answer in time; retry".into());
    }
    let Some(db) = err.as_database_error() else { return ApiError::Internal(err.to_string()) };
    let field = db.constraint().unwrap_or("body").to_owned();
    match db.code().as_deref() {
        Some("23514" | "22001" | "22003" | "22007" | "22008" | "22021" | "22P02" | "22P05" | "54000") => {
            ApiError::Invalid { field, message: db.message().to_owned() }
        }
        Some("23505") => ApiError::Conflict(db.message().to_owned()),
        Some("23503") => ApiError::NotFound("it refers to something that does not exist".into()),
        _ => ApiError::Internal(err.to_string()),
    }
}

impl From<applications::Error> for ApiError {
    fn from(err: applications::Error) -> Self {
        use applications::Error as E;
        match err {
            E::NotFound(_) => Self::NotFound("no such application".into()),
            E::UidTaken(_) => Self::Conflict(err.to_string()),
            E::Invalid { field, reason } => Self::invalid(field, reason),
            E::Forbidden => Self::Forbidden(err.to_string()),
            E::Database(db) => database(&db),
        }
    }
}

impl From<endpoints::Error> for ApiError {
    fn from(err: endpoints::Error) -> Self {
        use endpoints::Error as E;
        match err {
            E::NotFound(_) => Self::NotFound("no such endpoint".into()),
            E::Url { .. } | E::Refused(_) => Self::invalid("url", err.to_string()),
            E::EventType(_) => Self::invalid("filterTypes", err.to_string()),
            E::Header(_) | E::ReservedHeader(_) => Self::invalid("headers", err.to_string()),
            E::UidTaken(_) => Self::Conflict(err.to_string()),
            E::Uid(_) => Self::invalid("uid", err.to_string()),
            E::Database(db) => database(&db),
            E::ClientIdentity(_) | E::State { .. } | E::Backlog { .. } | E::UnusableSecret(_) | E::Crypto(_) => {
                Self::Internal(err.to_string())
            }
        }
    }
}

impl From<messages::Error> for ApiError {
    fn from(err: messages::Error) -> Self {
        use messages::Error as E;
        match err {
            E::NotFound(_) => Self::NotFound("no such message".into()),
            E::EndpointNotFound(_) => Self::NotFound("no such endpoint".into()),
            E::Payload(_) => Self::invalid("payload", err.to_string()),
            E::Database(db) => database(&db),
        }
    }
}

impl From<event_types::Error> for ApiError {
    fn from(err: event_types::Error) -> Self {
        use event_types::Error as E;
        match err {
            E::Exists(_) => Self::Conflict(err.to_string()),
            E::NotFound(_) => Self::NotFound(err.to_string()),
            E::Name(_) => Self::invalid("name", err.to_string()),
            E::Database(db) => database(&db),
        }
    }
}

impl From<tokens::Error> for ApiError {
    fn from(err: tokens::Error) -> Self {
        Self::Internal(err.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        database(&err)
    }
}

//! Extractors that turn bad input into the API's errors: a JSON body whose 422 names the field
//! (and whose 413 says the limit), the caller's token, query strings, and the idempotency key.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::error::ApiError;
use super::state::AppState;
use crate::admin::ids::Scope;
use crate::admin::tokens;

/// How long a token's verdict is remembered: a revocation takes effect within this.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// A JSON body, deserialized with the path of the first wrong field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge("the request body is over the limit (WEBHOOK_API_MAX_BODY_BYTES)".into())
            } else {
                ApiError::invalid("", rejection.body_text())
            }
        })?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(value) => Ok(Self(value)),
            Err(err) => {
                let field = err.path().to_string();
                let field = if field == "." { String::new() } else { field };
                Err(ApiError::invalid(field, err.into_inner().to_string()))
            }
        }
    }
}

/// Query parameters; a wrong one is a 422 naming it.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::Invalid { field: "query".into(), message: rejection.body_text() }),
        }
    }
}

/// The `idempotency-key` header, if any.
#[derive(Debug)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key") {
            None => Ok(Self(None)),
            Some(value) => match value.to_str() {
                Ok(text) if !text.is_empty() && text.len() <= 256 => Ok(Self(Some(text.to_owned()))),
                _ => Err(ApiError::Invalid {
                    field: "idempotency-key".into(),
                    message: "1 to 256 visible ASCII characters".into(),
                }),
            },
        }
    }
}

/// Who is calling: the scope of their token.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Scope);

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(ApiError::Unauthorized)?;
        let caller = state.authenticate(token).await?.map(Caller).ok_or(ApiError::Unauthorized)?;
        // Counted only once the token is known: an unknown one cannot fill the limiter's table.
        state.throttle.check(&tokens::hash(token)).map_err(|retry_after| ApiError::TooMany { retry_after })?;
        Ok(caller)
    }
}

/// When a token was looked up, and its scope then (`None`: refused).
type Verdict = (Instant, Option<Scope>);

/// Remembered verdicts, by token hash.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verdict>>,
}

impl AppState {
    /// The scope of `token` (`None`: unknown or revoked), from the cache or the database.
    async fn authenticate(&self, token: &str) -> Result<Option<Scope>, ApiError> {
        let hash = tokens::hash(token);
        if let Some(bootstrap) = &self.bootstrap
            && tokens::same_hash(bootstrap, &hash)
        {
            return Ok(Some(Scope::All));
        }
        let now = Instant::now();
        if let Some((at, scope)) = self.tokens.entries.lock().expect("token cache lock").get(&hash).copied()
            && now.duration_since(at) < TOKEN_CACHE_TTL
        {
            return Ok(scope);
        }
        let scope = tokens::authenticate(&self.pool, token).await?;
        let mut entries = self.tokens.entries.lock().expect("token cache lock");
        entries.retain(|_, (at, _)| now.duration_since(*at) < TOKEN_CACHE_TTL);
        entries.insert(hash, (now, scope));
        Ok(scope)
    }
}

/// Shared handle to the cache.
pub type Tokens = Arc<TokenCache>;

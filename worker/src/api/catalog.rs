//! `/api/v1/event-type` (the shared catalogue) and `/api/v1/health`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, HttpErrorOut, HttpValidationError};
use super::extract::{Body, Caller, Params};
use super::models::{EventTypeIn, EventTypeListQuery, EventTypeOut, ListResponse};
use super::state::AppState;
use crate::admin::event_types;
use crate::admin::ids::Scope;
use crate::admin::page::PageRequest;

/// List event types.
#[utoipa::path(get, path = "/api/v1/event-type", params(EventTypeListQuery), security(("bearer" = [])),
    responses((status = 200, body = ListResponse<EventTypeOut>), (status = 401, body = HttpErrorOut)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    Params(query): Params<EventTypeListQuery>,
) -> Result<Json<ListResponse<EventTypeOut>>, ApiError> {
    let page = PageRequest { limit: query.limit, iterator: query.iterator.clone() };
    let listed = event_types::list(&state.pool, query.include_archived.unwrap_or(false), &page).await?;
    Ok(Json(ListResponse::of(listed, EventTypeOut::from)))
}

/// Create an event type (unscoped tokens only: the catalogue is shared).
#[utoipa::path(post, path = "/api/v1/event-type", request_body = EventTypeIn, security(("bearer" = [])),
    responses((status = 201, body = EventTypeOut), (status = 403, body = HttpErrorOut), (status = 409, body = HttpErrorOut),
              (status = 422, body = HttpValidationError)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(input): Body<EventTypeIn>,
) -> Result<(StatusCode, Json<EventTypeOut>), ApiError> {
    if caller.0 != Scope::All {
        return Err(ApiError::Forbidden("a token scoped to one application cannot change the shared catalogue".into()));
    }
    let created = event_types::create(
        &state.pool,
        &input.name,
        &input.description,
        input.archived.unwrap_or(false),
        input.schemas.as_ref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Get an event type.
#[utoipa::path(get, path = "/api/v1/event-type/{event_type_name}", params(("event_type_name" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = EventTypeOut), (status = 404, body = HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<EventTypeOut>, ApiError> {
    Ok(Json(event_types::get(&state.pool, &name).await?.into()))
}

/// Whether the API and its database answer (no token needed).
#[utoipa::path(get, path = "/api/v1/health", responses((status = 204), (status = 503, body = HttpErrorOut)))]
pub async fn health(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    match crate::db::ping(&state.pool).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(err) => Err(ApiError::Unavailable(format!("the database does not answer: {err}"))),
    }
}

//! `/api/v1/app/{app_id}/msg` and `/attempt`: sending messages, reading them and their attempts,
//! resending one to an endpoint.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, HttpErrorOut, HttpValidationError};
use super::extract::{Body, Caller, IdempotencyKey, Params};
use super::models::{ListQuery, ListResponse, MessageAttemptOut, MessageIn, MessageListQuery, MessageOut};
use super::state::AppState;
use crate::admin::attempts::{self, Of};
use crate::admin::endpoints::tenant;
use crate::admin::message_batch::Batched;
use crate::admin::messages::{self, NewMessage};
use crate::admin::page::PageRequest;

/// Send a message to the application's subscribed endpoints (the same path as `webhook.enqueue()`).
#[utoipa::path(post, path = "/api/v1/app/{app_id}/msg", params(("app_id" = String, Path),
    ("idempotency-key" = Option<String>, Header, description = "a key seen before in this application returns the first message")),
    request_body = MessageIn, security(("bearer" = [])),
    responses((status = 202, body = MessageOut), (status = 404, body = HttpErrorOut), (status = 413, body = HttpErrorOut),
              (status = 422, body = HttpValidationError)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Body(input): Body<MessageIn>,
) -> Result<(StatusCode, Json<MessageOut>), ApiError> {
    if input.event_type.is_empty() || input.event_type.len() > 256 || input.event_type.contains(char::is_whitespace) {
        return Err(ApiError::invalid("eventType", "1 to 256 characters without spaces"));
    }
    if key.is_none() {
        // Without a key to check, the message joins the next batch (one statement, one commit).
        let message = Batched {
            reference: app_id,
            scope: caller.0,
            event_type: input.event_type,
            payload: input.payload.get().to_owned(),
            event_id: input.event_id,
        };
        let sent = state.ingest.send(message).await?.ok_or_else(|| ApiError::NotFound("no such application".into()))?;
        return Ok((StatusCode::ACCEPTED, Json(sent.message.into())));
    }
    let app = state.application(caller, &app_id).await?;
    let message = NewMessage {
        event_type: &input.event_type,
        payload: input.payload.get(),
        event_id: input.event_id.as_deref(),
        idempotency_key: key.as_deref(),
    };
    let sent = messages::send(&state.pool, app, &message).await?;
    Ok((StatusCode::ACCEPTED, Json(sent.message.into())))
}

/// List the application's messages, newest first.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg", params(("app_id" = String, Path), MessageListQuery),
    security(("bearer" = [])), responses((status = 200, body = ListResponse<MessageOut>), (status = 404, body = HttpErrorOut)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Params(query): Params<MessageListQuery>,
) -> Result<Json<ListResponse<MessageOut>>, ApiError> {
    let app = state.application(caller, &app_id).await?;
    let types: Option<Vec<String>> =
        query.event_types.as_deref().map(|t| t.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect());
    let page = PageRequest { limit: query.limit, iterator: query.iterator.clone() };
    let listed = messages::list(&state.pool, app, types.as_deref(), &page).await?;
    Ok(Json(ListResponse::of(listed, MessageOut::from)))
}

/// Get a message.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/msg/{msg_id}", params(("app_id" = String, Path), ("msg_id" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = MessageOut), (status = 404, body = HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id)): Path<(String, String)>,
) -> Result<Json<MessageOut>, ApiError> {
    let app = state.application(caller, &app_id).await?;
    Ok(Json(messages::get(&state.pool, app, &msg_id).await?.into()))
}

/// Send a message again to one endpoint.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    params(("app_id" = String, Path), ("msg_id" = String, Path), ("endpoint_id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = Object, description = "an empty object"), (status = 404, body = HttpErrorOut)))]
pub async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id, endpoint_id)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let app = state.application(caller, &app_id).await?;
    let endpoint = tenant::find(&state.pool, app, &endpoint_id).await?;
    messages::resend(&state.pool, app, &msg_id, endpoint.id).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}

/// The attempts of one message, newest first.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/attempt/msg/{msg_id}",
    params(("app_id" = String, Path), ("msg_id" = String, Path), ListQuery), security(("bearer" = [])),
    responses((status = 200, body = ListResponse<MessageAttemptOut>), (status = 404, body = HttpErrorOut)))]
pub async fn attempts_of_message(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id)): Path<(String, String)>,
    Params(query): Params<ListQuery>,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let app = state.application(caller, &app_id).await?;
    messages::get(&state.pool, app, &msg_id).await?;
    let page = attempts::list(&state.pool, app, Of::Message(&msg_id), &query.page()).await?;
    Ok(Json(ListResponse::of(page, MessageAttemptOut::from)))
}

/// The attempts to one endpoint, newest first.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path), ListQuery), security(("bearer" = [])),
    responses((status = 200, body = ListResponse<MessageAttemptOut>), (status = 404, body = HttpErrorOut)))]
pub async fn attempts_of_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    Params(query): Params<ListQuery>,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let app = state.application(caller, &app_id).await?;
    let endpoint = tenant::find(&state.pool, app, &endpoint_id).await?;
    let page = attempts::list(&state.pool, app, Of::Endpoint(endpoint.id), &query.page()).await?;
    Ok(Json(ListResponse::of(page, MessageAttemptOut::from)))
}

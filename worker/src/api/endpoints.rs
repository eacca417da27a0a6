//! `/api/v1/app/{app_id}/endpoint`: an application's endpoints, their secret and headers.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, HttpErrorOut, HttpValidationError};
use super::extract::{Body, Caller, Params};
use super::models::{
    EndpointHeadersIn, EndpointHeadersOut, EndpointHeadersPatchIn, EndpointIn, EndpointOut, EndpointPatch,
    EndpointSecretOut, EndpointSecretRotateIn, ListQuery, ListResponse, RecoverIn, RecoverOut, metadata_map,
};
use super::state::AppState;
use crate::admin::endpoints::{self, Changes, StateChange, tenant};
use crate::admin::{deliveries, ids};
use crate::policy::signing::SigningSecret;
use crate::policy::states::EndpointState;

/// How long the previous secret keeps signing after a rotation (as in Svix).
const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Refuses a URL the delivering workers would refuse, with their reason.
fn deliverable(state: &AppState, url: &str) -> Result<(), ApiError> {
    let parsed = url::Url::parse(url).map_err(|err| ApiError::invalid("url", format!("not a URL: {err}")))?;
    state.policy.check_url(&parsed).map_err(|refusal| ApiError::invalid("url", refusal.to_string()))
}

fn header_lines(headers: &BTreeMap<String, String>) -> Vec<String> {
    headers.iter().map(|(name, value)| format!("{name}: {value}")).collect()
}

fn secret(text: Option<&str>, field: &str) -> Result<SigningSecret, ApiError> {
    match text {
        Some(text) => SigningSecret::parse(text).map_err(|err| ApiError::invalid(field, err.to_string())),
        None => Ok(SigningSecret::generate()),
    }
}

fn rate_limit(rate: Option<i32>) -> Result<Option<i32>, ApiError> {
    match rate {
        Some(rate) if rate <= 0 => Err(ApiError::invalid("rateLimit", "must be a positive number")),
        rate => Ok(rate),
    }
}

/// A patch's rate limit: absent leaves it, `null` clears it, a value must be positive.
fn rate_limit_change(rate: Option<Option<i32>>) -> Result<Option<Option<i32>>, ApiError> {
    rate.map(rate_limit).transpose()
}

/// Sets the endpoint disabled or enabled as asked (nothing when it already is).
async fn set_disabled(state: &AppState, endpoint: &tenant::Endpoint, disabled: Option<bool>) -> Result<(), ApiError> {
    let change = match (disabled, endpoint.state) {
        (Some(true), EndpointState::Active | EndpointState::Paused) => StateChange::Disable,
        (Some(false), EndpointState::Disabled) => StateChange::Enable,
        _ => return Ok(()),
    };
    endpoints::change_state(&state.pool, endpoint.id, change, Some("through the management API")).await?;
    Ok(())
}

type Found = (uuid::Uuid, tenant::Endpoint);

async fn found(state: &AppState, caller: Caller, app_id: &str, endpoint_id: &str) -> Result<Found, ApiError> {
    let app = state.application(caller, app_id).await?;
    Ok((app, tenant::find(&state.pool, app, endpoint_id).await?))
}

/// List an application's endpoints.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint", params(("app_id" = String, Path), ListQuery),
    security(("bearer" = [])), responses((status = 200, body = ListResponse<EndpointOut>), (status = 404, body = HttpErrorOut)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Params(query): Params<ListQuery>,
) -> Result<Json<ListResponse<EndpointOut>>, ApiError> {
    let app = state.application(caller, &app_id).await?;
    let page = tenant::list(&state.pool, app, &query.page()).await?;
    Ok(Json(ListResponse::of(page, EndpointOut::from)))
}

/// Register an endpoint.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint", params(("app_id" = String, Path)), request_body = EndpointIn,
    security(("bearer" = [])), responses((status = 201, body = EndpointOut), (status = 404, body = HttpErrorOut),
    (status = 409, body = HttpErrorOut), (status = 422, body = HttpValidationError)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Body(input): Body<EndpointIn>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let app = state.application(caller, &app_id).await?;
    deliverable(&state, &input.url)?;
    let signing = secret(input.secret.as_deref(), "secret")?;
    let changes = Changes {
        url: Some(input.url),
        event_types: Some(input.filter_types.unwrap_or_default()),
        description: input.description,
        rate_limit_per_second: rate_limit(input.rate_limit)?.map(Some),
        headers: input.headers.as_ref().map(header_lines),
        application: Some(app),
        uid: Some(input.uid),
        metadata: Some(metadata_map(input.metadata.as_ref())),
        ..Changes::default()
    };
    let id = endpoints::create(&state.pool, &state.key_ring, &changes, &signing).await?;
    let created = tenant::find(&state.pool, app, &ids::endpoint_id(id)).await?;
    set_disabled(&state, &created, input.disabled).await?;
    let shown = tenant::find(&state.pool, app, &ids::endpoint_id(id)).await?;
    Ok((StatusCode::CREATED, Json(shown.into())))
}

/// Get an endpoint by id or uid.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = EndpointOut), (status = 404, body = HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> Result<Json<EndpointOut>, ApiError> {
    Ok(Json(found(&state, caller, &app_id, &endpoint_id).await?.1.into()))
}

/// Change an endpoint (PUT and PATCH alike: fields left out keep their value).
async fn change(
    state: &AppState,
    caller: Caller,
    path: (String, String),
    input: EndpointPatch,
) -> Result<EndpointOut, ApiError> {
    let (app, endpoint) = found(state, caller, &path.0, &path.1).await?;
    if let Some(url) = &input.url {
        deliverable(state, url)?;
    }
    let changes = Changes {
        url: input.url,
        event_types: input.filter_types,
        description: input.description,
        rate_limit_per_second: rate_limit_change(input.rate_limit)?,
        application: Some(app),
        uid: input.uid,
        metadata: input.metadata.map(|m| metadata_map(Some(&m))),
        ..Changes::default()
    };
    endpoints::update(&state.pool, Some(&state.key_ring), endpoint.id, &changes).await?;
    set_disabled(state, &endpoint, input.disabled).await?;
    Ok(tenant::find(&state.pool, app, &ids::endpoint_id(endpoint.id)).await?.into())
}

/// Replace an endpoint's settings.
#[utoipa::path(put, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EndpointIn, security(("bearer" = [])),
    responses((status = 200, body = EndpointOut), (status = 404, body = HttpErrorOut), (status = 422, body = HttpValidationError)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Body(input): Body<EndpointIn>,
) -> Result<Json<EndpointOut>, ApiError> {
    // A replacement: what the body leaves out takes its default (Svix's `EndpointUpdate`).
    let patch = EndpointPatch {
        url: Some(input.url),
        description: Some(input.description.unwrap_or_default()),
        filter_types: Some(input.filter_types.unwrap_or_default()),
        rate_limit: Some(input.rate_limit),
        uid: Some(input.uid),
        disabled: Some(input.disabled.unwrap_or(false)),
        metadata: Some(input.metadata.unwrap_or_default()),
    };
    Ok(Json(change(&state, caller, path, patch).await?))
}

/// Change some of an endpoint's settings.
#[utoipa::path(patch, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EndpointPatch, security(("bearer" = [])),
    responses((status = 200, body = EndpointOut), (status = 404, body = HttpErrorOut), (status = 422, body = HttpValidationError)))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String)>,
    Body(input): Body<EndpointPatch>,
) -> Result<Json<EndpointOut>, ApiError> {
    Ok(Json(change(&state, caller, path, input).await?))
}

/// Delete an endpoint and its queued deliveries.
#[utoipa::path(delete, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = HttpErrorOut)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, endpoint) = found(&state, caller, &app_id, &endpoint_id).await?;
    endpoints::delete(&state.pool, endpoint.id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The secret that signs (shown to the endpoint's owner).
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = EndpointSecretOut), (status = 404, body = HttpErrorOut)))]
pub async fn get_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    let (_, endpoint) = found(&state, caller, &app_id, &endpoint_id).await?;
    let secret = tenant::current_secret(&state.pool, &state.key_ring, &endpoint).await?;
    Ok(Json(EndpointSecretOut { key: secret.expose_whsec().to_string() }))
}

/// Rotate the secret: the new one signs at once, the previous one too for 24 hours. Answers the
/// new secret (as the Svix SDKs expect).
#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EndpointSecretRotateIn,
    security(("bearer" = [])), responses((status = 200, body = EndpointSecretOut), (status = 404, body = HttpErrorOut), (status = 422, body = HttpValidationError)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    Body(input): Body<EndpointSecretRotateIn>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    let (_, endpoint) = found(&state, caller, &app_id, &endpoint_id).await?;
    let signing = secret(input.key.as_deref(), "key")?;
    endpoints::rotate_secret(&state.pool, &state.key_ring, endpoint.id, &signing, ROTATION_GRACE).await?;
    Ok(Json(EndpointSecretOut { key: signing.expose_whsec().to_string() }))
}

/// The custom headers.
#[utoipa::path(get, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = EndpointHeadersOut), (status = 404, body = HttpErrorOut)))]
pub async fn get_headers(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
) -> Result<Json<EndpointHeadersOut>, ApiError> {
    let (_, endpoint) = found(&state, caller, &app_id, &endpoint_id).await?;
    let headers = tenant::headers(&state.pool, &state.key_ring, &endpoint).await?.into_iter().collect();
    Ok(Json(EndpointHeadersOut { headers, sensitive: Vec::new() }))
}

async fn replace_headers(
    state: &AppState,
    endpoint: &tenant::Endpoint,
    headers: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let changes = Changes { headers: Some(header_lines(headers)), ..Changes::default() };
    endpoints::update(&state.pool, Some(&state.key_ring), endpoint.id, &changes).await?;
    Ok(())
}

/// Replace the custom headers.
#[utoipa::path(put, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EndpointHeadersIn,
    security(("bearer" = [])), responses((status = 204), (status = 404, body = HttpErrorOut), (status = 422, body = HttpValidationError)))]
pub async fn put_headers(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    Body(input): Body<EndpointHeadersIn>,
) -> Result<StatusCode, ApiError> {
    let (_, endpoint) = found(&state, caller, &app_id, &endpoint_id).await?;
    replace_headers(&state, &endpoint, &input.headers).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add, change or remove some custom headers.
#[utoipa::path(patch, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = EndpointHeadersPatchIn,
    security(("bearer" = [])), responses((status = 204), (status = 404, body = HttpErrorOut), (status = 422, body = HttpValidationError)))]
pub async fn patch_headers(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    Body(input): Body<EndpointHeadersPatchIn>,
) -> Result<StatusCode, ApiError> {
    let (_, endpoint) = found(&state, caller, &app_id, &endpoint_id).await?;
    let mut headers: BTreeMap<String, String> =
        tenant::headers(&state.pool, &state.key_ring, &endpoint).await?.into_iter().collect();
    headers.extend(input.headers.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)));
    for name in input.delete_headers.unwrap_or_default() {
        headers.remove(&name.to_ascii_lowercase());
    }
    replace_headers(&state, &endpoint, &headers).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replay what failed (its dead letters) since a time.
#[utoipa::path(post, path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover",
    params(("app_id" = String, Path), ("endpoint_id" = String, Path)), request_body = RecoverIn, security(("bearer" = [])),
    responses((status = 202, body = RecoverOut), (status = 404, body = HttpErrorOut), (status = 422, body = HttpValidationError)))]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    Body(input): Body<RecoverIn>,
) -> Result<(StatusCode, Json<RecoverOut>), ApiError> {
    let (_, endpoint) = found(&state, caller, &app_id, &endpoint_id).await?;
    let replayed = deliveries::replay_matching(&state.pool, Some(endpoint.id), Some(input.since), input.until)
        .await
        .map_err(|err| ApiError::Internal(err.to_string()))?;
    tracing::info!(endpoint.id = %endpoint.id, replayed = replayed.replayed.len(), "Recovered failed deliveries");
    let task = format!("qtask_{}", uuid::Uuid::new_v4().simple());
    let out = RecoverOut {
        id: task,
        status: "finished".into(),
        task: "endpoint.recover".into(),
        updated_at: chrono::Utc::now(),
    };
    Ok((StatusCode::ACCEPTED, Json(out)))
}

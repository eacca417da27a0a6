//! `/api/v1/app`: applications.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::ApiError;
use super::extract::{Body, Caller, Params};
use super::models::{
    ApplicationIn, ApplicationOut, ApplicationPatch, CreateAppQuery, ListQuery, ListResponse, metadata_map,
};
use super::state::AppState;
use crate::admin::applications::{self, Settings};

fn settings(input: ApplicationIn) -> Settings {
    Settings {
        name: input.name,
        uid: input.uid,
        rate_limit_per_second: input.rate_limit,
        metadata: metadata_map(input.metadata.as_ref()),
    }
}

/// List the applications the token may see.
#[utoipa::path(get, path = "/api/v1/app", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = ListResponse<ApplicationOut>), (status = 401, body = super::error::HttpErrorOut)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<ListResponse<ApplicationOut>>, ApiError> {
    let page = applications::list(&state.pool, caller.0, &query.page()).await?;
    Ok(Json(ListResponse::of(page, ApplicationOut::from)))
}

/// Create an application (`get_if_exists=true`: return the one with the same uid instead).
#[utoipa::path(post, path = "/api/v1/app", params(CreateAppQuery), request_body = ApplicationIn, security(("bearer" = [])),
    responses((status = 201, body = ApplicationOut), (status = 200, body = ApplicationOut),
              (status = 409, body = super::error::HttpErrorOut), (status = 422, body = super::error::HttpValidationError)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Params(query): Params<CreateAppQuery>,
    Body(input): Body<ApplicationIn>,
) -> Result<(StatusCode, Json<ApplicationOut>), ApiError> {
    let get_if_exists = query.get_if_exists.unwrap_or(false);
    let (app, created) = applications::create(&state.pool, caller.0, &settings(input), get_if_exists).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(app.into())))
}

/// Get an application by id or uid.
#[utoipa::path(get, path = "/api/v1/app/{app_id}", params(("app_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ApplicationOut), (status = 404, body = super::error::HttpErrorOut)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<Json<ApplicationOut>, ApiError> {
    Ok(Json(applications::find(&state.pool, caller.0, &app_id).await?.into()))
}

/// Replace an application's settings.
#[utoipa::path(put, path = "/api/v1/app/{app_id}", params(("app_id" = String, Path)), request_body = ApplicationIn,
    security(("bearer" = [])), responses((status = 200, body = ApplicationOut), (status = 404, body = super::error::HttpErrorOut),
    (status = 409, body = super::error::HttpErrorOut), (status = 422, body = super::error::HttpValidationError)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Body(input): Body<ApplicationIn>,
) -> Result<Json<ApplicationOut>, ApiError> {
    Ok(Json(applications::replace(&state.pool, caller.0, &app_id, &settings(input)).await?.into()))
}

/// Change some of an application's settings.
#[utoipa::path(patch, path = "/api/v1/app/{app_id}", params(("app_id" = String, Path)), request_body = ApplicationPatch,
    security(("bearer" = [])), responses((status = 200, body = ApplicationOut), (status = 404, body = super::error::HttpErrorOut),
    (status = 409, body = super::error::HttpErrorOut), (status = 422, body = super::error::HttpValidationError)))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Body(input): Body<ApplicationPatch>,
) -> Result<Json<ApplicationOut>, ApiError> {
    let current = applications::find(&state.pool, caller.0, &app_id).await?;
    let merged = Settings {
        name: input.name.unwrap_or(current.name),
        uid: input.uid.or(current.uid),
        rate_limit_per_second: input.rate_limit.or(current.rate_limit_per_second),
        metadata: input.metadata.map_or(current.metadata.0, |m| metadata_map(Some(&m))),
    };
    Ok(Json(applications::replace(&state.pool, caller.0, &app_id, &merged).await?.into()))
}

/// Delete an application with its endpoints.
#[utoipa::path(delete, path = "/api/v1/app/{app_id}", params(("app_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = super::error::HttpErrorOut), (status = 404, body = super::error::HttpErrorOut)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    applications::delete(&state.pool, caller.0, &app_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! The OpenAPI document, generated from the handlers' own types (utoipa), at
//! `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{applications, catalog, endpoints, messages};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "webhook-delivery management API", description = "The Svix v1 API for the resources webhook-delivery has."),
    paths(
        applications::list, applications::create, applications::get, applications::update, applications::patch,
        applications::delete,
        endpoints::list, endpoints::create, endpoints::get, endpoints::update, endpoints::patch, endpoints::delete,
        endpoints::get_secret, endpoints::rotate_secret, endpoints::get_headers, endpoints::put_headers,
        endpoints::patch_headers, endpoints::recover,
        messages::create, messages::list, messages::get, messages::resend, messages::attempts_of_message,
        messages::attempts_of_endpoint,
        catalog::list, catalog::create, catalog::get, catalog::health,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

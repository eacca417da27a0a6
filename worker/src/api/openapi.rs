//! The OpenAPI document, generated from the handlers' own types (utoipa), at
//! `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
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
    components(schemas(super::error::HttpErrorOut, super::error::HttpValidationError, super::error::ValidationError)),
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
        // Every operation can answer these, whatever its own list says.
        let error = |text: &str, schema: &str| {
            ResponseBuilder::new()
                .description(text)
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build())
                .build()
        };
        let common = [
            ("401", error("No token, or an unknown or revoked one", "HttpErrorOut")),
            ("403", error("The token may not do this", "HttpErrorOut")),
            ("404", error("Nothing this token may see has this id", "HttpErrorOut")),
            ("409", error("A uid or name is taken", "HttpErrorOut")),
            ("413", error("The body is over the limit", "HttpErrorOut")),
            ("422", error("A field is invalid (`detail[].loc` names it)", "HttpValidationError")),
            ("429", error("Too many requests", "HttpErrorOut")),
            ("503", error("The database does not answer", "HttpErrorOut")),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                for (status, response) in &common {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

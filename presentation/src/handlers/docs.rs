//! `GET /api-docs/openapi.json` (the OpenAPI 3.1 document, [`crate::openapi`]), `GET /docs`
//! (a Swagger UI page that renders it) and `GET /docs/{*file}` (the page's assets).
//!
//! The assets are Swagger UI's distribution, compiled into the binary (the
//! `utoipa-swagger-ui` crate with its `vendored` feature: nothing is downloaded at build time
//! and the page loads nothing from elsewhere). The routes are public, like `/health`: the
//! document describes the API, not anyone's data, and a client needs it before it has a
//! credential. They are rate-limited like every public route but the health probes.

use std::sync::{Arc, OnceLock};

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use crate::access::Access::Public;
use crate::error::ApiError;
use crate::extract::PathParam;
use crate::openapi::{DOCUMENT_PATH, document_json};
use crate::routes::{Route, Routes};

/// The docs routes.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api-docs/openapi.json", Public)
                .summary("This OpenAPI document")
                .returns::<OpenApiDocument>(),
            openapi_json,
        )
        .add(
            Route::get("/docs", Public)
                .summary("The docs page (Swagger UI) of this document")
                .media_type("text/html"),
            page,
        )
        .add(
            Route::get("/docs/{*file}", Public)
                .summary("An asset of the docs page")
                .media_type("*/*"),
            asset,
        )
}

/// The OpenAPI document's top level (what is inside each member is the OpenAPI 3.1
/// specification's).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: `openapi::document_json` writes the document.
pub struct OpenApiDocument {
    /// `3.1.0`.
    openapi: String,
    #[schema(schema_with = crate::openapi::any_object)]
    info: (),
    #[schema(schema_with = crate::openapi::any_object)]
    paths: (),
    #[schema(schema_with = crate::openapi::any_object)]
    components: (),
    tags: Vec<OpenApiTag>,
}

/// A tag of the document (the first segment of a path: `events`, `tenants`, ...).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only
pub struct OpenApiTag {
    name: String,
}

/// `GET /api-docs/openapi.json`.
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document_json(),
    )
        .into_response()
}

/// The page: Swagger UI's own assets, by absolute path, so `/docs` and `/docs/` both work.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>AllSource API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script src="/docs/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"#;

/// `GET /docs`.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from(DOCUMENT_PATH)))
        .clone()
}

/// `GET /docs/{*file}`: one file of Swagger UI's distribution, or 404.
pub async fn asset(PathParam(file): PathParam) -> Result<Response, ApiError> {
    // `index.html` is the distribution's own page, with relative links; `/docs` is ours.
    if file.is_empty() || file == "index.html" {
        return Ok(page().await.into_response());
    }
    match utoipa_swagger_ui::serve(&file, swagger_config()) {
        Ok(Some(asset)) => {
            let content_type = HeaderValue::from_str(&asset.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            Ok((
                [(header::CONTENT_TYPE, content_type)],
                asset.bytes.into_owned(),
            )
                .into_response())
        }
        Ok(None) => Err(ApiError::not_found(format!("no docs asset {file:?}"))),
        Err(error) => Err(ApiError::internal(anyhow::anyhow!(
            "docs asset {file:?}: {error}"
        ))),
    }
}

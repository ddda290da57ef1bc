//! The schema registry over HTTP:
//!
//! - `POST /api/v1/schemas` `{"subject" | "event_type", "schema", "compatibility"?, "enforce"?}`
//!   → `201` with the new version (and a `Location`), or `200` with the existing version when
//!   the same schema is registered already; `400` for an invalid schema (fields
//!   `schema/<pointer>`), `409` `conflict` when incompatible (`errors` name where, in the new
//!   schema, and against which version).
//! - `GET /api/v1/schemas` → `{"subjects": [{"subject", "latest_version", "versions",
//!   "compatibility", "enforce"}], "total"}`.
//! - `GET /api/v1/schemas/{subject}?version=N` → one version, the latest by default.
//! - `GET /api/v1/schemas/{subject}/versions` → `{"subject", "versions": [1, 2]}`.
//! - `POST /api/v1/schemas/validate` `{"subject", "payload", "version"?}` → `200 {"valid",
//!   "subject", "version", "errors": [{"field": "payload/<pointer>", "message"}]}`, whether the
//!   payload is valid or not (the request succeeded; the verdict is in the body).
//! - `PUT /api/v1/schemas/{subject}/compatibility` `{"compatibility"?, "enforce"?}` → `200
//!   {"subject", "compatibility", "enforce"}`.

use allsource_application::use_cases::{
    ConfigureSubjectInput, RegisterSchemaInput, SchemaError, SchemaView, ValidateInput,
};
use allsource_domain::Permission::{ManageSchemas, Read};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The registry's routes, merged into the router.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::post("/api/v1/schemas", Requires(ManageSchemas)).responds(&[201, 200]),
            register,
        )
        .get("/api/v1/schemas", Requires(Read), list)
        .add(
            Route::post("/api/v1/schemas/validate", Requires(Read)).problems(&[404]),
            validate,
        )
        .add(
            Route::get("/api/v1/schemas/{subject}", Requires(Read)).params::<VersionParams>(),
            schema,
        )
        .get(
            "/api/v1/schemas/{subject}/versions",
            Requires(Read),
            versions,
        )
        .put(
            "/api/v1/schemas/{subject}/compatibility",
            Requires(ManageSchemas),
            configure,
        )
}

impl From<SchemaError> for ApiError {
    fn from(e: SchemaError) -> Self {
        match e {
            SchemaError::Invalid(errors) => Self::validation(errors),
            SchemaError::NotFound(what) => Self::not_found(what),
            SchemaError::Incompatible {
                subject,
                mode,
                errors,
            } => Self::conflict(format!(
                "the schema is not {mode}-compatible with the registered versions of \
                 '{subject}'; see errors (change the mode with PUT \
                 /api/v1/schemas/{subject}/compatibility)"
            ))
            .with_member("subject", subject.as_str())
            .with_member("compatibility", mode.as_str())
            .with_errors(errors),
            SchemaError::Conflict(detail) => Self::conflict(detail),
            SchemaError::Unavailable(reason) => Self::unavailable(reason),
            SchemaError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// A present `null` is the JSON value `null`, not an absent field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSchemaRequest {
    pub subject: Option<String>,
    pub event_type: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub schema: Option<Value>,
    pub compatibility: Option<String>,
    pub enforce: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub subject: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub payload: Option<Value>,
    pub version: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigureRequest {
    pub compatibility: Option<String>,
    pub enforce: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionParams {
    pub version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SchemaResponse {
    pub subject: String,
    pub version: u32,
    pub schema: Value,
    pub compatibility: &'static str,
    pub enforce: bool,
    pub registered_at: String,
}

impl From<SchemaView> for SchemaResponse {
    fn from(v: SchemaView) -> Self {
        Self {
            subject: v.subject.as_str().to_owned(),
            version: v.version,
            schema: v.schema,
            compatibility: v.compatibility.as_str(),
            enforce: v.enforce,
            registered_at: crate::dto::timestamp(v.registered_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct FieldErrorResponse {
    field: String,
    message: String,
}

/// `POST /api/v1/schemas`.
pub async fn register(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(request): JsonBody<RegisterSchemaRequest>,
) -> Result<Response, ApiError> {
    let registered = state
        .schemas
        .register(
            &caller,
            RegisterSchemaInput {
                subject: request.subject,
                event_type: request.event_type,
                schema: request.schema,
                compatibility: request.compatibility,
                enforce: request.enforce,
            },
        )
        .await?;
    let location = format!(
        "/api/v1/schemas/{}?version={}",
        registered.schema.subject, registered.schema.version
    );
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, Json(SchemaResponse::from(registered.schema))).into_response();
    // Subjects are `[A-Za-z0-9._-]`: always a valid header value.
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/v1/schemas`.
pub async fn list(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let subjects = state.schemas.list(&caller).await?;
    let total = subjects.len();
    let subjects: Vec<Value> = subjects
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "subject": s.subject.as_str(),
                "latest_version": s.latest_version,
                "versions": s.versions,
                "compatibility": s.compatibility.as_str(),
                "enforce": s.enforce,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({"subjects": subjects, "total": total})).into_response())
}

/// `GET /api/v1/schemas/{subject}?version=N`.
pub async fn schema(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(subject): PathParam,
    Params(params): Params<VersionParams>,
) -> Result<Response, ApiError> {
    let view = state
        .schemas
        .get(&caller, &subject, params.version.as_deref())
        .await?;
    Ok(Json(SchemaResponse::from(view)).into_response())
}

/// `GET /api/v1/schemas/{subject}/versions`.
pub async fn versions(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(subject): PathParam,
) -> Result<Response, ApiError> {
    let (subject, versions) = state.schemas.versions(&caller, &subject).await?;
    Ok(
        Json(serde_json::json!({"subject": subject.as_str(), "versions": versions}))
            .into_response(),
    )
}

/// `POST /api/v1/schemas/validate`.
pub async fn validate(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(request): JsonBody<ValidateRequest>,
) -> Result<Response, ApiError> {
    let report = state
        .schemas
        .validate(
            &caller,
            ValidateInput {
                subject: request.subject,
                payload: request.payload,
                version: request.version,
            },
        )
        .await?;
    let errors: Vec<FieldErrorResponse> = report
        .errors
        .into_iter()
        .map(|e| FieldErrorResponse {
            field: e.field,
            message: e.message,
        })
        .collect();
    Ok(Json(serde_json::json!({
        "valid": errors.is_empty(),
        "subject": report.subject.as_str(),
        "version": report.version,
        "errors": errors,
    }))
    .into_response())
}

/// `PUT /api/v1/schemas/{subject}/compatibility`.
pub async fn configure(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(subject): PathParam,
    JsonBody(request): JsonBody<ConfigureRequest>,
) -> Result<Response, ApiError> {
    let config = state
        .schemas
        .configure(
            &caller,
            &subject,
            ConfigureSubjectInput {
                compatibility: request.compatibility,
                enforce: request.enforce,
            },
        )
        .await?;
    Ok(Json(serde_json::json!({
        "subject": config.subject.as_str(),
        "compatibility": config.compatibility.as_str(),
        "enforce": config.enforce,
    }))
    .into_response())
}

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
use allsource_domain::schema::CompatibilityMode;
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
use crate::openapi::string_enum;
use crate::routes::{Route, Routes};

/// The registry's routes, merged into the router.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::post("/api/v1/schemas", Requires(ManageSchemas))
                .body::<RegisterSchemaRequest>()
                .returns::<SchemaResponse>()
                .responds(&[201, 200])
                .problems(&[409]),
            register,
        )
        .add(
            Route::get("/api/v1/schemas", Requires(Read)).returns::<SubjectListResponse>(),
            list,
        )
        .add(
            Route::post("/api/v1/schemas/validate", Requires(Read))
                .body::<ValidateRequest>()
                .returns::<ValidationResponse>()
                .problems(&[404]),
            validate,
        )
        .add(
            Route::get("/api/v1/schemas/{subject}", Requires(Read))
                .params::<VersionParams>()
                .returns::<SchemaResponse>(),
            schema,
        )
        .add(
            Route::get("/api/v1/schemas/{subject}/versions", Requires(Read))
                .returns::<VersionsResponse>(),
            versions,
        )
        .add(
            Route::put(
                "/api/v1/schemas/{subject}/compatibility",
                Requires(ManageSchemas),
            )
            .body::<ConfigureRequest>()
            .returns::<SubjectConfigResponse>()
            .problems(&[409]),
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

/// The compatibility modes (case-insensitive in requests).
const MODES: [CompatibilityMode; 4] = [
    CompatibilityMode::None,
    CompatibilityMode::Backward,
    CompatibilityMode::Forward,
    CompatibilityMode::Full,
];

fn mode() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    string_enum(MODES.map(CompatibilityMode::as_str), false)
}

/// In requests the modes are case-insensitive (`backward` is `BACKWARD`): a pattern, since a
/// JSON Schema `enum` is not.
fn mode_or_null() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let words: Vec<String> = MODES
        .map(CompatibilityMode::as_str)
        .iter()
        .map(|word| {
            word.chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
                .collect()
        })
        .collect();
    crate::openapi::pattern_string(&format!("^(?:{})$", words.join("|")), 8, true)
}

/// The body of `POST /api/v1/schemas`: `subject` or `event_type` (the same thing, by
/// either name), and the schema.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterSchemaRequest {
    #[schema(schema_with = crate::openapi::event_type_or_null)]
    pub subject: Option<String>,
    #[schema(schema_with = crate::openapi::event_type_or_null)]
    pub event_type: Option<String>,
    /// A JSON Schema (draft 2020-12) document (required).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::openapi::any_value, required = true)]
    pub schema: Option<Value>,
    /// The subject's mode (default `BACKWARD` for a new subject; case-insensitive).
    #[schema(schema_with = mode_or_null)]
    pub compatibility: Option<String>,
    /// Whether appends of the subject's event type are validated (default `true`).
    pub enforce: Option<bool>,
}

/// The body of `POST /api/v1/schemas/validate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    #[schema(schema_with = crate::openapi::event_type, required = true)]
    pub subject: Option<String>,
    /// The document to validate (required; `null` is a document).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::openapi::any_value, required = true)]
    pub payload: Option<Value>,
    /// Default: the latest.
    pub version: Option<u64>,
}

/// The body of `PUT /api/v1/schemas/{subject}/compatibility`: what is sent changes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureRequest {
    #[schema(schema_with = mode_or_null)]
    pub compatibility: Option<String>,
    pub enforce: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionParams {
    pub version: Option<String>,
}

/// One version of a subject's schema.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SchemaResponse {
    pub subject: String,
    pub version: u32,
    /// The JSON Schema document, as registered.
    #[schema(schema_with = crate::openapi::any_value)]
    pub schema: Value,
    #[schema(schema_with = mode)]
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

/// Where a payload fails its schema: `field` is `payload/<JSON pointer>`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct FieldErrorResponse {
    field: String,
    message: String,
}

/// The verdict of `POST /api/v1/schemas/validate` (valid or not, the request succeeded).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ValidationResponse<'a> {
    valid: bool,
    subject: &'a str,
    version: u32,
    errors: Vec<FieldErrorResponse>,
}

/// One subject of `GET /api/v1/schemas`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SubjectResponse<'a> {
    subject: &'a str,
    latest_version: u32,
    /// How many versions it has.
    versions: usize,
    #[schema(schema_with = mode)]
    compatibility: &'static str,
    enforce: bool,
}

/// `GET /api/v1/schemas`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SubjectListResponse<'a> {
    subjects: Vec<SubjectResponse<'a>>,
    total: usize,
}

/// `GET /api/v1/schemas/{subject}/versions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct VersionsResponse<'a> {
    subject: &'a str,
    versions: Vec<u32>,
}

/// A subject's configuration.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SubjectConfigResponse<'a> {
    subject: &'a str,
    #[schema(schema_with = mode)]
    compatibility: &'static str,
    enforce: bool,
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
    let subjects: Vec<SubjectResponse<'_>> = subjects
        .iter()
        .map(|s| SubjectResponse {
            subject: s.subject.as_str(),
            latest_version: s.latest_version,
            versions: s.versions,
            compatibility: s.compatibility.as_str(),
            enforce: s.enforce,
        })
        .collect();
    Ok(Json(SubjectListResponse {
        total: subjects.len(),
        subjects,
    })
    .into_response())
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
    Ok(Json(VersionsResponse {
        subject: subject.as_str(),
        versions,
    })
    .into_response())
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
    Ok(Json(ValidationResponse {
        valid: errors.is_empty(),
        subject: report.subject.as_str(),
        version: report.version,
        errors,
    })
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
    Ok(Json(SubjectConfigResponse {
        subject: config.subject.as_str(),
        compatibility: config.compatibility.as_str(),
        enforce: config.enforce,
    })
    .into_response())
}

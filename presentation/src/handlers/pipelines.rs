//! `POST|GET /api/v1/pipelines`, `GET|PUT|DELETE /api/v1/pipelines/{id}`,
//! `GET /api/v1/pipelines/stats`, `GET /api/v1/pipelines/{id}/stats`,
//! `PUT /api/v1/pipelines/{id}/reset`, `GET /api/v1/pipelines/{id}/results?limit&after`.
//!
//! Reads need `read`; changes need `manage_pipelines`. A created pipeline answers `201` with a
//! `Location`. A pipeline is shown as its definition's canonical JSON plus `id`, `enabled`,
//! `status`, `generation`, `position` and the times.

use allsource_application::pipelines::{
    Failure, PipelineError, PipelineInput, PipelineStats, PipelineView, ResultsPage,
};
use allsource_domain::Permission::{ManagePipelines, Read};
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use uuid::Uuid;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::openapi::string_enum;
use crate::routes::{Route, Routes};

/// The pipeline routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/pipelines", Requires(Read)).returns::<PipelineListResponse>(),
            list,
        )
        .add(
            Route::post("/api/v1/pipelines", Requires(ManagePipelines))
                .body::<PipelineBody>()
                .returns::<PipelineDoc>()
                .responds(&[201])
                .problems(&[409]),
            create,
        )
        .add(
            Route::get("/api/v1/pipelines/stats", Requires(Read))
                .returns::<PipelineStatsListResponse>(),
            all_stats,
        )
        .add(
            Route::get("/api/v1/pipelines/{id}", Requires(Read)).returns::<PipelineDoc>(),
            one,
        )
        .add(
            Route::put("/api/v1/pipelines/{id}", Requires(ManagePipelines))
                .body::<PipelineBody>()
                .returns::<PipelineDoc>()
                .problems(&[409]),
            update,
        )
        .add(
            Route::delete("/api/v1/pipelines/{id}", Requires(ManagePipelines))
                .responds(&[204])
                .problems(&[409]),
            delete,
        )
        .add(
            Route::get("/api/v1/pipelines/{id}/stats", Requires(Read))
                .returns::<PipelineStatsResponse>(),
            stats,
        )
        .add(
            Route::put("/api/v1/pipelines/{id}/reset", Requires(ManagePipelines))
                .body::<ResetBody>()
                .optional_body()
                .returns::<PipelineDoc>()
                .problems(&[409]),
            reset,
        )
        .add(
            Route::get("/api/v1/pipelines/{id}/results", Requires(Read))
                .params::<ResultsParams>()
                .returns::<ResultsPageResponse>(),
            results,
        )
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Invalid(errors) => Self::validation(errors),
            PipelineError::NotFound(what) => Self::not_found(what),
            PipelineError::Conflict(what) => Self::conflict(what),
            PipelineError::Gate(gate) => gate.into(),
            PipelineError::Unavailable(why) => Self::unavailable(why),
            PipelineError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// The operators' `type`s.
const OPERATOR_TYPES: [&str; 9] = [
    "filter", "map", "flat_map", "enrich", "dedupe", "throttle", "window", "reduce", "branch",
];

/// An operator: an object with its `type` and the members of that type (PIPELINES.md; the
/// use case names every unknown or bad member).
fn operator() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("type", string_enum(OPERATOR_TYPES, false))
            .required("type")
            .build(),
    ))
}

fn operators() -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(operator())
            .build(),
    ))
}

fn on_error() -> RefOr<Schema> {
    string_enum(["skip", "pause"], false)
}

fn on_error_or_null() -> RefOr<Schema> {
    string_enum(["skip", "pause"], true)
}

/// Where processing starts: after a position (`0`: every stored event), or `"now"`; `null` is
/// the default (0).
fn from_position() -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
                    .enum_values(Some([Value::from("now"), Value::Null])),
            )
            .build(),
    ))
}

/// The body of `POST /api/v1/pipelines` and `PUT /api/v1/pipelines/{id}`. `name`,
/// `source_event_types` and `operators` are required (the use case names them when missing);
/// `output` too, unless the last operator is a `branch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    /// A UUID chosen by the client (`POST` only; default: a UUIDv7).
    #[serde(default)]
    pub id: Option<String>,
    /// 1–128 characters of `[A-Za-z0-9._:-]`, unique in the tenant.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::name, required = true)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Type filters (`x`, `x.*`, `*`); `[]` takes every type.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::type_filters, required = true)]
    pub source_event_types: Option<Vec<String>>,
    /// The operators, in order (may be `[]`).
    #[serde(default)]
    #[schema(schema_with = operators, required = true)]
    pub operators: Option<Vec<Value>>,
    #[serde(default)]
    #[schema(value_type = Option<OutputDoc>)]
    pub output: Option<Value>,
    /// Default `skip`.
    #[serde(default)]
    #[schema(schema_with = on_error_or_null)]
    pub on_error: Option<String>,
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schema(schema_with = from_position)]
    pub from_position: Option<Value>,
}

fn output_type() -> RefOr<Schema> {
    string_enum(["events", "table"], false)
}

/// A pipeline's output: derived events (`{"type": "events", "event_type",
/// "entity_id_field"?}`) or a result table (`{"type": "table"}`).
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the domain reads and writes outputs.
pub struct OutputDoc {
    #[schema(rename = "type", schema_with = output_type)]
    kind: String,
    /// With `events`: the derived events' type.
    #[schema(nullable = false)]
    event_type: Option<String>,
    /// With `events`: the path of the entity id (default: the source event's).
    #[schema(nullable = false)]
    entity_id_field: Option<String>,
}

fn pipeline_status() -> RefOr<Schema> {
    string_enum(["running", "paused", "disabled"], false)
}

/// A pipeline: its definition in canonical form (every default written out), then its run.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: `pipeline_json` writes the domain's canonical JSON.
pub struct PipelineDoc {
    id: Uuid,
    name: String,
    /// Absent without a description.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    description: Option<String>,
    source_event_types: Vec<String>,
    #[schema(schema_with = operators)]
    operators: Vec<Value>,
    /// Absent when the last operator is a `branch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    output: Option<OutputDoc>,
    #[schema(schema_with = on_error)]
    on_error: String,
    enabled: bool,
    #[schema(schema_with = pipeline_status)]
    status: String,
    generation: u64,
    /// The checkpoint: every matching event at or below it is processed.
    position: u64,
    created_at: String,
    updated_at: String,
}

/// `GET /api/v1/pipelines`, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PipelineListResponse {
    pub total: usize,
    #[schema(value_type = Vec<PipelineDoc>)]
    pub pipelines: Vec<Value>,
}

impl From<PipelineBody> for PipelineInput {
    fn from(b: PipelineBody) -> Self {
        Self {
            id: b.id,
            name: b.name,
            description: b.description,
            source_event_types: b.source_event_types,
            operators: b.operators,
            output: b.output,
            on_error: b.on_error,
            enabled: b.enabled,
            from_position: b.from_position,
        }
    }
}

/// The optional body of `PUT /api/v1/pipelines/{id}/reset` (empty: the defaults).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    #[serde(default)]
    #[schema(schema_with = from_position)]
    pub from_position: Option<Value>,
}

/// Query parameters of `GET /api/v1/pipelines/{id}/results`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    pub limit: Option<String>,
    pub after: Option<String>,
}

/// A pipeline as JSON: its definition's members, then its run.
pub fn pipeline_json(view: &PipelineView) -> Value {
    let mut out = json!({"id": view.id});
    if let (Some(out), Some(definition)) = (out.as_object_mut(), view.definition.as_object()) {
        out.extend(definition.clone());
        out.insert("enabled".into(), json!(view.enabled));
        out.insert("status".into(), json!(view.status));
        out.insert("generation".into(), json!(view.generation));
        out.insert("position".into(), json!(view.position));
        out.insert("created_at".into(), json!(timestamp(view.created_at)));
        out.insert("updated_at".into(), json!(timestamp(view.updated_at)));
    }
    out
}

/// A record an operator or an output failed on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailureResponse<'a> {
    pub position: u64,
    pub event_id: Uuid,
    /// The operator's index; `null` for an output.
    #[schema(required = true)]
    pub operator: Option<usize>,
    pub message: &'a str,
    pub at: String,
}

impl<'a> From<&'a Failure> for FailureResponse<'a> {
    fn from(f: &'a Failure) -> Self {
        Self {
            position: f.position,
            event_id: f.event_id,
            operator: f.operator,
            message: &f.message,
            at: timestamp(f.at),
        }
    }
}

/// A pipeline's figures (this generation's).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PipelineStatsResponse<'a> {
    pub pipeline_id: Uuid,
    pub name: &'a str,
    #[schema(schema_with = pipeline_status)]
    pub status: &'static str,
    pub generation: u64,
    pub events_processed: u64,
    pub filtered: u64,
    pub failed: u64,
    pub emitted: u64,
    pub late: u64,
    pub position: u64,
    #[schema(required = true)]
    pub last_processed: Option<String>,
    /// Matching events after the checkpoint (counted up to 10,000; `lag_capped` beyond).
    pub lag: u64,
    pub lag_capped: bool,
    /// The age of the oldest of them (0 when caught up).
    pub lag_seconds: f64,
    #[schema(required = true)]
    pub last_error: Option<FailureResponse<'a>>,
    /// The newest failures, oldest first.
    pub failed_events: Vec<FailureResponse<'a>>,
}

impl<'a> From<&'a PipelineStats> for PipelineStatsResponse<'a> {
    fn from(s: &'a PipelineStats) -> Self {
        Self {
            pipeline_id: s.id,
            name: &s.name,
            status: s.status,
            generation: s.generation,
            events_processed: s.counters.processed,
            filtered: s.counters.filtered,
            failed: s.counters.failed,
            emitted: s.counters.emitted,
            late: s.counters.late,
            position: s.position,
            last_processed: s.last_processed.map(timestamp),
            lag: s.lag,
            lag_capped: s.lag_capped,
            lag_seconds: s.lag_seconds,
            last_error: s.failures.last().map(FailureResponse::from),
            failed_events: s.failures.iter().map(FailureResponse::from).collect(),
        }
    }
}

/// `GET /api/v1/pipelines/stats`, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PipelineStatsListResponse<'a> {
    pub total: usize,
    pub pipelines: Vec<PipelineStatsResponse<'a>>,
}

/// One row of a result table: the latest result of its group.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultRowResponse<'a> {
    pub key: &'a str,
    #[schema(schema_with = crate::openapi::any_value)]
    pub value: &'a Value,
    /// The source event it includes last.
    pub position: u64,
    pub updated_at: String,
}

/// `GET /api/v1/pipelines/{id}/results`, in key order. `next_after` is the last key of the
/// page when more follow (pass it as `after`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultsPageResponse<'a> {
    pub pipeline_id: Uuid,
    pub count: usize,
    pub has_more: bool,
    #[schema(required = true)]
    pub next_after: Option<&'a str>,
    pub results: Vec<ResultRowResponse<'a>>,
}

impl<'a> From<&'a ResultsPage> for ResultsPageResponse<'a> {
    fn from(page: &'a ResultsPage) -> Self {
        Self {
            pipeline_id: page.id,
            count: page.rows.len(),
            has_more: page.has_more,
            next_after: if page.has_more {
                page.rows.last().map(|r| r.key.as_str())
            } else {
                None
            },
            results: page
                .rows
                .iter()
                .map(|r| ResultRowResponse {
                    key: &r.key,
                    value: &r.value,
                    position: r.position,
                    updated_at: timestamp(r.updated_at),
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/pipelines`: the tenant's pipelines, oldest first.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.pipelines.list(&caller).await?;
    let pipelines: Vec<Value> = views.iter().map(pipeline_json).collect();
    Ok(Json(PipelineListResponse {
        total: pipelines.len(),
        pipelines,
    })
    .into_response())
}

/// `POST /api/v1/pipelines`: registers a pipeline (`201` with a `Location`).
pub async fn create(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<PipelineBody>,
) -> Result<Response, ApiError> {
    let view = app.pipelines.create(&caller, body.into()).await?;
    let mut response = (StatusCode::CREATED, Json(pipeline_json(&view))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/pipelines/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/pipelines/{id}`.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let view = app.pipelines.get(&caller, &id).await?;
    Ok(Json(pipeline_json(&view)).into_response())
}

/// `PUT /api/v1/pipelines/{id}`: replaces the definition; a changed one restarts.
pub async fn update(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<PipelineBody>,
) -> Result<Response, ApiError> {
    let view = app.pipelines.update(&caller, &id, body.into()).await?;
    Ok(Json(pipeline_json(&view)).into_response())
}

/// `DELETE /api/v1/pipelines/{id}`.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    app.pipelines.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/v1/pipelines/{id}/reset`: a new generation from `from_position` (default 0).
pub async fn reset(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    request: Request,
) -> Result<Response, ApiError> {
    // The body is optional: an empty one (whatever its content type) means the defaults.
    let (parts, body) = request.into_parts();
    let limit = parts
        .extensions
        .get::<crate::HttpLimits>()
        .map_or(usize::MAX, |l| l.max_body_bytes);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            ApiError::payload_too_large(format!(
                "the request body is over the limit of {limit} bytes"
            ))
        } else {
            ApiError::invalid("body", e.to_string())
        }
    })?;
    let from = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let JsonBody(body) = JsonBody::<ResetBody>::from_request(request, &()).await?;
        body.from_position
    };
    let view = app.pipelines.reset(&caller, &id, from).await?;
    Ok(Json(pipeline_json(&view)).into_response())
}

/// `GET /api/v1/pipelines/{id}/stats`.
pub async fn stats(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let stats = app.pipelines.stats(&caller, &id).await?;
    Ok(Json(PipelineStatsResponse::from(&stats)).into_response())
}

/// `GET /api/v1/pipelines/stats`: every pipeline's figures.
pub async fn all_stats(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let all = app.pipelines.all_stats(&caller).await?;
    let pipelines: Vec<PipelineStatsResponse<'_>> =
        all.iter().map(PipelineStatsResponse::from).collect();
    Ok(Json(PipelineStatsListResponse {
        total: pipelines.len(),
        pipelines,
    })
    .into_response())
}

/// `GET /api/v1/pipelines/{id}/results?limit&after`: the latest result per group.
pub async fn results(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    Params(params): Params<ResultsParams>,
) -> Result<Response, ApiError> {
    let page = app
        .pipelines
        .results(
            &caller,
            &id,
            params.limit.as_deref(),
            params.after.as_deref(),
        )
        .await?;
    Ok(Json(ResultsPageResponse::from(&page)).into_response())
}

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
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The pipeline routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/pipelines", Requires(Read), list)
        .add(
            Route::post("/api/v1/pipelines", Requires(ManagePipelines)).responds(&[201]),
            create,
        )
        .get("/api/v1/pipelines/stats", Requires(Read), all_stats)
        .get("/api/v1/pipelines/{id}", Requires(Read), one)
        .put("/api/v1/pipelines/{id}", Requires(ManagePipelines), update)
        .add(
            Route::delete("/api/v1/pipelines/{id}", Requires(ManagePipelines)).responds(&[204]),
            delete,
        )
        .get("/api/v1/pipelines/{id}/stats", Requires(Read), stats)
        .put(
            "/api/v1/pipelines/{id}/reset",
            Requires(ManagePipelines),
            reset,
        )
        .add(
            Route::get("/api/v1/pipelines/{id}/results", Requires(Read)).params::<ResultsParams>(),
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

/// The body of `POST /api/v1/pipelines` and `PUT /api/v1/pipelines/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub source_event_types: Option<Vec<String>>,
    #[serde(default)]
    pub operators: Option<Vec<Value>>,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub on_error: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub from_position: Option<Value>,
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

/// The optional body of `PUT /api/v1/pipelines/{id}/reset`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    #[serde(default)]
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

fn failure_json(f: &Failure) -> Value {
    json!({
        "position": f.position,
        "event_id": f.event_id,
        "operator": f.operator,
        "message": f.message,
        "at": timestamp(f.at),
    })
}

fn stats_json(s: &PipelineStats) -> Value {
    let failures: Vec<Value> = s.failures.iter().map(failure_json).collect();
    json!({
        "pipeline_id": s.id,
        "name": s.name,
        "status": s.status,
        "generation": s.generation,
        "events_processed": s.counters.processed,
        "filtered": s.counters.filtered,
        "failed": s.counters.failed,
        "emitted": s.counters.emitted,
        "late": s.counters.late,
        "position": s.position,
        "last_processed": s.last_processed.map(timestamp),
        "lag": s.lag,
        "lag_capped": s.lag_capped,
        "lag_seconds": s.lag_seconds,
        "last_error": s.failures.last().map(failure_json),
        "failed_events": failures,
    })
}

fn results_json(page: &ResultsPage) -> Value {
    let rows: Vec<Value> = page
        .rows
        .iter()
        .map(|r| {
            json!({
                "key": r.key,
                "value": r.value,
                "position": r.position,
                "updated_at": timestamp(r.updated_at),
            })
        })
        .collect();
    json!({
        "pipeline_id": page.id,
        "count": rows.len(),
        "has_more": page.has_more,
        "next_after": if page.has_more { page.rows.last().map(|r| r.key.clone()) } else { None },
        "results": rows,
    })
}

/// `GET /api/v1/pipelines`: the tenant's pipelines, oldest first.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.pipelines.list(&caller).await?;
    let items: Vec<Value> = views.iter().map(pipeline_json).collect();
    Ok(Json(json!({"total": items.len(), "pipelines": items})).into_response())
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
    Ok(Json(stats_json(&stats)).into_response())
}

/// `GET /api/v1/pipelines/stats`: every pipeline's figures.
pub async fn all_stats(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let all = app.pipelines.all_stats(&caller).await?;
    let items: Vec<Value> = all.iter().map(stats_json).collect();
    Ok(Json(json!({"total": items.len(), "pipelines": items})).into_response())
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
    Ok(Json(results_json(&page)).into_response())
}

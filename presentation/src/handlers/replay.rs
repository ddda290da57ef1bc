//! `POST|GET /api/v1/replay`, `GET|DELETE /api/v1/replay/{id}`, `POST /api/v1/replay/{id}/cancel`.
//!
//! Starting a job answers `202 Accepted` (the work is asynchronous; a job is not a named
//! resource in the sense of API.md's `201`). Jobs live in memory until deleted or a restart;
//! a completed job's effect (the swapped-in state) is durable.

use allsource_application::projections::{ReplayError, ReplayInput, ReplayView};
use allsource_domain::Permission::{ManagePipelines, Read};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::routes::{Route, Routes};

/// The replay routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/replay", Requires(Read), list)
        .add(
            Route::post("/api/v1/replay", Requires(ManagePipelines)).responds(&[202]),
            start,
        )
        .get("/api/v1/replay/{id}", Requires(Read), one)
        .delete("/api/v1/replay/{id}", Requires(ManagePipelines), delete)
        .add(
            Route::post("/api/v1/replay/{id}/cancel", Requires(ManagePipelines)).no_body(),
            cancel,
        )
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Invalid(errors) => Self::validation(errors),
            ReplayError::NotFound(what) => Self::not_found(what),
            ReplayError::Conflict(what) => Self::conflict(what),
            ReplayError::Unavailable(why) => Self::unavailable(why),
            ReplayError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// The body of `POST /api/v1/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartReplayRequest {
    /// The projection to rebuild (required).
    #[serde(default)]
    pub projection: Option<String>,
    /// Only events after this position (exclusive).
    #[serde(default)]
    pub from_position: Option<u64>,
    /// Only events with `timestamp >= since` (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
}

/// A job as JSON.
pub fn job_json(job: &ReplayView) -> Value {
    json!({
        "id": job.id,
        "projection": job.projection,
        "status": job.status.as_str(),
        "from_position": job.from_position,
        "since": job.since.map(timestamp),
        "processed": job.processed,
        "total": job.total,
        "events_per_second": job.events_per_second,
        "percent": job.percent,
        "started_at": timestamp(job.started_at),
        "finished_at": job.finished_at.map(timestamp),
        "error": job.error,
    })
}

/// `POST /api/v1/replay`: starts a job (`202` with the job and a `Location`).
pub async fn start(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<StartReplayRequest>,
) -> Result<Response, ApiError> {
    let job = app
        .replays
        .start(
            &caller,
            ReplayInput {
                projection: body.projection,
                from_position: body.from_position,
                since: body.since,
            },
        )
        .await?;
    let mut response = (StatusCode::ACCEPTED, Json(job_json(&job))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/replay/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/replay`: the tenant's jobs, oldest first.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let jobs: Vec<Value> = app.replays.list(&caller).iter().map(job_json).collect();
    Ok(Json(json!({"total": jobs.len(), "jobs": jobs})).into_response())
}

/// `GET /api/v1/replay/{id}`: a job's progress.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let job = app.replays.get(&caller, &id)?;
    Ok(Json(job_json(&job)).into_response())
}

/// `POST /api/v1/replay/{id}/cancel`: asks a running job to stop (it stops at its next page;
/// poll the job for `cancelled`). 409 for a finished job.
pub async fn cancel(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let job = app.replays.cancel(&caller, &id)?;
    let mut body = job_json(&job);
    body["cancel_requested"] = Value::Bool(true);
    Ok(Json(body).into_response())
}

/// `DELETE /api/v1/replay/{id}`: forgets a finished job (409 while it runs).
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    app.replays.delete(&caller, &id)?;
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

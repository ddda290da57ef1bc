//! `POST|GET /api/v1/replay`, `GET|DELETE /api/v1/replay/{id}`, `POST /api/v1/replay/{id}/cancel`.
//!
//! Starting a job answers `202 Accepted` (the work is asynchronous; a job is not a named
//! resource in the sense of API.md's `201`). Jobs live in memory until deleted or a restart;
//! a completed job's effect (the swapped-in state) is durable.

use allsource_application::projections::{ReplayError, ReplayInput, ReplayStatus, ReplayView};
use allsource_domain::Permission::{ManagePipelines, Read};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{DeletedResponse, timestamp};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::routes::{Route, Routes};

/// The replay routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/replay", Requires(Read)).returns::<JobListResponse>(),
            list,
        )
        .add(
            Route::post("/api/v1/replay", Requires(ManagePipelines))
                .body::<StartReplayRequest>()
                .returns::<JobResponse>()
                .responds(&[202])
                .problems(&[404, 409]),
            start,
        )
        .add(
            Route::get("/api/v1/replay/{id}", Requires(Read)).returns::<JobResponse>(),
            one,
        )
        .add(
            Route::delete("/api/v1/replay/{id}", Requires(ManagePipelines))
                .returns::<DeletedResponse>()
                .problems(&[409]),
            delete,
        )
        .add(
            Route::post("/api/v1/replay/{id}/cancel", Requires(ManagePipelines))
                .no_body()
                .returns::<CancelledJobResponse>()
                .problems(&[409]),
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReplayRequest {
    /// The projection to rebuild (required; the use case names it when missing).
    #[serde(default)]
    #[schema(schema_with = super::projections::projection_name, required = true)]
    pub projection: Option<String>,
    /// Only events after this position (exclusive).
    #[serde(default)]
    pub from_position: Option<u64>,
    /// Only events with `timestamp >= since` (RFC 3339).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::time_or_null)]
    pub since: Option<String>,
}

fn status() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(
        [
            ReplayStatus::Running,
            ReplayStatus::Completed,
            ReplayStatus::Cancelled,
            ReplayStatus::Failed,
        ]
        .map(ReplayStatus::as_str),
        false,
    )
}

/// A replay job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobResponse<'a> {
    pub id: &'a str,
    pub projection: &'a str,
    #[schema(schema_with = status)]
    pub status: &'static str,
    #[schema(required = true)]
    pub from_position: Option<u64>,
    #[schema(required = true)]
    pub since: Option<String>,
    /// Events read so far.
    pub processed: u64,
    /// Events in the range when the job started.
    pub total: u64,
    pub events_per_second: f64,
    /// 0 to 100.
    pub percent: f64,
    pub started_at: String,
    #[schema(required = true)]
    pub finished_at: Option<String>,
    /// Why a failed job failed.
    #[schema(required = true)]
    pub error: Option<&'a str>,
}

impl<'a> From<&'a ReplayView> for JobResponse<'a> {
    fn from(job: &'a ReplayView) -> Self {
        Self {
            id: &job.id,
            projection: &job.projection,
            status: job.status.as_str(),
            from_position: job.from_position,
            since: job.since.map(timestamp),
            processed: job.processed,
            total: job.total,
            events_per_second: job.events_per_second,
            percent: job.percent,
            started_at: timestamp(job.started_at),
            finished_at: job.finished_at.map(timestamp),
            error: job.error.as_deref(),
        }
    }
}

/// `POST /api/v1/replay/{id}/cancel`: the job, with `cancel_requested: true`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelledJobResponse<'a> {
    #[serde(flatten)]
    pub job: JobResponse<'a>,
    /// Always `true`.
    #[schema(schema_with = crate::openapi::always_true)]
    pub cancel_requested: bool,
}

/// `GET /api/v1/replay`, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobListResponse<'a> {
    pub total: usize,
    pub jobs: Vec<JobResponse<'a>>,
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
    let mut response = (StatusCode::ACCEPTED, Json(JobResponse::from(&job))).into_response();
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
    let views = app.replays.list(&caller);
    let jobs: Vec<JobResponse<'_>> = views.iter().map(JobResponse::from).collect();
    Ok(Json(JobListResponse {
        total: jobs.len(),
        jobs,
    })
    .into_response())
}

/// `GET /api/v1/replay/{id}`: a job's progress.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let job = app.replays.get(&caller, &id)?;
    Ok(Json(JobResponse::from(&job)).into_response())
}

/// `POST /api/v1/replay/{id}/cancel`: asks a running job to stop (it stops at its next page;
/// poll the job for `cancelled`). 409 for a finished job.
pub async fn cancel(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let job = app.replays.cancel(&caller, &id)?;
    Ok(Json(CancelledJobResponse {
        job: JobResponse::from(&job),
        cancel_requested: true,
    })
    .into_response())
}

/// `DELETE /api/v1/replay/{id}`: forgets a finished job (409 while it runs).
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    app.replays.delete(&caller, &id)?;
    Ok(Json(DeletedResponse::new(&id)).into_response())
}

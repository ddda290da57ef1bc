//! `POST|GET /api/v1/backups`, `GET /api/v1/backups/{id}`, `POST /api/v1/backups/{id}/verify`.
//!
//! Backups hold every tenant's data: the routes need `manage_tenants`, and the use case
//! admits only operators (admins of tenant `default`); a tenant's own admin gets 403.
//! Starting a backup answers `202 Accepted` with the job (`state: running`) and a `Location`;
//! the job becomes `completed` (or `failed`, with `error`). Verification re-reads every file
//! and answers `200` with the outcome (`ok`, `problems`) whether or not the backup is intact.
//! Restore is offline (`allsource backup restore`): there is no route for it.

use allsource_application::use_cases::{BackupError, BackupView, StartBackupInput, VerifyReport};
use allsource_domain::Permission::ManageTenants;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam};
use crate::routes::{Route, Routes};

/// The backup routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::post("/api/v1/backups", Requires(ManageTenants))
                .summary("Start a full or incremental backup (a job)")
                .body::<StartBackupRequest>()
                .returns::<BackupResponse>()
                .responds(&[202])
                // 404: an unknown `since_backup`.
                .problems(&[404, 409]),
            start,
        )
        .add(
            Route::get("/api/v1/backups", Requires(ManageTenants))
                .summary("The backups")
                .returns::<BackupListResponse>()
                .problems(&[409]),
            list,
        )
        .add(
            Route::get("/api/v1/backups/{id}", Requires(ManageTenants))
                .summary("One backup")
                .returns::<BackupResponse>()
                .problems(&[409]),
            one,
        )
        .add(
            Route::post("/api/v1/backups/{id}/verify", Requires(ManageTenants))
                .summary("Re-read a backup's files and check their digests")
                .no_body()
                .returns::<VerifyResponse>()
                .problems(&[409]),
            verify,
        )
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Invalid(errors) => Self::validation(errors),
            BackupError::Forbidden(why) => Self::forbidden(why),
            BackupError::NotFound(what) => Self::not_found(what),
            BackupError::Conflict(why) | BackupError::Corrupt(why) => Self::conflict(why),
            BackupError::Unavailable(why) => Self::unavailable(why),
            BackupError::Internal(cause) => Self::internal(cause),
        }
    }
}

fn kind() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(["full", "incremental"], false)
}

fn state() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(["running", "completed", "failed"], false)
}

/// The body of `POST /api/v1/backups`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBackupRequest {
    /// `full` or `incremental` (required; the use case names it when missing).
    #[serde(default)]
    #[schema(schema_with = kind, required = true)]
    pub kind: Option<String>,
    /// For `incremental`: the backup it continues (the newest completed one when absent).
    #[serde(default)]
    pub since_backup: Option<String>,
}

/// A backup or a backup job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupResponse {
    pub backup_id: String,
    pub created_at: String,
    #[schema(required = true)]
    pub completed_at: Option<String>,
    /// `full` or `incremental`.
    #[schema(schema_with = kind)]
    pub kind: &'static str,
    #[schema(required = true)]
    pub since_backup: Option<String>,
    /// `running`, `completed` or `failed`.
    #[schema(schema_with = state)]
    pub state: &'static str,
    /// Figures known once the backup is completed (`null` before).
    #[schema(required = true)]
    pub event_count: Option<u64>,
    #[schema(required = true)]
    pub size_bytes: Option<u64>,
    #[schema(required = true)]
    pub checksum: Option<String>,
    #[schema(required = true)]
    pub from_position: Option<u64>,
    #[schema(required = true)]
    pub to_position: Option<u64>,
    #[schema(required = true)]
    pub files: Option<usize>,
    /// Why a failed job failed.
    #[schema(required = true)]
    pub error: Option<String>,
}

impl From<&BackupView> for BackupResponse {
    fn from(v: &BackupView) -> Self {
        Self {
            backup_id: v.backup_id.clone(),
            created_at: timestamp(v.created_at),
            completed_at: v.completed_at.map(timestamp),
            kind: v.kind.as_str(),
            since_backup: v.since_backup.clone(),
            state: v.state.as_str(),
            event_count: v.event_count,
            size_bytes: v.size_bytes,
            checksum: v.checksum.clone(),
            from_position: v.from_position,
            to_position: v.to_position,
            files: v.files,
            error: v.error.clone(),
        }
    }
}

/// `GET /api/v1/backups`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupListResponse {
    pub total: usize,
    pub backups: Vec<BackupResponse>,
}

/// `POST /api/v1/backups/{id}/verify`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    pub backup_id: String,
    pub ok: bool,
    pub files_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<String>,
}

impl From<VerifyReport> for VerifyResponse {
    fn from(r: VerifyReport) -> Self {
        Self {
            backup_id: r.backup_id,
            ok: r.ok,
            files_checked: r.files_checked,
            bytes_checked: r.bytes_checked,
            problems: r.problems,
        }
    }
}

/// `POST /api/v1/backups`: starts a backup (`202` with the job and a `Location`).
pub async fn start(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<StartBackupRequest>,
) -> Result<Response, ApiError> {
    let job = app
        .backups
        .start(
            &caller,
            StartBackupInput {
                kind: body.kind,
                since_backup: body.since_backup,
            },
        )
        .await?;
    let mut response = (StatusCode::ACCEPTED, Json(BackupResponse::from(&job))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/backups/{}", job.backup_id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/backups`: completed backups oldest first, then running and failed jobs.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let backups: Vec<BackupResponse> = app
        .backups
        .list(&caller)
        .await?
        .iter()
        .map(BackupResponse::from)
        .collect();
    Ok(Json(BackupListResponse {
        total: backups.len(),
        backups,
    })
    .into_response())
}

/// `GET /api/v1/backups/{id}`.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let backup = app.backups.get(&caller, &id).await?;
    Ok(Json(BackupResponse::from(&backup)).into_response())
}

/// `POST /api/v1/backups/{id}/verify`: re-reads every file and checks its digests.
pub async fn verify(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let report = app.backups.verify(&caller, &id).await?;
    Ok(Json(VerifyResponse::from(report)).into_response())
}

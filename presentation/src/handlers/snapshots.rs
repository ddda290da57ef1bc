//! Snapshots: `POST /api/v1/snapshots` (201, the snapshot), `GET /api/v1/snapshots`
//! (`?entity_id&after&limit`, paged by an opaque cursor), `GET /api/v1/snapshots/{entity_id}/latest`
//! (404 when the entity has none). Their request and response bodies live here too.

use allsource_application::use_cases::{
    CreateSnapshotInput, ListSnapshotsInput, Snapshot, SnapshotError, SnapshotOrigin, SnapshotPage,
};
use allsource_domain::Permission::{Read, Write};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The snapshot routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::post("/api/v1/snapshots", Requires(Write))
                .body::<CreateSnapshotRequest>()
                .returns::<SnapshotResponse>()
                .responds(&[201])
                .problems(&[404]),
            create,
        )
        .add(
            Route::get("/api/v1/snapshots", Requires(Read))
                .params::<ListSnapshotsParams>()
                .returns::<SnapshotListResponse>(),
            list,
        )
        .add(
            Route::get("/api/v1/snapshots/{entity_id}/latest", Requires(Read))
                .returns::<SnapshotResponse>(),
            latest,
        )
}

/// Body of `POST /api/v1/snapshots`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    pub entity_id: String,
    /// Snapshot the state as it was at this time (RFC 3339); absent = now.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::time_or_null)]
    pub as_of: Option<String>,
}

/// Parameters of `GET /api/v1/snapshots`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListSnapshotsParams {
    pub entity_id: Option<String>,
    pub after: Option<String>,
    pub limit: Option<String>,
}

fn origin() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(
        [SnapshotOrigin::Manual, SnapshotOrigin::Automatic].map(SnapshotOrigin::as_str),
        false,
    )
}

/// One snapshot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotResponse {
    pub entity_id: String,
    /// Version of the last event folded in.
    pub version: u64,
    pub event_count: u64,
    /// Position of the last event folded in.
    pub position: u64,
    /// Timestamp of the last event folded in.
    pub last_event_at: String,
    pub created_at: String,
    /// `manual` or `automatic`.
    #[schema(schema_with = origin)]
    pub origin: &'static str,
    /// The entity's folded state.
    #[schema(schema_with = crate::openapi::any_value)]
    pub state: Value,
}

impl From<Snapshot> for SnapshotResponse {
    fn from(s: Snapshot) -> Self {
        Self {
            entity_id: s.state.entity_id.as_str().to_owned(),
            version: s.state.version.get(),
            event_count: s.state.event_count,
            position: s.position.get(),
            last_event_at: timestamp(s.state.last_updated),
            created_at: timestamp(s.created_at),
            origin: s.origin.as_str(),
            state: s.state.state,
        }
    }
}

/// A page of snapshots.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotListResponse {
    pub snapshots: Vec<SnapshotResponse>,
    pub count: usize,
    pub has_more: bool,
    /// Pass as `after` to get the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

impl From<SnapshotPage> for SnapshotListResponse {
    fn from(page: SnapshotPage) -> Self {
        let snapshots: Vec<SnapshotResponse> = page.snapshots.into_iter().map(Into::into).collect();
        Self {
            count: snapshots.len(),
            has_more: page.next_cursor.is_some(),
            next_cursor: page.next_cursor,
            snapshots,
        }
    }
}

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Invalid(errors) => Self::validation(errors),
            SnapshotError::NotFound(what) => Self::not_found(what),
            SnapshotError::Unavailable(reason) => Self::unavailable(reason),
            SnapshotError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// `POST /api/v1/snapshots`: snapshots the entity's state now (or at `as_of`); 201.
pub async fn create(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<CreateSnapshotRequest>,
) -> Result<Response, ApiError> {
    let snapshot = state
        .snapshots
        .create(
            &caller,
            CreateSnapshotInput {
                entity_id: body.entity_id,
                as_of: body.as_of,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(SnapshotResponse::from(snapshot))).into_response())
}

/// `GET /api/v1/snapshots`: the tenant's snapshots (or one entity's), by entity then version.
pub async fn list(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(params): Params<ListSnapshotsParams>,
) -> Result<Response, ApiError> {
    let page = state
        .snapshots
        .list(
            &caller,
            ListSnapshotsInput {
                entity_id: params.entity_id,
                after: params.after,
                limit: params.limit,
            },
        )
        .await?;
    Ok(Json(SnapshotListResponse::from(page)).into_response())
}

/// `GET /api/v1/snapshots/{entity_id}/latest`: the entity's newest snapshot, or 404.
pub async fn latest(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(entity_id): PathParam,
) -> Result<Response, ApiError> {
    let snapshot = state.snapshots.latest(&caller, &entity_id).await?;
    Ok(Json(SnapshotResponse::from(snapshot)).into_response())
}

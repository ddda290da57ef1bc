//! `GET|POST /api/v1/projections`, `GET|DELETE /api/v1/projections/{name}`,
//! `GET /api/v1/projections/{name}/state[/{key}]`, `POST /api/v1/projections/{name}/rebuild`.
//!
//! A created projection answers `201` with a `Location`; a rebuild answers `202 Accepted` with
//! the replay job it started (it is asynchronous and creates no named resource).

use allsource_application::projections::{
    KeyView, ProjectionError, ProjectionView, ReplayInput, StateInput, StatePage,
};
use std::collections::BTreeMap;

use allsource_domain::Permission::{ManagePipelines, Read};
use allsource_domain::projection::{ProjectionSpec, Reducer};
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::replay::JobResponse;
use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::timestamp;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The projection routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/projections", Requires(Read)).returns::<ProjectionListResponse>(),
            list,
        )
        .add(
            Route::post("/api/v1/projections", Requires(ManagePipelines))
                .body::<ProjectionBody>()
                .returns::<ProjectionResponse>()
                .responds(&[201])
                .problems(&[409]),
            create,
        )
        .add(
            Route::get("/api/v1/projections/{name}", Requires(Read))
                .returns::<ProjectionResponse>(),
            one,
        )
        .add(
            Route::delete("/api/v1/projections/{name}", Requires(ManagePipelines))
                .returns::<ProjectionDeletedResponse>()
                .problems(&[409]),
            delete,
        )
        .add(
            Route::get("/api/v1/projections/{name}/state", Requires(Read))
                .params::<StateParams>()
                .returns::<StatePageResponse>(),
            state,
        )
        .add(
            Route::get("/api/v1/projections/{name}/state/{key}", Requires(Read))
                .returns::<KeyStateResponse>(),
            state_of_key,
        )
        .add(
            Route::post(
                "/api/v1/projections/{name}/rebuild",
                Requires(ManagePipelines),
            )
            .no_body()
            .returns::<JobResponse>()
            .responds(&[202])
            .problems(&[409]),
            rebuild,
        )
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Invalid(errors) => Self::validation(errors),
            ProjectionError::NotFound(what) => Self::not_found(what),
            ProjectionError::Conflict(what) => Self::conflict(what),
            ProjectionError::Gate(gate) => gate.into(),
            ProjectionError::Unavailable(why) => Self::unavailable(why),
            ProjectionError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// Query parameters of `GET /api/v1/projections/{name}/state`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StateParams {
    pub limit: Option<String>,
    pub after: Option<String>,
}

/// The two path segments of `/api/v1/projections/{name}/state/{key}`.
pub struct NameAndKey(String, String);

impl<S: Send + Sync> FromRequestParts<S> for NameAndKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|Path((name, key))| Self(name, key))
            .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))
    }
}

fn reducer() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(Reducer::ALL.map(Reducer::as_str), false)
}

/// A projection's name.
pub fn projection_name() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::pattern_string("^[a-z0-9][a-z0-9_-]{0,63}$", 64, false)
}

/// At most 100 event types, or `null`.
fn event_types_or_null() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, SchemaType, Type};
    utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Array(
        ArrayBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Array, Type::Null]))
            .items(crate::openapi::event_type())
            .max_items(Some(100))
            .build(),
    ))
}

/// The body of `POST /api/v1/projections` (what [`ProjectionSpec`] reads): a definition, or a
/// built-in's name alone (`event_counter`, `entity_snapshots`). `fields` is required but for
/// a built-in.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the handler reads a `ProjectionSpec`.
pub struct ProjectionBody {
    /// 1–64 of `a-z 0-9 _ -`, starting with a letter or a digit.
    #[schema(schema_with = projection_name, required = true)]
    name: Option<String>,
    filter: Option<FilterBody>,
    /// What the state is keyed by: `entity_id` (default), `event_type`, or a path
    /// (`payload.customer`).
    key: Option<String>,
    /// Field name → how it is folded.
    fields: Option<BTreeMap<String, FieldBody>>,
}

/// The `filter` member of a projection.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct FilterBody {
    /// Event types (`[]` or absent: every type).
    #[schema(schema_with = event_types_or_null)]
    event_types: Option<Vec<String>>,
    entity_id_prefix: Option<String>,
}

/// One field of a projection.
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct FieldBody {
    #[schema(schema_with = reducer, required = true)]
    reducer: Option<String>,
    /// The payload path folded (`payload.amount`); needed by `sum`, `min`, `max`, `avg` and
    /// `distinct_count`.
    path: Option<String>,
}

/// A projection's definition as the server shows it: every member written out.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: the handler writes the domain's `ProjectionSpec`.
pub struct DefinitionDoc {
    name: String,
    filter: FilterDoc,
    key: String,
    fields: BTreeMap<String, FieldDoc>,
}

/// The `filter` of a definition as the server shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only
pub struct FilterDoc {
    event_types: Vec<String>,
    /// Absent when the projection takes every entity.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    entity_id_prefix: Option<String>,
}

/// One field of a definition as the server shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only
pub struct FieldDoc {
    #[schema(schema_with = reducer)]
    reducer: String,
    /// Absent for a reducer without a path (`count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    path: Option<String>,
}

/// A projection's progress.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectionStatusResponse<'a> {
    /// The last position folded in.
    pub checkpoint: u64,
    /// The tenant's newest position.
    pub head_position: u64,
    /// Events after the checkpoint (counted up to 1,000; `lag_capped` beyond).
    pub lag_events: u64,
    pub lag_capped: bool,
    pub caught_up: bool,
    /// Keys in the state.
    pub keys: u64,
    /// The last catch-up failure, cleared by the next success.
    #[schema(required = true)]
    pub last_error: Option<&'a str>,
}

/// A projection: its definition and its status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectionResponse<'a> {
    pub name: &'a str,
    pub builtin: bool,
    #[schema(value_type = DefinitionDoc)]
    pub definition: ProjectionSpec,
    pub created_at: String,
    pub generation: &'a str,
    pub status: ProjectionStatusResponse<'a>,
}

impl<'a> From<&'a ProjectionView> for ProjectionResponse<'a> {
    fn from(view: &'a ProjectionView) -> Self {
        let status = &view.status;
        Self {
            name: view.definition.name.as_str(),
            builtin: view.builtin,
            definition: view.definition.to_spec(),
            created_at: timestamp(view.created_at),
            generation: &view.generation,
            status: ProjectionStatusResponse {
                checkpoint: status.checkpoint,
                head_position: status.head_position,
                lag_events: status.lag_events,
                lag_capped: status.lag_capped,
                caught_up: status.lag_events == 0,
                keys: status.keys,
                last_error: status.last_error.as_deref(),
            },
        }
    }
}

/// `GET /api/v1/projections`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectionListResponse<'a> {
    pub total: usize,
    pub projections: Vec<ProjectionResponse<'a>>,
}

/// `DELETE /api/v1/projections/{name}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectionDeletedResponse<'a> {
    pub name: &'a str,
    /// Always `true`.
    #[schema(schema_with = crate::openapi::always_true)]
    pub deleted: bool,
}

/// A page of a projection's state: key → that key's state, in key order. `next_after` is the
/// last key of the page when more follow (pass it as `after`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatePageResponse {
    pub name: String,
    pub checkpoint: u64,
    /// Key → the key's state (any JSON value).
    #[schema(schema_with = crate::openapi::any_object)]
    pub state: Map<String, Value>,
    pub count: usize,
    pub has_more: bool,
    #[schema(required = true)]
    pub next_after: Option<String>,
}

impl From<StatePage> for StatePageResponse {
    fn from(page: StatePage) -> Self {
        let next_after = if page.has_more {
            page.entries.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        let count = page.entries.len();
        Self {
            name: page.name,
            checkpoint: page.checkpoint,
            state: page.entries.into_iter().collect(),
            count,
            has_more: page.has_more,
            next_after,
        }
    }
}

/// One key's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyStateResponse {
    pub name: String,
    pub key: String,
    /// The position of the last event folded into this key.
    pub position: u64,
    #[schema(schema_with = crate::openapi::any_value)]
    pub state: Value,
}

impl From<KeyView> for KeyStateResponse {
    fn from(view: KeyView) -> Self {
        Self {
            name: view.name,
            key: view.key,
            position: view.position,
            state: view.state,
        }
    }
}

/// `GET /api/v1/projections`: the tenant's projections with their status.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.projections.list(&caller).await?;
    let projections: Vec<ProjectionResponse<'_>> =
        views.iter().map(ProjectionResponse::from).collect();
    Ok(Json(ProjectionListResponse {
        total: projections.len(),
        projections,
    })
    .into_response())
}

/// `POST /api/v1/projections`: registers a projection (`201` with a `Location`).
pub async fn create(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(spec): JsonBody<ProjectionSpec>,
) -> Result<Response, ApiError> {
    let view = app.projections.create(&caller, spec).await?;
    let location = format!("/api/v1/projections/{}", view.definition.name);
    let mut response = (StatusCode::CREATED, Json(ProjectionResponse::from(&view))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/projections/{name}`: definition and status.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    let view = app.projections.get(&caller, &name).await?;
    Ok(Json(ProjectionResponse::from(&view)).into_response())
}

/// `DELETE /api/v1/projections/{name}`: unregisters it and deletes its state.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    app.projections.delete(&caller, &name).await?;
    Ok(Json(ProjectionDeletedResponse {
        name: &name,
        deleted: true,
    })
    .into_response())
}

/// `GET /api/v1/projections/{name}/state?limit&after`: the state, a page of keys at a time.
pub async fn state(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
    Params(params): Params<StateParams>,
) -> Result<Response, ApiError> {
    let page = app
        .projections
        .state(
            &caller,
            &name,
            StateInput {
                limit: params.limit,
                after: params.after,
            },
        )
        .await?;
    Ok(Json(StatePageResponse::from(page)).into_response())
}

/// `GET /api/v1/projections/{name}/state/{key}`: one key's state, or 404.
pub async fn state_of_key(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    NameAndKey(name, key): NameAndKey,
) -> Result<Response, ApiError> {
    let view = app.projections.state_of(&caller, &name, &key).await?;
    Ok(Json(KeyStateResponse::from(view)).into_response())
}

/// `POST /api/v1/projections/{name}/rebuild`: starts a replay of the whole log into it
/// (`202` with the job; follow it at `/api/v1/replay/{id}`). No body.
pub async fn rebuild(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    let job = app
        .replays
        .start(
            &caller,
            ReplayInput {
                projection: Some(name),
                ..ReplayInput::default()
            },
        )
        .await?;
    let mut response = (StatusCode::ACCEPTED, Json(JobResponse::from(&job))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/replay/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

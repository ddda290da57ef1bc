//! `GET|POST /api/v1/projections`, `GET|DELETE /api/v1/projections/{name}`,
//! `GET /api/v1/projections/{name}/state[/{key}]`, `POST /api/v1/projections/{name}/rebuild`.
//!
//! A created projection answers `201` with a `Location`; a rebuild answers `202 Accepted` with
//! the replay job it started (it is asynchronous and creates no named resource).

use allsource_application::projections::{
    KeyView, ProjectionError, ProjectionView, ReplayInput, StateInput, StatePage,
};
use allsource_domain::Permission::{ManagePipelines, Read};
use allsource_domain::projection::ProjectionSpec;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::replay::job_json;
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
        .get("/api/v1/projections", Requires(Read), list)
        .add(
            Route::post("/api/v1/projections", Requires(ManagePipelines)).responds(&[201]),
            create,
        )
        .get("/api/v1/projections/{name}", Requires(Read), one)
        .delete(
            "/api/v1/projections/{name}",
            Requires(ManagePipelines),
            delete,
        )
        .add(
            Route::get("/api/v1/projections/{name}/state", Requires(Read)).params::<StateParams>(),
            state,
        )
        .get(
            "/api/v1/projections/{name}/state/{key}",
            Requires(Read),
            state_of_key,
        )
        .add(
            Route::post(
                "/api/v1/projections/{name}/rebuild",
                Requires(ManagePipelines),
            )
            .no_body()
            .responds(&[202]),
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

/// A projection as JSON.
pub fn projection_json(view: &ProjectionView) -> Value {
    let status = &view.status;
    json!({
        "name": view.definition.name.as_str(),
        "builtin": view.builtin,
        "definition": view.definition.to_spec(),
        "created_at": timestamp(view.created_at),
        "generation": view.generation,
        "status": {
            "checkpoint": status.checkpoint,
            "head_position": status.head_position,
            "lag_events": status.lag_events,
            "lag_capped": status.lag_capped,
            "caught_up": status.lag_events == 0,
            "keys": status.keys,
            "last_error": status.last_error,
        },
    })
}

fn page_json(page: StatePage) -> Value {
    let next_after = if page.has_more {
        page.entries.last().map(|(k, _)| Value::from(k.clone()))
    } else {
        None
    };
    let count = page.entries.len();
    let state: Map<String, Value> = page.entries.into_iter().collect();
    json!({
        "name": page.name,
        "checkpoint": page.checkpoint,
        "state": state,
        "count": count,
        "has_more": page.has_more,
        "next_after": next_after,
    })
}

fn key_json(view: KeyView) -> Value {
    json!({"name": view.name, "key": view.key, "position": view.position, "state": view.state})
}

/// `GET /api/v1/projections`: the tenant's projections with their status.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.projections.list(&caller).await?;
    let items: Vec<Value> = views.iter().map(projection_json).collect();
    Ok(Json(json!({"total": items.len(), "projections": items})).into_response())
}

/// `POST /api/v1/projections`: registers a projection (`201` with a `Location`).
pub async fn create(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(spec): JsonBody<ProjectionSpec>,
) -> Result<Response, ApiError> {
    let view = app.projections.create(&caller, spec).await?;
    let location = format!("/api/v1/projections/{}", view.definition.name);
    let mut response = (StatusCode::CREATED, Json(projection_json(&view))).into_response();
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
    Ok(Json(projection_json(&view)).into_response())
}

/// `DELETE /api/v1/projections/{name}`: unregisters it and deletes its state.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    app.projections.delete(&caller, &name).await?;
    Ok(Json(json!({"name": name, "deleted": true})).into_response())
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
    Ok(Json(page_json(page)).into_response())
}

/// `GET /api/v1/projections/{name}/state/{key}`: one key's state, or 404.
pub async fn state_of_key(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    NameAndKey(name, key): NameAndKey,
) -> Result<Response, ApiError> {
    let view = app.projections.state_of(&caller, &name, &key).await?;
    Ok(Json(key_json(view)).into_response())
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
    let mut response = (StatusCode::ACCEPTED, Json(job_json(&job))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/replay/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

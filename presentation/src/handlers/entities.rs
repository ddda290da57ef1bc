//! `GET /api/v1/entities/{entity_id}/events`, `GET /api/v1/entities/{entity_id}/state`,
//! `GET /api/v1/entities`, `GET /api/v1/event-types`, `GET /api/v1/stats`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use allsource_domain::Permission::Read;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{
    EntitiesParams, EntitiesResponse, EventTypesResponse, StateParams, StateResponse,
    StatsResponse, StreamParams, StreamResponse,
};
use crate::error::ApiError;
use crate::extract::{Params, PathParam};
use crate::routes::{Route, Routes};

/// The entity and catalog routes.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/entities", Requires(Read))
                .returns::<EntitiesResponse>()
                .params::<EntitiesParams>(),
            list,
        )
        .add(
            Route::get("/api/v1/entities/{entity_id}/events", Requires(Read))
                .returns::<StreamResponse>()
                .params::<StreamParams>(),
            stream,
        )
        .add(
            Route::get("/api/v1/entities/{entity_id}/state", Requires(Read))
                .returns::<StateResponse>()
                .params::<StateParams>(),
            state,
        )
        .add(
            Route::get("/api/v1/event-types", Requires(Read)).returns::<EventTypesResponse>(),
            event_types,
        )
        .add(
            Route::get("/api/v1/stats", Requires(Read)).returns::<StatsResponse>(),
            stats,
        )
}

/// `GET /api/v1/entities/{entity_id}/events`: the entity's stream in version order (empty for
/// an entity without events).
pub async fn stream(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(entity_id): PathParam,
    Params(params): Params<StreamParams>,
) -> Result<Response, ApiError> {
    let page = state
        .reads
        .stream(&caller, &entity_id, params.into())
        .await?;
    Ok(Json(StreamResponse::new(&page.events, page.has_more)).into_response())
}

/// `GET /api/v1/entities/{entity_id}/state`: the folded state, or 404 without events.
pub async fn state(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(entity_id): PathParam,
    Params(params): Params<StateParams>,
) -> Result<Response, ApiError> {
    let view = state
        .reads
        .entity_state(&caller, &entity_id, params.into())
        .await?;
    Ok(Json(StateResponse::from(&view)).into_response())
}

/// `GET /api/v1/entities`: a page of the tenant's entities, by entity id.
pub async fn list(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(params): Params<EntitiesParams>,
) -> Result<Response, ApiError> {
    // The page carries the total only; `has_more` needs how many were skipped. The use case
    // has validated `offset` by the time it is used.
    let offset = params.offset.clone();
    let page = state.reads.entities(&caller, params.into()).await?;
    let offset = offset.and_then(|o| o.parse().ok()).unwrap_or(0);
    Ok(Json(EntitiesResponse::new(&page, offset)).into_response())
}

/// `GET /api/v1/event-types`: the tenant's event types with counts, by type.
pub async fn event_types(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let types = state.reads.event_types(&caller).await?;
    Ok(Json(EventTypesResponse::from(types.as_slice())).into_response())
}

/// `GET /api/v1/stats`: figures about the tenant's events and the storage.
pub async fn stats(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let stats = state.reads.stats(&caller).await?;
    Ok(Json(StatsResponse::from(&stats)).into_response())
}

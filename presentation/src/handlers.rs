//! Route handlers: extract, call one use case with the caller, shape the answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;
use crate::auth::CurrentCaller;
use crate::dto::{
    self, AppendBatchRequest, AppendEventRequest, BatchResponse, EntitiesParams, EntitiesResponse,
    EntitySummaryResponse, EventResponse, EventTypeResponse, EventTypesResponse, NoParams,
    QueryParams, QueryResponse, ReceiptResponse, StateParams, StateResponse, StatsResponse,
    StreamParams, StreamResponse,
};
use crate::error::ApiError;
use crate::extract::{JsonBody, Params};

type ApiResult = Result<Response, ApiError>;

/// `POST /api/v1/events`.
pub async fn append_one(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    JsonBody(request): JsonBody<AppendEventRequest>,
) -> ApiResult {
    let receipt = state.append.one(&caller, request.into()).await?;
    Ok(Json(ReceiptResponse::from(&receipt)).into_response())
}

/// `POST /api/v1/events/batch`.
pub async fn append_batch(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    JsonBody(request): JsonBody<AppendBatchRequest>,
) -> ApiResult {
    let inputs = request.events.into_iter().map(Into::into).collect();
    let reply = state.append.batch(&caller, inputs).await?;
    Ok(Json(BatchResponse {
        total: reply.receipts.len(),
        ingested: reply.ingested(),
        events: reply.receipts.iter().map(ReceiptResponse::from).collect(),
    })
    .into_response())
}

/// `GET /api/v1/events/query`.
pub async fn query(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    Params(params): Params<QueryParams>,
) -> ApiResult {
    let page = state.reads.query(&caller, params.into()).await?;
    Ok(Json(QueryResponse {
        count: page.events.len(),
        has_more: page.has_more,
        next_position: page.events.last().map(|e| e.position.get()),
        events: dto::events(&page.events),
    })
    .into_response())
}

/// `GET /api/v1/events/{event_id}`.
pub async fn event(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    Path(event_id): Path<String>,
    Params(_): Params<NoParams>,
) -> ApiResult {
    let event = state.reads.event(&caller, &event_id).await?;
    Ok(Json(EventResponse::from(event.as_ref())).into_response())
}

/// `GET /api/v1/entities/{entity_id}/events`.
pub async fn stream(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    Path(entity_id): Path<String>,
    Params(params): Params<StreamParams>,
) -> ApiResult {
    let page = state
        .reads
        .stream(&caller, &entity_id, params.into())
        .await?;
    Ok(Json(StreamResponse {
        count: page.events.len(),
        has_more: page.has_more,
        events: dto::events(&page.events),
    })
    .into_response())
}

/// `GET /api/v1/entities/{entity_id}/state`.
pub async fn entity_state(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    Path(entity_id): Path<String>,
    Params(params): Params<StateParams>,
) -> ApiResult {
    let view = state
        .reads
        .entity_state(&caller, &entity_id, params.into())
        .await?;
    Ok(Json(StateResponse::from(&view)).into_response())
}

/// `GET /api/v1/entities`.
pub async fn entities(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    Params(params): Params<EntitiesParams>,
) -> ApiResult {
    let input: allsource_application::use_cases::EntityListInput = params.into();
    let offset = input
        .offset
        .as_deref()
        .and_then(|o| o.parse::<u64>().ok())
        .unwrap_or(0);
    let page = state.reads.entities(&caller, input).await?;
    let shown = page.entities.len() as u64;
    Ok(Json(EntitiesResponse {
        entities: page
            .entities
            .iter()
            .map(EntitySummaryResponse::from)
            .collect(),
        total: page.total,
        has_more: offset.saturating_add(shown) < page.total,
    })
    .into_response())
}

/// `GET /api/v1/event-types`.
pub async fn event_types(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    Params(_): Params<NoParams>,
) -> ApiResult {
    let types = state.reads.event_types(&caller).await?;
    Ok(Json(EventTypesResponse {
        total: types.len(),
        event_types: types.iter().map(EventTypeResponse::from).collect(),
    })
    .into_response())
}

/// `GET /api/v1/stats`.
pub async fn stats(
    State(state): State<AppState>,
    CurrentCaller(caller): CurrentCaller,
    Params(_): Params<NoParams>,
) -> ApiResult {
    let stats = state.reads.stats(&caller).await?;
    Ok(Json(StatsResponse::from(&stats)).into_response())
}

/// `GET /health`: the process is up (never behind auth).
pub async fn health(State(state): State<AppState>) -> Response {
    Json(json!({
        "status": "healthy",
        "version": state.health.version,
        "storage": {"backend": state.health.store.backend()},
    }))
    .into_response()
}

/// `GET /health/ready`: 200 once the store has recovered, 503 before.
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.health.store.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        ApiError::unavailable("the store is still recovering").into_response()
    }
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Known routes with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

//! `POST|GET /api/v1/consumers`, `GET|DELETE /api/v1/consumers/{consumer_id}`,
//! `GET /api/v1/consumers/{consumer_id}/events?limit`, `POST /api/v1/consumers/{consumer_id}/ack`.
//!
//! An upsert answers `200` (it creates or updates; the cursor is kept). Reading needs `read`;
//! creating, changing, deleting and acknowledging change server state and need `write`.

use allsource_application::use_cases::{ConsumerError, ConsumerView, RegisterConsumerInput};
use allsource_domain::Permission::{Read, Write};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{EventResponse, timestamp};
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The consumer routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/consumers", Requires(Write), upsert)
        .get("/api/v1/consumers", Requires(Read), list)
        .get("/api/v1/consumers/{consumer_id}", Requires(Read), one)
        .add(
            Route::delete("/api/v1/consumers/{consumer_id}", Requires(Write)).responds(&[204]),
            delete,
        )
        .add(
            Route::get("/api/v1/consumers/{consumer_id}/events", Requires(Read))
                .params::<PollParams>(),
            poll,
        )
        .post("/api/v1/consumers/{consumer_id}/ack", Requires(Write), ack)
}

impl From<ConsumerError> for ApiError {
    fn from(e: ConsumerError) -> Self {
        match e {
            ConsumerError::Invalid(errors) => Self::validation(errors),
            ConsumerError::NotFound(what) => Self::not_found(what),
            ConsumerError::Forbidden(why) => Self::forbidden(why),
            ConsumerError::Conflict(what) => Self::conflict(what),
            ConsumerError::QuotaExceeded(quota) => Self::quota_exceeded(&quota),
            ConsumerError::Unavailable(why) => Self::unavailable(why),
            ConsumerError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// The body of `POST /api/v1/consumers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConsumerRequest {
    #[serde(default)]
    pub consumer_id: Option<String>,
    #[serde(default)]
    pub event_type_filters: Option<Vec<String>>,
}

/// The body of `POST /api/v1/consumers/{consumer_id}/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[serde(default)]
    pub position: Option<u64>,
}

/// Query parameters of `GET /api/v1/consumers/{consumer_id}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PollParams {
    pub limit: Option<String>,
}

/// A consumer as JSON (`ConsumerState` of the API).
pub fn consumer_json(view: &ConsumerView) -> Value {
    json!({
        "consumer_id": view.consumer_id.as_str(),
        "event_type_filters": view.filters.to_strings(),
        "cursor_position": view.cursor_position,
        "created_at": timestamp(view.created_at),
        "updated_at": timestamp(view.updated_at),
    })
}

/// `POST /api/v1/consumers`: creates the consumer or changes its filters (the cursor is kept).
pub async fn upsert(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<RegisterConsumerRequest>,
) -> Result<Response, ApiError> {
    let view = app
        .consumers
        .upsert(
            &caller,
            RegisterConsumerInput {
                consumer_id: body.consumer_id,
                event_type_filters: body.event_type_filters,
            },
        )
        .await?;
    Ok(Json(consumer_json(&view)).into_response())
}

/// `GET /api/v1/consumers`: the tenant's consumers, by name.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.consumers.list(&caller).await?;
    let consumers: Vec<Value> = views.iter().map(consumer_json).collect();
    Ok(Json(json!({"total": consumers.len(), "consumers": consumers})).into_response())
}

/// `GET /api/v1/consumers/{consumer_id}`.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let view = app.consumers.get(&caller, &id).await?;
    Ok(Json(consumer_json(&view)).into_response())
}

/// `DELETE /api/v1/consumers/{consumer_id}`: `204`.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    app.consumers.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/consumers/{consumer_id}/events?limit`: the matching events after the cursor.
pub async fn poll(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    Params(params): Params<PollParams>,
) -> Result<Response, ApiError> {
    let polled = app
        .consumers
        .poll(&caller, &id, params.limit.as_deref())
        .await?;
    let events: Vec<EventResponse<'_>> = polled
        .events
        .iter()
        .map(|e| EventResponse::from(e.as_ref()))
        .collect();
    Ok(Json(json!({
        "events": events,
        "count": polled.events.len(),
        "has_more": polled.has_more,
    }))
    .into_response())
}

/// `POST /api/v1/consumers/{consumer_id}/ack`: moves the cursor forward (monotonic).
pub async fn ack(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<AckRequest>,
) -> Result<Response, ApiError> {
    let position = app.consumers.ack(&caller, &id, body.position).await?;
    Ok(Json(json!({"status": "ok", "consumer_id": id, "position": position})).into_response())
}

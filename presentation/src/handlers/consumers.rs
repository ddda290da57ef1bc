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
use serde::{Deserialize, Serialize};

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
        .add(
            Route::post("/api/v1/consumers", Requires(Write))
                .body::<RegisterConsumerRequest>()
                .returns::<ConsumerResponse>()
                .problems(&[409]),
            upsert,
        )
        .add(
            Route::get("/api/v1/consumers", Requires(Read)).returns::<ConsumerListResponse>(),
            list,
        )
        .add(
            Route::get("/api/v1/consumers/{consumer_id}", Requires(Read))
                .returns::<ConsumerResponse>(),
            one,
        )
        .add(
            Route::delete("/api/v1/consumers/{consumer_id}", Requires(Write))
                .responds(&[204])
                .problems(&[409]),
            delete,
        )
        .add(
            Route::get("/api/v1/consumers/{consumer_id}/events", Requires(Read))
                .params::<PollParams>()
                .returns::<PolledResponse>(),
            poll,
        )
        .add(
            Route::post("/api/v1/consumers/{consumer_id}/ack", Requires(Write))
                .body::<AckRequest>()
                .returns::<AckResponse>()
                .problems(&[409]),
            ack,
        )
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterConsumerRequest {
    /// 1–128 of `[A-Za-z0-9._:-]` (required; the use case names it when missing).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::name, required = true)]
    pub consumer_id: Option<String>,
    /// Type filters (`x`, `x.*`, `*`); absent or `[]`: every type.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::type_filters_or_null)]
    pub event_type_filters: Option<Vec<String>>,
}

/// The body of `POST /api/v1/consumers/{consumer_id}/ack`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The position processed last (required; the use case names it when missing).
    #[serde(default)]
    #[schema(value_type = u64, required = true)]
    pub position: Option<u64>,
}

/// Query parameters of `GET /api/v1/consumers/{consumer_id}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PollParams {
    pub limit: Option<String>,
}

/// A consumer (`ConsumerState` of the API).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerResponse<'a> {
    pub consumer_id: &'a str,
    pub event_type_filters: Vec<String>,
    /// The last acknowledged position; `null` before the first ack.
    #[schema(required = true)]
    pub cursor_position: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
}

impl<'a> From<&'a ConsumerView> for ConsumerResponse<'a> {
    fn from(view: &'a ConsumerView) -> Self {
        Self {
            consumer_id: view.consumer_id.as_str(),
            event_type_filters: view.filters.to_strings(),
            cursor_position: view.cursor_position,
            created_at: timestamp(view.created_at),
            updated_at: timestamp(view.updated_at),
        }
    }
}

/// `GET /api/v1/consumers`, by name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerListResponse<'a> {
    pub total: usize,
    pub consumers: Vec<ConsumerResponse<'a>>,
}

/// `GET /api/v1/consumers/{consumer_id}/events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolledResponse<'a> {
    pub events: Vec<EventResponse<'a>>,
    pub count: usize,
    pub has_more: bool,
}

fn ok() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(["ok"], false)
}

/// `POST /api/v1/consumers/{consumer_id}/ack`: the cursor as it is afterwards.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AckResponse<'a> {
    /// Always `ok`.
    #[schema(schema_with = ok)]
    pub status: &'static str,
    pub consumer_id: &'a str,
    pub position: u64,
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
    Ok(Json(ConsumerResponse::from(&view)).into_response())
}

/// `GET /api/v1/consumers`: the tenant's consumers, by name.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.consumers.list(&caller).await?;
    let consumers: Vec<ConsumerResponse<'_>> = views.iter().map(ConsumerResponse::from).collect();
    Ok(Json(ConsumerListResponse {
        total: consumers.len(),
        consumers,
    })
    .into_response())
}

/// `GET /api/v1/consumers/{consumer_id}`.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let view = app.consumers.get(&caller, &id).await?;
    Ok(Json(ConsumerResponse::from(&view)).into_response())
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
    Ok(Json(PolledResponse {
        count: events.len(),
        events,
        has_more: polled.has_more,
    })
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
    Ok(Json(AckResponse {
        status: "ok",
        consumer_id: &id,
        position,
    })
    .into_response())
}

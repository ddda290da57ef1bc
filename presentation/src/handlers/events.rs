//! `POST /api/v1/events`, `POST /api/v1/events/batch`, `GET /api/v1/events/query`,
//! `GET /api/v1/events/{event_id}`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use allsource_domain::Permission::{Read, Write};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{
    AppendBatchRequest, AppendEventRequest, BatchResponse, EventResponse, QueryParams,
    QueryResponse, ReceiptResponse,
};
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{RecordCount, Route, Routes};
use crate::trace_context::{RequestTrace, with_traceparent};

/// The event routes.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::post("/api/v1/events", Requires(Write))
                .body::<AppendEventRequest>()
                .returns::<ReceiptResponse>()
                .records(RecordCount::One)
                .problems(&[409, 422]),
            append_one,
        )
        .add(
            Route::post("/api/v1/events/batch", Requires(Write))
                .body::<AppendBatchRequest>()
                .returns::<BatchResponse>()
                .records(RecordCount::EventsInBody)
                .problems(&[409, 422]),
            append_batch,
        )
        .add(
            Route::get("/api/v1/events/query", Requires(Read))
                .returns::<QueryResponse>()
                .params::<QueryParams>(),
            query,
        )
        .add(
            Route::get("/api/v1/events/{event_id}", Requires(Read)).returns::<EventResponse>(),
            event,
        )
}

/// `POST /api/v1/events`: one event → 200 with its receipt.
pub async fn append_one(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    trace: Option<Extension<RequestTrace>>,
    JsonBody(request): JsonBody<AppendEventRequest>,
) -> Result<Response, ApiError> {
    let mut input: allsource_application::use_cases::AppendEventInput = request.into();
    if let Some(Extension(trace)) = &trace {
        input.metadata = with_traceparent(input.metadata.take(), trace);
    }
    let receipt = state.append.one(&caller, input).await?;
    Ok(Json(ReceiptResponse::from(&receipt)).into_response())
}

/// `POST /api/v1/events/batch`: all events or none → 200 with one receipt per event.
pub async fn append_batch(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    trace: Option<Extension<RequestTrace>>,
    JsonBody(request): JsonBody<AppendBatchRequest>,
) -> Result<Response, ApiError> {
    let mut inputs = request.try_into_inputs()?;
    if let Some(Extension(trace)) = &trace {
        for input in &mut inputs {
            input.metadata = with_traceparent(input.metadata.take(), trace);
        }
    }
    let reply = state.append.batch(&caller, inputs).await?;
    Ok(Json(BatchResponse::from(&reply)).into_response())
}

/// `GET /api/v1/events/query`: filtered, paged events in position order.
pub async fn query(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(params): Params<QueryParams>,
) -> Result<Response, ApiError> {
    let page = state.reads.query(&caller, params.into()).await?;
    Ok(Json(QueryResponse::from(&page)).into_response())
}

/// `GET /api/v1/events/{event_id}`: the event, or 404.
pub async fn event(
    State(state): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(event_id): PathParam,
) -> Result<Response, ApiError> {
    let event = state.reads.event(&caller, &event_id).await?;
    Ok(Json(EventResponse::from(event.as_ref())).into_response())
}

//! `GET /api/v1/analytics/{frequency,summary,correlation}`,
//! `POST /api/v1/analytics/{time-series,funnel,cohorts,trend,anomalies}`, `POST /api/v1/query`
//! (the JSON DSL) and `POST /api/v1/sql`.
//!
//! All need `read` and answer for the caller's tenant only. Bad parameters are 400 with the
//! fields named; a statement that does not parse or is not a query is 400 with the engine's
//! message; a bound hit is 422 (`query_too_large`) or 408 (`query_timeout`).

use allsource_application::analytics::{
    AnalyticsError, CorrelationInput, DslAnswer, FrequencyInput, SummaryInput,
};
use allsource_domain::Permission::Read;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::EventResponse;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params};
use crate::routes::{Route, Routes};

/// The analytics, DSL and SQL routes, with the access each needs.
pub fn routes() -> Routes {
    // Every analysis has a time limit (408) and bounds on its answer and memory (422).
    let analysis = |route: Route| route.problems(&[408, 422]);
    Routes::new()
        .add(
            analysis(Route::get("/api/v1/analytics/frequency", Requires(Read)))
                .params::<FrequencyParams>(),
            frequency,
        )
        .add(
            analysis(Route::get("/api/v1/analytics/summary", Requires(Read)))
                .params::<SummaryParams>(),
            summary,
        )
        .add(
            analysis(Route::get("/api/v1/analytics/correlation", Requires(Read)))
                .params::<CorrelationParams>(),
            correlation,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/time-series", Requires(Read))),
            time_series,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/funnel", Requires(Read))),
            funnel,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/cohorts", Requires(Read))),
            cohorts,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/trend", Requires(Read))),
            trend,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/anomalies", Requires(Read))),
            anomalies,
        )
        .add(
            analysis(Route::post("/api/v1/query", Requires(Read))),
            query,
        )
        .add(analysis(Route::post("/api/v1/sql", Requires(Read))), sql)
}

impl From<AnalyticsError> for ApiError {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::Invalid(errors) => Self::validation(errors),
            AnalyticsError::BadStatement(why) => Self::invalid("query", why),
            AnalyticsError::TooLarge(why) => Self::query_too_large(why),
            AnalyticsError::Timeout(why) => Self::query_timeout(why),
            AnalyticsError::Unavailable(why) => Self::unavailable(why),
            AnalyticsError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// Query parameters of `GET /api/v1/analytics/frequency`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FrequencyParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
    pub window: Option<String>,
}

/// Query parameters of `GET /api/v1/analytics/summary`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
}

/// Query parameters of `GET /api/v1/analytics/correlation`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CorrelationParams {
    pub event_type_a: Option<String>,
    pub event_type_b: Option<String>,
    pub time_window_seconds: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// The body of `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlBody {
    pub query: Option<String>,
}

/// `GET /api/v1/analytics/frequency`.
pub async fn frequency(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(p): Params<FrequencyParams>,
) -> Result<Response, ApiError> {
    let input = FrequencyInput {
        since: p.since,
        until: p.until,
        entity_id: p.entity_id,
        event_type: p.event_type,
        window: p.window,
    };
    Ok(Json(app.analytics.frequency(&caller, input).await?).into_response())
}

/// `GET /api/v1/analytics/summary`.
pub async fn summary(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(p): Params<SummaryParams>,
) -> Result<Response, ApiError> {
    let input = SummaryInput {
        since: p.since,
        until: p.until,
        entity_id: p.entity_id,
        event_type: p.event_type,
    };
    Ok(Json(app.analytics.summary(&caller, input).await?).into_response())
}

/// `GET /api/v1/analytics/correlation`.
pub async fn correlation(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    Params(p): Params<CorrelationParams>,
) -> Result<Response, ApiError> {
    let input = CorrelationInput {
        event_type_a: p.event_type_a,
        event_type_b: p.event_type_b,
        time_window_seconds: p.time_window_seconds,
        since: p.since,
        until: p.until,
    };
    Ok(Json(app.analytics.correlation(&caller, input).await?).into_response())
}

/// `POST /api/v1/analytics/time-series`.
pub async fn time_series(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    Ok(Json(app.analytics.time_series(&caller, &body).await?).into_response())
}

/// `POST /api/v1/analytics/funnel`.
pub async fn funnel(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    Ok(Json(app.analytics.funnel(&caller, &body).await?).into_response())
}

/// `POST /api/v1/analytics/cohorts`.
pub async fn cohorts(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    Ok(Json(app.analytics.cohorts(&caller, &body).await?).into_response())
}

/// `POST /api/v1/analytics/trend`.
pub async fn trend(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    Ok(Json(app.analytics.trend(&caller, &body).await?).into_response())
}

/// `POST /api/v1/analytics/anomalies`.
pub async fn anomalies(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    Ok(Json(app.analytics.anomalies(&caller, &body).await?).into_response())
}

/// `POST /api/v1/query`: whole events (`events`), or the selected fields (`rows`).
pub async fn query(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let answer = match app.analytics.query(&caller, &body).await? {
        DslAnswer::Events { events, has_more } => {
            let list: Vec<EventResponse<'_>> = events
                .iter()
                .map(|e| EventResponse::from(e.as_ref()))
                .collect();
            json!({"events": list, "count": list.len(), "has_more": has_more})
        }
        DslAnswer::Rows { rows, has_more } => {
            json!({"count": rows.len(), "rows": rows, "has_more": has_more})
        }
    };
    Ok(Json(answer).into_response())
}

/// `POST /api/v1/sql`: `{"columns", "rows", "row_count"}`.
pub async fn sql(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<SqlBody>,
) -> Result<Response, ApiError> {
    let answer = app.analytics.sql(&caller, body.query.as_deref()).await?;
    Ok(Json(json!({
        "columns": answer.columns,
        "row_count": answer.rows.len(),
        "rows": answer.rows,
    }))
    .into_response())
}

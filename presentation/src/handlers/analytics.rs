//! `GET /api/v1/analytics/{frequency,summary,correlation}`,
//! `POST /api/v1/analytics/{time-series,funnel,cohorts,trend,anomalies}`, `POST /api/v1/query`
//! (the JSON DSL) and `POST /api/v1/sql`.
//!
//! All need `read` and answer for the caller's tenant only. Bad parameters are 400 with the
//! fields named; a statement that does not parse or is not a query is 400 with the engine's
//! message; a bound hit is 422 (`query_too_large`) or 408 (`query_timeout`).
//!
//! The analyses read their bodies as JSON values (each use case names every bad or unknown
//! member at once, at its path) and answer JSON values: the request and answer shapes of the
//! OpenAPI document are described here, by documentation types, after `docs/API.md`.

use allsource_application::analytics::{
    AnalyticsError, CorrelationInput, DslAnswer, FrequencyInput, SummaryInput,
};
use allsource_domain::Permission::Read;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::EventResponse;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params};
use crate::openapi::string_enum;
use crate::routes::{Route, Routes};

/// The analytics, DSL and SQL routes, with the access each needs.
pub fn routes() -> Routes {
    // Every analysis has a time limit (408) and bounds on its answer and memory (422).
    let analysis = |route: Route| route.problems(&[408, 422]);
    Routes::new()
        .add(
            analysis(Route::get("/api/v1/analytics/frequency", Requires(Read)))
                .params::<FrequencyParams>()
                .returns::<FrequencyAnswer>(),
            frequency,
        )
        .add(
            analysis(Route::get("/api/v1/analytics/summary", Requires(Read)))
                .params::<SummaryParams>()
                .returns::<SummaryAnswer>(),
            summary,
        )
        .add(
            analysis(Route::get("/api/v1/analytics/correlation", Requires(Read)))
                .params::<CorrelationParams>()
                .returns::<CorrelationAnswer>(),
            correlation,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/time-series", Requires(Read)))
                .body::<TimeSeriesRequest>()
                .returns::<TimeSeriesAnswer>(),
            time_series,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/funnel", Requires(Read)))
                .body::<FunnelRequest>()
                .returns::<FunnelAnswer>(),
            funnel,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/cohorts", Requires(Read)))
                .body::<CohortsRequest>()
                .returns::<CohortsAnswer>(),
            cohorts,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/trend", Requires(Read)))
                .body::<TrendRequest>()
                .returns::<TrendAnswer>(),
            trend,
        )
        .add(
            analysis(Route::post("/api/v1/analytics/anomalies", Requires(Read)))
                .body::<AnomaliesRequest>()
                .returns::<AnomaliesAnswer>(),
            anomalies,
        )
        .add(
            analysis(Route::post("/api/v1/query", Requires(Read)))
                .body::<DslRequest>()
                .returns::<DslResponse>(),
            query,
        )
        .add(
            analysis(Route::post("/api/v1/sql", Requires(Read)))
                .body::<SqlBody>()
                .returns::<SqlResponse>(),
            sql,
        )
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlBody {
    /// One read-only statement (required, non-empty; the use case names it otherwise).
    #[schema(value_type = String, required = true)]
    pub query: Option<String>,
}

/// The answer of `POST /api/v1/sql`: each row maps a column's name to its value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SqlResponse<'a> {
    /// The answer's columns, in order.
    pub columns: &'a [String],
    pub row_count: usize,
    #[schema(schema_with = crate::openapi::list_of_objects)]
    pub rows: &'a [Map<String, Value>],
}

/// The answer of `POST /api/v1/query`: whole events (without `select`), or the selected
/// fields (`rows`: each maps a field's canonical name to its value, `null` when absent).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DslResponse<'a> {
    Events {
        events: Vec<EventResponse<'a>>,
        count: usize,
        has_more: bool,
    },
    Rows {
        count: usize,
        #[schema(schema_with = crate::openapi::list_of_objects)]
        rows: &'a [Map<String, Value>],
        has_more: bool,
    },
}

// ---------------------------------------------------------------------------------------------
// Documentation of the analyses' bodies and answers (see the module docs)

const INTERVALS: [&str; 5] = ["minute", "hour", "day", "week", "month"];
const FUNCTIONS: [&str; 11] = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "variance",
    "percentile",
    "distinct",
    "first",
    "last",
];
const FILLS: [&str; 3] = ["zero", "null", "none"];
const PERIODS: [&str; 3] = ["day", "week", "month"];
const METHODS: [&str; 3] = ["zscore", "iqr", "mad"];
/// The operators of a DSL condition (its array's first element).
const CONDITION_OPERATORS: [&str; 12] = [
    "and", "or", "not", "=", "!=", ">", ">=", "<", "<=", "in", "contains", "exists",
];

fn interval() -> RefOr<Schema> {
    string_enum(INTERVALS, false)
}

fn function_or_null() -> RefOr<Schema> {
    string_enum(FUNCTIONS, true)
}

fn function() -> RefOr<Schema> {
    string_enum(FUNCTIONS, false)
}

fn fill_or_null() -> RefOr<Schema> {
    string_enum(FILLS, true)
}

fn period() -> RefOr<Schema> {
    string_enum(PERIODS, false)
}

fn period_or_null() -> RefOr<Schema> {
    string_enum(PERIODS, true)
}

fn method() -> RefOr<Schema> {
    string_enum(METHODS, false)
}

fn method_or_null() -> RefOr<Schema> {
    string_enum(METHODS, true)
}

fn direction() -> RefOr<Schema> {
    string_enum(["increasing", "decreasing", "stable"], false)
}

/// A DSL condition: an array whose first element is its operator (`["=", "event_type",
/// "order.placed"]`, `["and", c1, c2]`); `null` is no condition.
fn condition_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        ArrayBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Array, Type::Null]))
            .prefix_items([Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(CONDITION_OPERATORS))
                    .build(),
            )])
            .items(crate::openapi::any_value())
            .min_items(Some(1))
            .build(),
    ))
}

/// A number from `min` to `max`, or `null`.
fn number_or_null(min: f64, max: f64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Number, Type::Null]))
        .minimum(Some(min))
        .maximum(Some(max))
}

/// A whole number from `min` to `max`, or `null`.
fn integer_or_null(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Integer, Type::Null]))
        .minimum(Some(min))
        .maximum(Some(max))
}

fn percentile_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(number_or_null(0.0, 100.0).build()))
}

fn periods_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(integer_or_null(1, 100).build()))
}

fn forecast_periods_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(integer_or_null(0, 100).build()))
}

/// Above 0, at most 1000 (default per method).
fn sensitivity_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Number, Type::Null]))
            .exclusive_minimum(Some(0.0))
            .maximum(Some(1000.0))
            .build(),
    ))
}

/// At least 1 ms (at most `analytics.max_range_days` days), default 86,400,000.
fn within_ms_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Integer, Type::Null]))
            .minimum(Some(1))
            .build(),
    ))
}

fn limit_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Object(integer_or_null(1, 10_000).build()))
}

/// A field name, or `{"field", "direction"?}`, or a list of up to 8 of them; `null`: by
/// position.
fn order_by_or_null() -> RefOr<Schema> {
    let key = || {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(OrderKeyDoc::schema())
                .build(),
        ))
    };
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(OrderKeyDoc::schema())
            .item(ArrayBuilder::new().items(key()).max_items(Some(8)))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    ))
}

/// Select 1 to 64 distinct fields; `null`: whole events.
fn select_or_null() -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        ArrayBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Array, Type::Null]))
            .items(ObjectBuilder::new().schema_type(Type::String))
            .min_items(Some(1))
            .max_items(Some(64))
            .build(),
    ))
}

/// A number, or `null` when there is none (or it is not finite).
fn number_or_null_value() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::Number, Type::Null]))
            .build(),
    ))
}

/// One aggregation of a time series.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the use case reads the JSON value.
pub struct AggregationDoc {
    /// Default: the function's name; unique among the aggregations.
    name: Option<String>,
    #[serde(rename = "fn")]
    #[schema(schema_with = function)]
    function: String,
    /// A field (`payload.amount`); required by every function but `count`.
    field: Option<String>,
    /// With `percentile` (required there): 0 to 100.
    #[schema(schema_with = percentile_or_null)]
    p: Option<f64>,
}

/// The body of `POST /api/v1/analytics/time-series` (also the `series` of anomalies). A
/// member set to `null` is as if absent.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct TimeSeriesRequest {
    #[schema(schema_with = interval)]
    interval: String,
    #[schema(schema_with = crate::openapi::time_or_null)]
    since: Option<String>,
    #[schema(schema_with = crate::openapi::time_or_null)]
    until: Option<String>,
    #[schema(schema_with = crate::openapi::event_type_or_null)]
    event_type: Option<String>,
    entity_id: Option<String>,
    #[serde(rename = "where")]
    #[schema(schema_with = condition_or_null)]
    condition: Option<Value>,
    /// A field: one series per distinct value.
    group_by: Option<String>,
    /// 1 to 16.
    #[schema(min_items = 1, max_items = 16)]
    aggregations: Vec<AggregationDoc>,
    /// Default `zero`.
    #[schema(schema_with = fill_or_null)]
    fill_missing: Option<String>,
}

/// One step of a funnel.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct FunnelStepDoc {
    /// Default: the event type.
    name: Option<String>,
    #[schema(schema_with = crate::openapi::event_type)]
    event_type: String,
    #[serde(rename = "where")]
    #[schema(schema_with = condition_or_null)]
    condition: Option<Value>,
}

/// The body of `POST /api/v1/analytics/funnel`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct FunnelRequest {
    /// 2 to 10 steps, in order.
    #[schema(min_items = 2, max_items = 10)]
    steps: Vec<FunnelStepDoc>,
    #[schema(schema_with = within_ms_or_null)]
    within_ms: Option<i64>,
    #[schema(schema_with = crate::openapi::time_or_null)]
    since: Option<String>,
    #[schema(schema_with = crate::openapi::time_or_null)]
    until: Option<String>,
}

/// The body of `POST /api/v1/analytics/cohorts`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct CohortsRequest {
    #[schema(schema_with = crate::openapi::event_type)]
    first_event_type: String,
    #[schema(schema_with = crate::openapi::event_type)]
    return_event_type: String,
    /// Default `week`.
    #[schema(schema_with = period_or_null)]
    period: Option<String>,
    /// 1 to 100, default 12.
    #[schema(schema_with = periods_or_null)]
    periods: Option<i64>,
    #[schema(schema_with = crate::openapi::time_or_null)]
    since: Option<String>,
    #[schema(schema_with = crate::openapi::time_or_null)]
    until: Option<String>,
}

/// The body of `POST /api/v1/analytics/trend`: a time series' members but `aggregations` and
/// `group_by`, with one aggregation at the top level, and the forecast.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct TrendRequest {
    #[schema(schema_with = interval)]
    interval: String,
    #[schema(schema_with = crate::openapi::time_or_null)]
    since: Option<String>,
    #[schema(schema_with = crate::openapi::time_or_null)]
    until: Option<String>,
    #[schema(schema_with = crate::openapi::event_type_or_null)]
    event_type: Option<String>,
    entity_id: Option<String>,
    #[serde(rename = "where")]
    #[schema(schema_with = condition_or_null)]
    condition: Option<Value>,
    /// Default `count`.
    #[serde(rename = "fn")]
    #[schema(schema_with = function_or_null)]
    function: Option<String>,
    /// Required by every function but `count`.
    field: Option<String>,
    /// For `percentile`: 0 to 100, default 50.
    #[schema(schema_with = percentile_or_null)]
    p: Option<f64>,
    #[schema(schema_with = fill_or_null)]
    fill_missing: Option<String>,
    /// 0 to 100, default 3.
    #[schema(schema_with = forecast_periods_or_null)]
    forecast_periods: Option<i64>,
}

/// The body of `POST /api/v1/analytics/anomalies`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct AnomaliesRequest {
    series: TimeSeriesRequest,
    /// Default `zscore`.
    #[schema(schema_with = method_or_null)]
    method: Option<String>,
    #[schema(schema_with = sensitivity_or_null)]
    sensitivity: Option<f64>,
    /// The series' aggregation to examine (default: the first).
    aggregation: Option<String>,
}

/// A sort key of a DSL query.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub struct OrderKeyDoc {
    field: String,
    /// Default `asc`.
    #[schema(schema_with = sort_direction, nullable = false)]
    direction: Option<String>,
}

fn sort_direction() -> RefOr<Schema> {
    string_enum(["asc", "desc"], false)
}

/// The body of `POST /api/v1/query`, every member optional (`null` is as if absent).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the domain's DSL parser reads the JSON value.
pub struct DslRequest {
    #[schema(schema_with = select_or_null)]
    select: Option<Vec<String>>,
    #[serde(rename = "where")]
    #[schema(schema_with = condition_or_null)]
    condition: Option<Value>,
    #[schema(schema_with = order_by_or_null)]
    order_by: Option<Value>,
    /// 1 to 10,000, default 100.
    #[schema(schema_with = limit_or_null)]
    limit: Option<u64>,
}

/// A range that was read: `since` (inclusive) to `until` (exclusive).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct TimeRangeDoc {
    from: String,
    to: String,
}

/// A bucket of `GET /api/v1/analytics/frequency`: `event_types` counts each type in it.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct FrequencyBucketDoc {
    /// The bucket's start.
    timestamp: String,
    count: u64,
    event_types: BTreeMap<String, u64>,
}

/// The answer of `GET /api/v1/analytics/frequency`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct FrequencyAnswer {
    #[schema(schema_with = interval)]
    window: String,
    time_range: TimeRangeDoc,
    total_events: u64,
    buckets: Vec<FrequencyBucketDoc>,
}

/// The range of a summary: `null` ends without events (and without `since`/`until`).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct SummaryRangeDoc {
    #[schema(required = true)]
    from: Option<String>,
    #[schema(required = true)]
    to: Option<String>,
}

/// One of the most frequent event types.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct TopEventTypeDoc {
    event_type: String,
    count: u64,
    /// A share of `total_events`, 0 to 100.
    percentage: f64,
}

/// One of the entities with the most events.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct TopEntityDoc {
    entity_id: String,
    count: u64,
    /// A share of `total_events`, 0 to 100.
    percentage: f64,
}

/// The answer of `GET /api/v1/analytics/summary`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct SummaryAnswer {
    total_events: u64,
    unique_entities: u64,
    unique_event_types: u64,
    time_range: SummaryRangeDoc,
    events_per_day: f64,
    top_event_types: Vec<TopEventTypeDoc>,
    top_entities: Vec<TopEntityDoc>,
    #[schema(required = true)]
    first_event: Option<String>,
    #[schema(required = true)]
    last_event: Option<String>,
}

/// One pair of a correlation.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct CorrelationExampleDoc {
    entity_id: String,
    event_a_timestamp: String,
    event_b_timestamp: String,
    time_between_seconds: f64,
}

/// The answer of `GET /api/v1/analytics/correlation`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct CorrelationAnswer {
    event_type_a: String,
    event_type_b: String,
    time_window_seconds: i64,
    total_a: u64,
    total_b: u64,
    correlated_pairs: u64,
    /// 0 to 100.
    correlation_percentage: f64,
    avg_time_between_seconds: f64,
    /// The first 10 pairs.
    examples: Vec<CorrelationExampleDoc>,
}

/// A point of a time series: `values` maps each aggregation's name to its value.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct SeriesPointDoc {
    timestamp: String,
    /// The group's value (any JSON value, `null` for events without the field); only with
    /// `group_by`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::openapi::any_value)]
    group: Option<Value>,
    #[schema(schema_with = crate::openapi::any_object)]
    values: Map<String, Value>,
}

/// The answer of `POST /api/v1/analytics/time-series`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct TimeSeriesAnswer {
    #[schema(schema_with = interval)]
    interval: String,
    time_range: TimeRangeDoc,
    /// The field grouped by; `null` without `group_by`.
    #[schema(required = true)]
    group_by: Option<String>,
    points: Vec<SeriesPointDoc>,
}

/// A step of a funnel's answer: `converted`, `conversion_rate` and
/// `median_time_to_convert_ms` are about the next step (`null` on the last one, and without
/// anyone to measure).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct FunnelStepAnswerDoc {
    name: String,
    event_type: String,
    entered: u64,
    #[schema(required = true)]
    converted: Option<u64>,
    #[schema(required = true)]
    conversion_rate: Option<f64>,
    #[schema(required = true)]
    conversion_from_start: Option<f64>,
    #[schema(required = true)]
    median_time_to_convert_ms: Option<f64>,
}

/// The answer of `POST /api/v1/analytics/funnel`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct FunnelAnswer {
    within_ms: i64,
    entered: u64,
    completed: u64,
    /// `null` when no entity entered.
    #[schema(required = true)]
    overall_conversion: Option<f64>,
    steps: Vec<FunnelStepAnswerDoc>,
}

/// A cohort: `retention[k]` of its `size` entities came back in its k-th period after its own.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct CohortDoc {
    /// The period's start.
    cohort: String,
    size: u64,
    retention: Vec<u64>,
    /// `retention[k]` / `size`, 0 to 1.
    rates: Vec<f64>,
}

/// The answer of `POST /api/v1/analytics/cohorts`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct CohortsAnswer {
    #[schema(schema_with = period)]
    period: String,
    first_event_type: String,
    return_event_type: String,
    time_range: TimeRangeDoc,
    cohorts: Vec<CohortDoc>,
}

/// A point of a trend's series: the aggregation's value (`null` in a gap filled with
/// `null`).
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct TrendPointDoc {
    timestamp: String,
    #[schema(schema_with = crate::openapi::any_value)]
    value: Value,
}

/// A forecast point of a trend.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ForecastPointDoc {
    timestamp: String,
    #[schema(schema_with = number_or_null_value)]
    value: Option<f64>,
}

/// The answer of `POST /api/v1/analytics/trend`; without points, the line's figures are
/// `null`, `direction` is `stable` and `forecast` is empty.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct TrendAnswer {
    #[schema(schema_with = interval)]
    interval: String,
    time_range: TimeRangeDoc,
    points: Vec<TrendPointDoc>,
    #[schema(schema_with = number_or_null_value, required = true)]
    slope: Option<f64>,
    #[schema(schema_with = number_or_null_value, required = true)]
    intercept: Option<f64>,
    #[schema(schema_with = number_or_null_value, required = true)]
    change: Option<f64>,
    /// `null` when the first value is 0 or there is a single point.
    #[schema(schema_with = number_or_null_value, required = true)]
    change_percent: Option<f64>,
    #[schema(schema_with = direction)]
    direction: String,
    forecast: Vec<ForecastPointDoc>,
}

/// A point flagged by `POST /api/v1/analytics/anomalies`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct AnomalyDoc {
    timestamp: String,
    value: f64,
    #[schema(schema_with = number_or_null_value)]
    score: Option<f64>,
    #[schema(schema_with = number_or_null_value)]
    expected: Option<f64>,
    /// The group's value; only when the series has a `group_by`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::openapi::any_value)]
    group: Option<Value>,
}

/// The answer of `POST /api/v1/analytics/anomalies`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct AnomaliesAnswer {
    #[schema(schema_with = method)]
    method: String,
    sensitivity: f64,
    aggregation: String,
    /// How many points were examined (all groups).
    points: u64,
    anomalies: Vec<AnomalyDoc>,
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
    let answer = app.analytics.query(&caller, &body).await?;
    let response = match &answer {
        DslAnswer::Events { events, has_more } => DslResponse::Events {
            count: events.len(),
            events: events
                .iter()
                .map(|e| EventResponse::from(e.as_ref()))
                .collect(),
            has_more: *has_more,
        },
        DslAnswer::Rows { rows, has_more } => DslResponse::Rows {
            count: rows.len(),
            rows,
            has_more: *has_more,
        },
    };
    Ok(Json(response).into_response())
}

/// `POST /api/v1/sql`: `{"columns", "rows", "row_count"}`.
pub async fn sql(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<SqlBody>,
) -> Result<Response, ApiError> {
    let answer = app.analytics.sql(&caller, body.query.as_deref()).await?;
    Ok(Json(SqlResponse {
        columns: &answer.columns,
        row_count: answer.rows.len(),
        rows: &answer.rows,
    })
    .into_response())
}

//! Consumer groups (competing consumers, at-least-once):
//! `GET|POST /api/v1/consumer-groups`, `GET|PUT|DELETE /api/v1/consumer-groups/{group}`,
//! `POST .../{group}/poll`, `POST .../{group}/ack`, `POST .../{group}/nack`,
//! `GET .../{group}/parked`, `POST .../{group}/parked/replay`, `GET .../{group}/stats`.
//!
//! Access: reading a group, its parked messages and its stats needs `read`; members (poll,
//! ack, nack, replay of parked messages) change the group's state and need `write`; creating,
//! changing and deleting a group is configuration and needs `manage_pipelines`, as projections.
//! Messages carry the Event exactly as every other route shows it ([`EventResponse`]).

use allsource_application::use_cases::consumer_groups::{
    GroupError, GroupInput, GroupStats, GroupView, Message, ParkedInput, ParkedMessage, ParkedPage,
    PollInput, Settled,
};
use allsource_domain::Permission::{ManagePipelines, Read, Write};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{EventResponse, timestamp};
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The consumer-group routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/consumer-groups", Requires(Read)).returns::<GroupListResponse>(),
            list,
        )
        .add(
            Route::post("/api/v1/consumer-groups", Requires(ManagePipelines))
                .body::<NewGroupRequest>()
                .returns::<GroupResponse>()
                .responds(&[201])
                .problems(&[409]),
            create,
        )
        .add(
            Route::get("/api/v1/consumer-groups/{group}", Requires(Read))
                .returns::<GroupResponse>(),
            one,
        )
        .add(
            Route::put("/api/v1/consumer-groups/{group}", Requires(ManagePipelines))
                .body::<GroupRequest>()
                .returns::<GroupResponse>()
                .problems(&[409]),
            update,
        )
        .add(
            Route::delete("/api/v1/consumer-groups/{group}", Requires(ManagePipelines))
                .returns::<GroupDeletedResponse>()
                .problems(&[409]),
            delete,
        )
        .add(
            Route::post("/api/v1/consumer-groups/{group}/poll", Requires(Write))
                .body::<PollRequest>()
                .returns::<PollResponse>()
                .problems(&[409]),
            poll,
        )
        .add(
            Route::post("/api/v1/consumer-groups/{group}/ack", Requires(Write))
                .body::<SettleRequest>()
                .returns::<AckedResponse>()
                .problems(&[409]),
            ack,
        )
        .add(
            Route::post("/api/v1/consumer-groups/{group}/nack", Requires(Write))
                .body::<SettleRequest>()
                .returns::<NackedResponse>()
                .problems(&[409]),
            nack,
        )
        .add(
            Route::get("/api/v1/consumer-groups/{group}/parked", Requires(Read))
                .params::<ParkedParams>()
                .returns::<ParkedPageResponse>(),
            parked,
        )
        .add(
            Route::post(
                "/api/v1/consumer-groups/{group}/parked/replay",
                Requires(Write),
            )
            .no_body()
            .returns::<ReplayedResponse>()
            .problems(&[409]),
            replay,
        )
        .add(
            Route::get("/api/v1/consumer-groups/{group}/stats", Requires(Read))
                .returns::<GroupStatsResponse>(),
            stats,
        )
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::Invalid(errors) => Self::validation(errors),
            GroupError::NotFound(what) => Self::not_found(what),
            GroupError::Conflict(what) => Self::conflict(what),
            GroupError::Unavailable(why) => Self::unavailable(why),
            GroupError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// The body of `POST /api/v1/consumer-groups` and `PUT /api/v1/consumer-groups/{group}` (where
/// the fields sent replace their values, and `group`, when sent, must be the path's name).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    #[serde(default)]
    #[schema(schema_with = crate::openapi::name_or_null)]
    pub group: Option<String>,
    /// Type filters (`x`, `x.*`, `*`); `[]`: every type.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::type_filters_or_null)]
    pub event_type_filters: Option<Vec<String>>,
    /// The group delivers the events after this position (default 0: from the first
    /// event; cannot change).
    #[serde(default)]
    pub start_position: Option<u64>,
    #[serde(default)]
    pub ack_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_in_flight: Option<u64>,
    #[serde(default)]
    pub max_deliveries: Option<u64>,
}

/// The body of `POST /api/v1/consumer-groups`: a [`GroupRequest`] with its `group` (a test
/// holds the two alike).
#[derive(utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the handler reads a `GroupRequest`.
pub struct NewGroupRequest {
    /// 1–128 of `A-Z a-z 0-9 . _ : -` (required).
    #[schema(schema_with = crate::openapi::name)]
    group: String,
    /// Type filters (`x`, `x.*`, `*`); absent or `[]`: every type.
    #[schema(schema_with = crate::openapi::type_filters_or_null)]
    event_type_filters: Option<Vec<String>>,
    /// The group delivers the events after this position (default 0: from the first event).
    start_position: Option<u64>,
    ack_timeout_ms: Option<u64>,
    max_in_flight: Option<u64>,
    max_deliveries: Option<u64>,
}

impl From<GroupRequest> for GroupInput {
    fn from(r: GroupRequest) -> Self {
        Self {
            group: r.group,
            event_type_filters: r.event_type_filters,
            start_position: r.start_position,
            ack_timeout_ms: r.ack_timeout_ms,
            max_in_flight: r.max_in_flight,
            max_deliveries: r.max_deliveries,
        }
    }
}

/// The body of `POST .../{group}/poll`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// Who polls: 1–128 of `A-Z a-z 0-9 . _ : -` (required).
    #[serde(default)]
    #[schema(schema_with = crate::openapi::name, required = true)]
    pub member: Option<String>,
    /// At most this many messages, 1–1,000 (default 10).
    #[serde(default)]
    pub max: Option<u64>,
    /// How long to wait for a message, 0–30,000 ms (default 0).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// The body of `POST .../{group}/ack` and `.../nack`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    /// 1–1,000 delivery ids (UUIDs) (required).
    #[serde(default)]
    #[schema(schema_with = delivery_ids, required = true)]
    pub delivery_ids: Option<Vec<String>>,
}

/// 1 to 1,000 delivery ids.
fn delivery_ids() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Array(
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            )
            .min_items(Some(1))
            .max_items(Some(1000))
            .build(),
    ))
}

/// Query parameters of `GET .../{group}/parked`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ParkedParams {
    pub limit: Option<String>,
    pub after: Option<String>,
}

/// One delivered message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageResponse<'a> {
    pub delivery_id: &'a str,
    pub attempt: u32,
    pub event: EventResponse<'a>,
}

impl<'a> From<&'a Message> for MessageResponse<'a> {
    fn from(m: &'a Message) -> Self {
        Self {
            delivery_id: &m.delivery_id,
            attempt: m.attempt,
            event: EventResponse::from(m.event.as_ref()),
        }
    }
}

/// `POST .../{group}/poll`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PollResponse<'a> {
    pub messages: Vec<MessageResponse<'a>>,
}

/// One parked message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedResponse<'a> {
    pub position: u64,
    pub attempts: u32,
    pub parked_at: String,
    #[schema(required = true)]
    pub last_member: Option<&'a str>,
    pub last_delivery_id: &'a str,
    pub event: EventResponse<'a>,
}

impl<'a> From<&'a ParkedMessage> for ParkedResponse<'a> {
    fn from(p: &'a ParkedMessage) -> Self {
        Self {
            position: p.position,
            attempts: p.attempts,
            parked_at: timestamp(p.parked_at),
            last_member: p.member.as_deref(),
            last_delivery_id: &p.delivery_id,
            event: EventResponse::from(p.event.as_ref()),
        }
    }
}

/// `GET .../{group}/parked`. `next_after` is the position of the last message of the page
/// when more follow (pass it as `after`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedPageResponse<'a> {
    pub parked: Vec<ParkedResponse<'a>>,
    pub count: usize,
    pub total: usize,
    pub has_more: bool,
    #[schema(required = true)]
    pub next_after: Option<u64>,
}

impl<'a> From<&'a ParkedPage> for ParkedPageResponse<'a> {
    fn from(page: &'a ParkedPage) -> Self {
        let next_after = if page.has_more {
            page.messages.last().map(|m| m.position)
        } else {
            None
        };
        Self {
            parked: page.messages.iter().map(ParkedResponse::from).collect(),
            count: page.messages.len(),
            total: page.total,
            has_more: page.has_more,
            next_after,
        }
    }
}

/// A group.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupResponse<'a> {
    pub group: &'a str,
    pub event_type_filters: &'a [String],
    pub start_position: u64,
    pub ack_timeout_ms: u64,
    pub max_in_flight: u32,
    pub max_deliveries: u32,
    pub created_at: String,
    pub updated_at: String,
}

impl<'a> From<&'a GroupView> for GroupResponse<'a> {
    fn from(view: &'a GroupView) -> Self {
        let c = &view.config;
        Self {
            group: &view.group,
            event_type_filters: &c.filters,
            start_position: c.start_position,
            ack_timeout_ms: c.ack_timeout_ms,
            max_in_flight: c.max_in_flight,
            max_deliveries: c.max_deliveries,
            created_at: timestamp(c.created_at),
            updated_at: timestamp(c.updated_at),
        }
    }
}

/// `GET /api/v1/consumer-groups`, by name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupListResponse<'a> {
    pub total: usize,
    pub groups: Vec<GroupResponse<'a>>,
}

/// `DELETE /api/v1/consumer-groups/{group}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupDeletedResponse<'a> {
    pub group: &'a str,
    /// Always `true`.
    #[schema(schema_with = crate::openapi::always_true)]
    pub deleted: bool,
}

/// `POST .../{group}/parked/replay`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayedResponse<'a> {
    pub group: &'a str,
    /// Parked messages put back to be delivered again.
    pub replayed: usize,
}

/// A member of a group's stats.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberResponse<'a> {
    pub member: &'a str,
    pub last_poll_at: String,
    /// Messages it holds now.
    pub in_flight: usize,
}

/// `GET .../{group}/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupStatsResponse<'a> {
    pub group: &'a str,
    pub head_position: u64,
    pub read_position: u64,
    pub committed_position: u64,
    pub lag: u64,
    pub lag_capped: bool,
    pub in_flight: usize,
    pub waiting: usize,
    pub parked: usize,
    pub parked_full: bool,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub expired: u64,
    pub parked_total: u64,
    pub replayed: u64,
    pub members: Vec<MemberResponse<'a>>,
}

impl<'a> From<&'a GroupStats> for GroupStatsResponse<'a> {
    fn from(s: &'a GroupStats) -> Self {
        let c = &s.counters;
        Self {
            group: &s.group,
            head_position: s.head_position,
            read_position: s.read_position,
            committed_position: s.committed_position,
            lag: s.lag,
            lag_capped: s.lag_capped,
            in_flight: s.in_flight,
            waiting: s.waiting,
            parked: s.parked,
            parked_full: s.parked_full,
            delivered: c.delivered,
            redelivered: c.redelivered,
            acked: c.acked,
            nacked: c.nacked,
            expired: c.expired,
            parked_total: c.parked,
            replayed: c.replayed,
            members: s
                .members
                .iter()
                .map(|m| MemberResponse {
                    member: &m.member,
                    last_poll_at: timestamp(m.last_poll_at),
                    in_flight: m.in_flight,
                })
                .collect(),
        }
    }
}

/// `POST .../{group}/ack`: `ignored_ids` did not settle a message (in request order).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AckedResponse<'a> {
    pub acked: usize,
    pub ignored: usize,
    pub ignored_ids: &'a [String],
}

/// `POST .../{group}/nack`: `ignored_ids` did not settle a message (in request order).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NackedResponse<'a> {
    pub nacked: usize,
    pub ignored: usize,
    pub ignored_ids: &'a [String],
}

impl<'a> From<&'a Settled> for AckedResponse<'a> {
    fn from(s: &'a Settled) -> Self {
        Self {
            acked: s.settled,
            ignored: s.ignored.len(),
            ignored_ids: &s.ignored,
        }
    }
}

impl<'a> From<&'a Settled> for NackedResponse<'a> {
    fn from(s: &'a Settled) -> Self {
        Self {
            nacked: s.settled,
            ignored: s.ignored.len(),
            ignored_ids: &s.ignored,
        }
    }
}

/// `GET /api/v1/consumer-groups`: the tenant's groups, by name.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let groups = app.consumer_groups.list(&caller).await?;
    let groups: Vec<GroupResponse<'_>> = groups.iter().map(GroupResponse::from).collect();
    Ok(Json(GroupListResponse {
        total: groups.len(),
        groups,
    })
    .into_response())
}

/// `POST /api/v1/consumer-groups`: creates a group (`201` with a `Location`).
pub async fn create(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<GroupRequest>,
) -> Result<Response, ApiError> {
    let view = app.consumer_groups.create(&caller, body.into()).await?;
    let mut response = (StatusCode::CREATED, Json(GroupResponse::from(&view))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/consumer-groups/{}", view.group)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/consumer-groups/{group}`.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    let view = app.consumer_groups.get(&caller, &name).await?;
    Ok(Json(GroupResponse::from(&view)).into_response())
}

/// `PUT /api/v1/consumer-groups/{group}`: changes the fields sent.
pub async fn update(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<GroupRequest>,
) -> Result<Response, ApiError> {
    let view = app
        .consumer_groups
        .update(&caller, &name, body.into())
        .await?;
    Ok(Json(GroupResponse::from(&view)).into_response())
}

/// `DELETE /api/v1/consumer-groups/{group}`.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    app.consumer_groups.delete(&caller, &name).await?;
    Ok(Json(GroupDeletedResponse {
        group: &name,
        deleted: true,
    })
    .into_response())
}

/// `POST .../{group}/poll`: leases messages to a member, waiting up to `wait_ms` for some.
pub async fn poll(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<PollRequest>,
) -> Result<Response, ApiError> {
    let messages = app
        .consumer_groups
        .poll(
            &caller,
            &name,
            PollInput {
                member: body.member,
                max: body.max,
                wait_ms: body.wait_ms,
            },
        )
        .await?;
    Ok(Json(PollResponse {
        messages: messages.iter().map(MessageResponse::from).collect(),
    })
    .into_response())
}

/// `POST .../{group}/ack`.
pub async fn ack(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<SettleRequest>,
) -> Result<Response, ApiError> {
    let settled = app
        .consumer_groups
        .ack(&caller, &name, body.delivery_ids)
        .await?;
    Ok(Json(AckedResponse::from(&settled)).into_response())
}

/// `POST .../{group}/nack`.
pub async fn nack(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<SettleRequest>,
) -> Result<Response, ApiError> {
    let settled = app
        .consumer_groups
        .nack(&caller, &name, body.delivery_ids)
        .await?;
    Ok(Json(NackedResponse::from(&settled)).into_response())
}

/// `GET .../{group}/parked?limit&after`.
pub async fn parked(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
    Params(params): Params<ParkedParams>,
) -> Result<Response, ApiError> {
    let page = app
        .consumer_groups
        .parked(
            &caller,
            &name,
            ParkedInput {
                limit: params.limit,
                after: params.after,
            },
        )
        .await?;
    Ok(Json(ParkedPageResponse::from(&page)).into_response())
}

/// `POST .../{group}/parked/replay`: every parked message is delivered again. No body.
pub async fn replay(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    let replayed = app.consumer_groups.replay_parked(&caller, &name).await?;
    Ok(Json(ReplayedResponse {
        group: &name,
        replayed,
    })
    .into_response())
}

/// `GET .../{group}/stats`.
pub async fn stats(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    let stats = app.consumer_groups.stats(&caller, &name).await?;
    Ok(Json(GroupStatsResponse::from(&stats)).into_response())
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    fn properties(schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> Vec<String> {
        let value = serde_json::to_value(schema).expect("a schema serializes");
        let mut names: Vec<String> = value["properties"]
            .as_object()
            .expect("an object schema")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_creation_body_documents_the_members_the_handler_reads() {
        assert_eq!(
            properties(NewGroupRequest::schema()),
            properties(GroupRequest::schema())
        );
    }
}

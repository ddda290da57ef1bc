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
use serde_json::{Value, json};

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
        .get("/api/v1/consumer-groups", Requires(Read), list)
        .add(
            Route::post("/api/v1/consumer-groups", Requires(ManagePipelines)).responds(&[201]),
            create,
        )
        .get("/api/v1/consumer-groups/{group}", Requires(Read), one)
        .put(
            "/api/v1/consumer-groups/{group}",
            Requires(ManagePipelines),
            update,
        )
        .delete(
            "/api/v1/consumer-groups/{group}",
            Requires(ManagePipelines),
            delete,
        )
        .post(
            "/api/v1/consumer-groups/{group}/poll",
            Requires(Write),
            poll,
        )
        .post("/api/v1/consumer-groups/{group}/ack", Requires(Write), ack)
        .post(
            "/api/v1/consumer-groups/{group}/nack",
            Requires(Write),
            nack,
        )
        .add(
            Route::get("/api/v1/consumer-groups/{group}/parked", Requires(Read))
                .params::<ParkedParams>(),
            parked,
        )
        .add(
            Route::post(
                "/api/v1/consumer-groups/{group}/parked/replay",
                Requires(Write),
            )
            .no_body(),
            replay,
        )
        .get(
            "/api/v1/consumer-groups/{group}/stats",
            Requires(Read),
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

/// The body of `POST /api/v1/consumer-groups` and `PUT /api/v1/consumer-groups/{group}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub event_type_filters: Option<Vec<String>>,
    #[serde(default)]
    pub start_position: Option<u64>,
    #[serde(default)]
    pub ack_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_in_flight: Option<u64>,
    #[serde(default)]
    pub max_deliveries: Option<u64>,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub max: Option<u64>,
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// The body of `POST .../{group}/ack` and `.../nack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    #[serde(default)]
    pub delivery_ids: Option<Vec<String>>,
}

/// Query parameters of `GET .../{group}/parked`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ParkedParams {
    pub limit: Option<String>,
    pub after: Option<String>,
}

/// One delivered message.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
pub struct PollResponse<'a> {
    pub messages: Vec<MessageResponse<'a>>,
}

/// One parked message.
#[derive(Debug, Serialize)]
pub struct ParkedResponse<'a> {
    pub position: u64,
    pub attempts: u32,
    pub parked_at: String,
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
#[derive(Debug, Serialize)]
pub struct ParkedPageResponse<'a> {
    pub parked: Vec<ParkedResponse<'a>>,
    pub count: usize,
    pub total: usize,
    pub has_more: bool,
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

/// A group as JSON.
pub fn group_json(view: &GroupView) -> Value {
    let c = &view.config;
    json!({
        "group": view.group,
        "event_type_filters": c.filters,
        "start_position": c.start_position,
        "ack_timeout_ms": c.ack_timeout_ms,
        "max_in_flight": c.max_in_flight,
        "max_deliveries": c.max_deliveries,
        "created_at": timestamp(c.created_at),
        "updated_at": timestamp(c.updated_at),
    })
}

fn stats_json(s: &GroupStats) -> Value {
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "member": m.member,
                "last_poll_at": timestamp(m.last_poll_at),
                "in_flight": m.in_flight,
            })
        })
        .collect();
    let c = &s.counters;
    json!({
        "group": s.group,
        "head_position": s.head_position,
        "read_position": s.read_position,
        "committed_position": s.committed_position,
        "lag": s.lag,
        "lag_capped": s.lag_capped,
        "in_flight": s.in_flight,
        "waiting": s.waiting,
        "parked": s.parked,
        "parked_full": s.parked_full,
        "delivered": c.delivered,
        "redelivered": c.redelivered,
        "acked": c.acked,
        "nacked": c.nacked,
        "expired": c.expired,
        "parked_total": c.parked,
        "replayed": c.replayed,
        "members": members,
    })
}

fn settled_json(verb: &str, s: &Settled) -> Value {
    json!({verb: s.settled, "ignored": s.ignored.len(), "ignored_ids": s.ignored})
}

/// `GET /api/v1/consumer-groups`: the tenant's groups, by name.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let groups = app.consumer_groups.list(&caller).await?;
    let items: Vec<Value> = groups.iter().map(group_json).collect();
    Ok(Json(json!({"total": items.len(), "groups": items})).into_response())
}

/// `POST /api/v1/consumer-groups`: creates a group (`201` with a `Location`).
pub async fn create(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<GroupRequest>,
) -> Result<Response, ApiError> {
    let view = app.consumer_groups.create(&caller, body.into()).await?;
    let mut response = (StatusCode::CREATED, Json(group_json(&view))).into_response();
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
    Ok(Json(group_json(&view)).into_response())
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
    Ok(Json(group_json(&view)).into_response())
}

/// `DELETE /api/v1/consumer-groups/{group}`.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    app.consumer_groups.delete(&caller, &name).await?;
    Ok(Json(json!({"group": name, "deleted": true})).into_response())
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
    Ok(Json(settled_json("acked", &settled)).into_response())
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
    Ok(Json(settled_json("nacked", &settled)).into_response())
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
    Ok(Json(json!({"group": name, "replayed": replayed})).into_response())
}

/// `GET .../{group}/stats`.
pub async fn stats(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(name): PathParam,
) -> Result<Response, ApiError> {
    let stats = app.consumer_groups.stats(&caller, &name).await?;
    Ok(Json(stats_json(&stats)).into_response())
}

//! `POST|GET /api/v1/webhooks`, `GET|PUT|DELETE /api/v1/webhooks/{id}`,
//! `GET /api/v1/webhooks/{id}/deliveries?limit`.
//!
//! Every route needs `manage_pipelines` (reads too: a webhook's URL is often a credential
//! itself). A created webhook answers `201` with a `Location`. The secret is write-only: a
//! webhook is shown with `has_secret`, never with its secret.
//!
//! Also here: [`EventJson`], the REST API's event shape for the body of a delivery (the
//! composition root hands it to the webhook use cases, which cannot see this crate).

use allsource_application::ports::EventEncoder;
use allsource_application::use_cases::FieldError;
use allsource_application::webhooks::{
    Delivery, DeliveryPage, SecretInput, WebhookError, WebhookInput, WebhookView,
};
use allsource_domain::Event;
use allsource_domain::Permission::ManagePipelines;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{EventResponse, timestamp};
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The webhook routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/webhooks", Requires(ManagePipelines), list)
        .add(
            Route::post("/api/v1/webhooks", Requires(ManagePipelines)).responds(&[201]),
            create,
        )
        .get("/api/v1/webhooks/{id}", Requires(ManagePipelines), one)
        .put("/api/v1/webhooks/{id}", Requires(ManagePipelines), update)
        .delete("/api/v1/webhooks/{id}", Requires(ManagePipelines), delete)
        .add(
            Route::get(
                "/api/v1/webhooks/{id}/deliveries",
                Requires(ManagePipelines),
            )
            .params::<DeliveriesParams>(),
            deliveries,
        )
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(errors) => Self::validation(errors),
            WebhookError::Refused(refusal) => {
                Self::validation(vec![FieldError::new("url", refusal.to_string())])
                    .with_member("rule", refusal.rule.as_str())
            }
            WebhookError::NotFound(what) => Self::not_found(what),
            WebhookError::Conflict(what) => Self::conflict(what),
            WebhookError::Gate(gate) => gate.into(),
            WebhookError::Unavailable(why) => Self::unavailable(why),
            WebhookError::Internal(cause) => Self::internal(cause),
        }
    }
}

/// The REST API's event shape ([`EventResponse`]) for delivery bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventJson;

impl EventEncoder for EventJson {
    fn encode(&self, event: &Event) -> Result<Box<RawValue>, serde_json::Error> {
        serde_json::value::to_raw_value(&EventResponse::from(event))
    }
}

/// `secret`: absent, `null`, or a string.
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The body of `POST /api/v1/webhooks` and `PUT /api/v1/webhooks/{id}` (no `Debug`: it holds
/// the secret).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub entity_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub secret: Option<Option<String>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

impl From<WebhookBody> for WebhookInput {
    fn from(b: WebhookBody) -> Self {
        Self {
            url: b.url,
            event_types: b.event_types,
            entity_ids: b.entity_ids,
            secret: match b.secret {
                None => SecretInput::Absent,
                Some(None) => SecretInput::Remove,
                Some(Some(secret)) => SecretInput::Set(secret),
            },
            description: b.description,
            active: b.active,
        }
    }
}

/// Query parameters of `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesParams {
    pub limit: Option<String>,
}

/// A webhook as JSON (never its secret).
pub fn webhook_json(view: &WebhookView) -> Value {
    json!({
        "id": view.id,
        "url": view.url,
        "event_types": view.event_types,
        "entity_ids": view.entity_ids,
        "has_secret": view.has_secret,
        "description": view.description,
        "active": view.active,
        "created_at": timestamp(view.created_at),
        "updated_at": timestamp(view.updated_at),
        "cursor_position": view.cursor_position,
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "event_id": d.event_id,
        "position": d.position,
        "event_type": d.event_type,
        "entity_id": d.entity_id,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "first_attempt_at": timestamp(d.first_attempt_at),
        "last_attempt_at": timestamp(d.last_attempt_at),
        "next_attempt_at": d.next_attempt_at.map(timestamp),
        "completed_at": d.completed_at.map(timestamp),
    })
}

fn page_json(page: &DeliveryPage) -> Value {
    let deliveries: Vec<Value> = page.deliveries.iter().map(delivery_json).collect();
    json!({"webhook_id": page.webhook_id, "count": deliveries.len(), "deliveries": deliveries})
}

/// `GET /api/v1/webhooks`: the tenant's webhooks, oldest first.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.webhooks.list(&caller).await?;
    let items: Vec<Value> = views.iter().map(webhook_json).collect();
    Ok(Json(json!({"total": items.len(), "webhooks": items})).into_response())
}

/// `POST /api/v1/webhooks`: registers a webhook (`201` with a `Location`).
pub async fn create(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Response, ApiError> {
    let view = app.webhooks.create(&caller, body.into()).await?;
    let mut response = (StatusCode::CREATED, Json(webhook_json(&view))).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/webhooks/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/webhooks/{id}`.
pub async fn one(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let view = app.webhooks.get(&caller, &id).await?;
    Ok(Json(webhook_json(&view)).into_response())
}

/// `PUT /api/v1/webhooks/{id}`: replaces the definition (an absent `secret` is kept).
pub async fn update(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Response, ApiError> {
    let view = app.webhooks.update(&caller, &id, body.into()).await?;
    Ok(Json(webhook_json(&view)).into_response())
}

/// `DELETE /api/v1/webhooks/{id}`.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    app.webhooks.delete(&caller, &id).await?;
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

/// `GET /api/v1/webhooks/{id}/deliveries?limit`: the newest deliveries first.
pub async fn deliveries(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    Params(params): Params<DeliveriesParams>,
) -> Result<Response, ApiError> {
    let page = app
        .webhooks
        .deliveries(&caller, &id, params.limit.as_deref())
        .await?;
    Ok(Json(page_json(&page)).into_response())
}

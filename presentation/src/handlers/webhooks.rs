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
    Delivery, DeliveryPage, DeliveryStatus, SecretInput, WebhookError, WebhookInput, WebhookView,
};
use allsource_domain::Event;
use allsource_domain::Permission::ManagePipelines;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::AppState;
use crate::access::Access::Requires;
use crate::auth::CallerExtractor;
use crate::dto::{DeletedResponse, EventResponse, timestamp};
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParam};
use crate::routes::{Route, Routes};

/// The webhook routes, with the access each needs.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/api/v1/webhooks", Requires(ManagePipelines))
                .returns::<WebhookListResponse>(),
            list,
        )
        .add(
            Route::post("/api/v1/webhooks", Requires(ManagePipelines))
                .body::<WebhookBody>()
                .returns::<WebhookResponse>()
                .responds(&[201])
                .problems(&[409]),
            create,
        )
        .add(
            Route::get("/api/v1/webhooks/{id}", Requires(ManagePipelines))
                .returns::<WebhookResponse>(),
            one,
        )
        .add(
            Route::put("/api/v1/webhooks/{id}", Requires(ManagePipelines))
                .body::<WebhookBody>()
                .returns::<WebhookResponse>()
                .problems(&[409]),
            update,
        )
        .add(
            Route::delete("/api/v1/webhooks/{id}", Requires(ManagePipelines))
                .returns::<DeletedResponse>()
                .problems(&[409]),
            delete,
        )
        .add(
            Route::get(
                "/api/v1/webhooks/{id}/deliveries",
                Requires(ManagePipelines),
            )
            .params::<DeliveriesParams>()
            .returns::<DeliveryPageResponse>(),
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
/// the secret). `url` and `event_types` are required (the use case names them when missing).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// An absolute `http` or `https` URL, at most 2,048 characters.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub url: Option<String>,
    /// Type filters (`x`, `x.*`, `*`); `[]`: every type. At most 100.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::type_filters, required = true)]
    pub event_types: Option<Vec<String>>,
    /// Only these entities' events (absent or `[]`: every entity). At most 100.
    #[serde(default)]
    pub entity_ids: Option<Vec<String>>,
    /// 16–256 characters; write-only. On `PUT`: absent keeps the secret, `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, write_only)]
    pub secret: Option<Option<String>>,
    #[serde(default)]
    pub description: Option<String>,
    /// Default `true`.
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

/// A webhook (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookResponse<'a> {
    pub id: Uuid,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub entity_ids: &'a [String],
    pub has_secret: bool,
    #[schema(required = true)]
    pub description: Option<&'a str>,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
    /// The position of the last settled event.
    pub cursor_position: u64,
}

impl<'a> From<&'a WebhookView> for WebhookResponse<'a> {
    fn from(view: &'a WebhookView) -> Self {
        Self {
            id: view.id,
            url: &view.url,
            event_types: &view.event_types,
            entity_ids: &view.entity_ids,
            has_secret: view.has_secret,
            description: view.description.as_deref(),
            active: view.active,
            created_at: timestamp(view.created_at),
            updated_at: timestamp(view.updated_at),
            cursor_position: view.cursor_position,
        }
    }
}

/// `GET /api/v1/webhooks`, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookListResponse<'a> {
    pub total: usize,
    pub webhooks: Vec<WebhookResponse<'a>>,
}

fn delivery_status() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::openapi::string_enum(
        [
            DeliveryStatus::Delivered,
            DeliveryStatus::Retrying,
            DeliveryStatus::Failed,
        ]
        .map(DeliveryStatus::as_str),
        false,
    )
}

/// One event's delivery to the webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryResponse<'a> {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub position: u64,
    pub event_type: &'a str,
    pub entity_id: &'a str,
    #[schema(schema_with = delivery_status)]
    pub status: &'static str,
    pub attempts: u32,
    /// The status of the last attempt's answer; `null` when it got none.
    #[schema(required = true)]
    pub last_status_code: Option<u16>,
    /// Why the last attempt got no answer.
    #[schema(required = true)]
    pub last_error: Option<&'a str>,
    pub first_attempt_at: String,
    pub last_attempt_at: String,
    /// Set while `retrying`.
    #[schema(required = true)]
    pub next_attempt_at: Option<String>,
    #[schema(required = true)]
    pub completed_at: Option<String>,
}

impl<'a> From<&'a Delivery> for DeliveryResponse<'a> {
    fn from(d: &'a Delivery) -> Self {
        Self {
            delivery_id: d.delivery_id,
            event_id: d.event_id,
            position: d.position,
            event_type: &d.event_type,
            entity_id: &d.entity_id,
            status: d.status.as_str(),
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error.as_deref(),
            first_attempt_at: timestamp(d.first_attempt_at),
            last_attempt_at: timestamp(d.last_attempt_at),
            next_attempt_at: d.next_attempt_at.map(timestamp),
            completed_at: d.completed_at.map(timestamp),
        }
    }
}

/// `GET /api/v1/webhooks/{id}/deliveries`, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPageResponse<'a> {
    pub webhook_id: Uuid,
    pub count: usize,
    pub deliveries: Vec<DeliveryResponse<'a>>,
}

impl<'a> From<&'a DeliveryPage> for DeliveryPageResponse<'a> {
    fn from(page: &'a DeliveryPage) -> Self {
        Self {
            webhook_id: page.webhook_id,
            count: page.deliveries.len(),
            deliveries: page.deliveries.iter().map(DeliveryResponse::from).collect(),
        }
    }
}

/// `GET /api/v1/webhooks`: the tenant's webhooks, oldest first.
pub async fn list(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
) -> Result<Response, ApiError> {
    let views = app.webhooks.list(&caller).await?;
    let webhooks: Vec<WebhookResponse<'_>> = views.iter().map(WebhookResponse::from).collect();
    Ok(Json(WebhookListResponse {
        total: webhooks.len(),
        webhooks,
    })
    .into_response())
}

/// `POST /api/v1/webhooks`: registers a webhook (`201` with a `Location`).
pub async fn create(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Response, ApiError> {
    let view = app.webhooks.create(&caller, body.into()).await?;
    let mut response = (StatusCode::CREATED, Json(WebhookResponse::from(&view))).into_response();
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
    Ok(Json(WebhookResponse::from(&view)).into_response())
}

/// `PUT /api/v1/webhooks/{id}`: replaces the definition (an absent `secret` is kept).
pub async fn update(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Response, ApiError> {
    let view = app.webhooks.update(&caller, &id, body.into()).await?;
    Ok(Json(WebhookResponse::from(&view)).into_response())
}

/// `DELETE /api/v1/webhooks/{id}`.
pub async fn delete(
    State(app): State<AppState>,
    CallerExtractor(caller): CallerExtractor,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    app.webhooks.delete(&caller, &id).await?;
    Ok(Json(DeletedResponse::new(&id)).into_response())
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
    Ok(Json(DeliveryPageResponse::from(&page)).into_response())
}

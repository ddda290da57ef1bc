//! Webhooks: a tenant registers a URL and the event types it wants; the server POSTs each
//! matching event to it, in position order, signed with the webhook's secret, retrying with
//! exponential backoff, and keeps a log of the deliveries.
//!
//! # Layout
//! - [`destination`]: the URL rules and the address rules (no loopback, private, link-local,
//!   ... destinations unless `webhooks.allow_private_destinations`).
//! - [`records`]: the state-store layout (definitions, cursors with their delivery lease,
//!   the delivery log) and the delivery id.
//! - [`worker`]: delivery — one worker per active webhook, following the tenant's log from
//!   the webhook's durable cursor — and the [`Workers`](worker::Workers) that run them.
//! - here: [`Webhooks`], the use cases behind `/api/v1/webhooks`: validation, tenancy (a
//!   caller sees and changes only its tenant's webhooks; another tenant's id is a 404), the
//!   `max_webhooks` quota, and the audit records `webhook.create`, `webhook.update`,
//!   `webhook.delete`.
//!
//! Outbound HTTP goes through the [`WebhookSender`] port; the event's JSON shape comes from an
//! [`EventEncoder`] (the REST API's shape, owned by the HTTP layer).

pub mod destination;
pub mod records;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use allsource_domain::{EntityId, TenantId, TypeFilters};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::Caller;
use crate::ports::{
    AuditLog, AuditOutcome, AuditRecord, DestinationError, EventEncoder, EventStore, Secret,
    StateError, StateStore, StorageFailure, WebhookSender,
};
use crate::quota::{GateError, QuotaGate, QuotaKind, TenantGate};
use crate::subscriptions::CommitFeed;
use crate::use_cases::{FieldError, record_or_log};
pub use destination::{AddressRule, Refusal, UrlHost, WebhookUrl, refused_rule};
pub use records::{DELIVERIES_KEPT, Delivery, DeliveryStatus, Webhook, delivery_id};
pub use worker::WebhookConfig;
use worker::{Shared, Workers, list_all};

/// Shortest and longest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
pub const MAX_SECRET_LEN: usize = 256;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1000;
/// Most entity ids one webhook may name.
pub const MAX_ENTITY_IDS: usize = 100;

/// Why a webhook use case failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 400 `validation_failed`, every bad field named.
    #[error("invalid webhook")]
    Invalid(Vec<FieldError>),
    /// 400 `validation_failed` on `url`, with the rule that refuses the destination.
    #[error("{0}")]
    Refused(Refusal),
    /// 404: no webhook with that id in the caller's tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: changed concurrently.
    #[error("{0}")]
    Conflict(String),
    /// 429 / 403 / 503 from the tenant's quotas and status.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl StorageFailure for WebhookError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }

    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }

    fn version_conflict(_: u64, _: u64) -> Self {
        Self::Conflict("the webhook was changed concurrently; retry".into())
    }
}

crate::storage_errors!(WebhookError);

/// The `secret` member of a request.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum SecretInput {
    /// Not in the request: none on create, unchanged on update.
    #[default]
    Absent,
    /// `null`: no secret (removes it on update).
    Remove,
    /// A new secret.
    Set(String),
}

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Absent => "Absent",
            Self::Remove => "Remove",
            Self::Set(_) => "Set(..)",
        })
    }
}

/// The raw body of `POST /api/v1/webhooks` and `PUT /api/v1/webhooks/{id}`.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub entity_ids: Option<Vec<String>>,
    pub secret: SecretInput,
    pub description: Option<String>,
    pub active: Option<bool>,
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub entity_ids: Vec<String>,
    pub has_secret: bool,
    pub description: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The position of the last settled event.
    pub cursor_position: u64,
}

/// The newest deliveries of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    pub webhook_id: Uuid,
    /// Newest first.
    pub deliveries: Vec<Delivery>,
}

/// What the webhooks need.
pub struct WebhookDeps {
    pub store: Arc<dyn EventStore>,
    pub feed: Arc<CommitFeed>,
    pub state: Arc<dyn StateStore>,
    pub sender: Arc<dyn WebhookSender>,
    pub encoder: Arc<dyn EventEncoder>,
    pub quotas: Arc<dyn QuotaGate>,
    pub audit: Arc<dyn AuditLog>,
    /// Whether a tenant may act: a deactivated tenant's webhooks wait (nothing is skipped).
    pub tenants: Arc<dyn TenantGate>,
}

/// The webhook use cases, and this node's delivery workers (cheap to clone).
#[derive(Clone)]
pub struct Webhooks {
    workers: Arc<Workers>,
    quotas: Arc<dyn QuotaGate>,
    audit: Arc<dyn AuditLog>,
}

fn invalid(field: &str, message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid(vec![FieldError::new(field, message)])
}

fn not_found(id: &str) -> WebhookError {
    WebhookError::NotFound(format!("no webhook with id '{id}'"))
}

/// A checked request body.
struct Checked {
    url: WebhookUrl,
    event_types: TypeFilters,
    entity_ids: Vec<EntityId>,
    secret: SecretInput,
    description: Option<String>,
    active: bool,
}

fn check(input: WebhookInput) -> Result<Checked, WebhookError> {
    let mut errors = Vec::new();
    let url = match input.url.as_deref() {
        None => {
            errors.push(FieldError::new("url", "is required"));
            None
        }
        Some(raw) => WebhookUrl::parse(raw)
            .map_err(|e| errors.push(FieldError::new("url", e.0)))
            .ok(),
    };
    let event_types = match input.event_types.as_deref() {
        None => {
            errors.push(FieldError::new(
                "event_types",
                "is required (a list of event types, 'type.*' patterns or '*')",
            ));
            None
        }
        Some(raw) => TypeFilters::parse(raw)
            .map_err(|(i, e)| {
                let field = if raw.len() > TypeFilters::MAX {
                    "event_types".to_owned()
                } else {
                    format!("event_types[{i}]")
                };
                errors.push(FieldError::new(field, e.0));
            })
            .ok(),
    };
    let mut entity_ids = Vec::new();
    let raw_entities = input.entity_ids.unwrap_or_default();
    if raw_entities.len() > MAX_ENTITY_IDS {
        errors.push(FieldError::new(
            "entity_ids",
            format!("at most {MAX_ENTITY_IDS} entity ids are allowed"),
        ));
    } else {
        for (i, raw) in raw_entities.iter().enumerate() {
            match EntityId::parse(raw) {
                Ok(id) if !entity_ids.contains(&id) => entity_ids.push(id),
                Ok(_) => {}
                Err(e) => errors.push(FieldError::new(format!("entity_ids[{i}]"), e.0)),
            }
        }
    }
    if let SecretInput::Set(secret) = &input.secret {
        let len = secret.chars().count();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
            errors.push(FieldError::new(
                "secret",
                format!("must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters long"),
            ));
        }
    }
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN)
    {
        errors.push(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters long"),
        ));
    }
    match (url, event_types) {
        (Some(url), Some(event_types)) if errors.is_empty() => Ok(Checked {
            url,
            event_types,
            entity_ids,
            secret: input.secret,
            description: input.description,
            active: input.active.unwrap_or(true),
        }),
        _ => Err(WebhookError::Invalid(errors)),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, WebhookError> {
    Uuid::parse_str(raw).map_err(|_| invalid("id", "must be a webhook id (a UUID)"))
}

impl Webhooks {
    pub fn new(deps: WebhookDeps, config: WebhookConfig) -> Self {
        let shared = Arc::new(Shared {
            store: deps.store,
            feed: deps.feed,
            state: deps.state,
            sender: deps.sender,
            encoder: deps.encoder,
            tenants: deps.tenants,
            node: config
                .node
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string()),
            config,
        });
        Self {
            workers: Arc::new(Workers::new(shared)),
            quotas: deps.quotas,
            audit: deps.audit,
        }
    }

    fn state(&self) -> &dyn StateStore {
        self.workers.fleet().state.as_ref()
    }

    /// Starts delivering: a worker for every active webhook of every tenant, and the periodic
    /// rescan. Call once storage has recovered.
    pub fn start(&self) {
        self.workers.start();
    }

    /// Stops every worker of this node (after the attempt in progress is abandoned; it is
    /// retried by whichever node delivers next) and gives their leases back.
    pub async fn stop(&self) {
        self.workers.stop().await;
    }

    /// The webhooks with a worker on this node, by tenant.
    pub async fn running(&self) -> Vec<(TenantId, Uuid)> {
        self.workers.running().await
    }

    async fn check_destination(&self, url: &WebhookUrl) -> Result<(), WebhookError> {
        match self.workers.fleet().sender.check_destination(url).await {
            Ok(()) => Ok(()),
            Err(DestinationError::Refused(refusal)) => Err(WebhookError::Refused(refusal)),
            Err(DestinationError::Unresolvable(why)) => Err(invalid(
                "url",
                format!(
                    "the host '{}' cannot be checked, as it does not resolve: {why}",
                    url.host_str()
                ),
            )),
        }
    }

    /// Registers a webhook for the caller's tenant (`POST /api/v1/webhooks`). It receives the
    /// matching events appended from now on.
    ///
    /// # Errors
    /// `Invalid` (every bad field), `Refused` (destination), `Gate` (quota `max_webhooks`),
    /// storage failures.
    pub async fn create(
        &self,
        caller: &Caller,
        input: WebhookInput,
    ) -> Result<WebhookView, WebhookError> {
        let checked = check(input)?;
        self.check_destination(&checked.url).await?;
        let tenant = caller.tenant();
        let now = Utc::now();
        let hook = Webhook {
            id: Uuid::now_v7(),
            url: checked.url,
            event_types: checked.event_types,
            entity_ids: checked.entity_ids,
            secret: match checked.secret {
                SecretInput::Set(secret) => Some(Secret::new(secret)),
                SecretInput::Absent | SecretInput::Remove => None,
            },
            description: checked.description,
            active: checked.active,
            created_at: now,
            updated_at: now,
        };
        self.quotas.consume(tenant, QuotaKind::Webhooks, 1).await?;
        let id = hook.id.to_string();
        let start = self.workers.fleet().feed.head();
        let stored = async {
            self.state()
                .put(
                    &records::index_tenant(),
                    records::TENANTS,
                    tenant.as_str(),
                    json!({}),
                    None,
                )
                .await?;
            // The cursor before the definition: a worker only starts for a definition.
            self.state()
                .put(
                    tenant,
                    records::CURSORS,
                    &id,
                    records::Cursor::at(start).to_json(),
                    Some(0),
                )
                .await?;
            self.state()
                .put(tenant, records::DEFINITIONS, &id, hook.to_json(), Some(0))
                .await?;
            Ok::<_, StateError>(())
        }
        .await;
        if let Err(e) = stored {
            self.quotas.release(tenant, QuotaKind::Webhooks, 1).await;
            let _ = self.state().delete(tenant, records::CURSORS, &id).await;
            return Err(e.into());
        }
        self.audit(caller, "webhook.create", &hook).await;
        self.workers.refresh(tenant, hook.id).await;
        Ok(view(&hook, start))
    }

    /// The caller's tenant's webhooks, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<WebhookView>, WebhookError> {
        let tenant = caller.tenant();
        let mut views = Vec::new();
        for (_, entry) in list_all(self.state(), tenant, records::DEFINITIONS).await? {
            let hook = Webhook::from_json(&entry.value)
                .map_err(|e| WebhookError::Internal(anyhow::anyhow!(e)))?;
            let position = self.cursor_position(tenant, &hook).await?;
            views.push(view(&hook, position));
        }
        Ok(views)
    }

    /// One webhook (`GET /api/v1/webhooks/{id}`).
    ///
    /// # Errors
    /// `Invalid` id, `NotFound`, storage failures.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<WebhookView, WebhookError> {
        let (hook, _) = self.read(caller.tenant(), id).await?;
        let position = self.cursor_position(caller.tenant(), &hook).await?;
        Ok(view(&hook, position))
    }

    async fn read(&self, tenant: &TenantId, id: &str) -> Result<(Webhook, u64), WebhookError> {
        let uuid = parse_id(id)?;
        let entry = self
            .state()
            .get(tenant, records::DEFINITIONS, &uuid.to_string())
            .await?
            .ok_or_else(|| not_found(id))?;
        let hook = Webhook::from_json(&entry.value)
            .map_err(|e| WebhookError::Internal(anyhow::anyhow!(e)))?;
        Ok((hook, entry.version))
    }

    async fn cursor_position(
        &self,
        tenant: &TenantId,
        hook: &Webhook,
    ) -> Result<u64, WebhookError> {
        let entry = self
            .state()
            .get(tenant, records::CURSORS, &hook.id.to_string())
            .await?;
        Ok(entry
            .and_then(|e| records::Cursor::from_json(&e.value).ok())
            .map_or(0, |c| c.position))
    }

    /// Replaces a webhook's definition (`PUT /api/v1/webhooks/{id}`): the same body as
    /// `create`, every member replaced, but `secret`: absent keeps the current one, `null`
    /// removes it. The cursor is kept: delivery goes on after the last settled event, with
    /// the new definition.
    ///
    /// # Errors
    /// `Invalid`, `Refused`, `NotFound`, `Conflict` (changed concurrently), storage failures.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        input: WebhookInput,
    ) -> Result<WebhookView, WebhookError> {
        let tenant = caller.tenant();
        let (current, version) = self.read(tenant, id).await?;
        let checked = check(input)?;
        self.check_destination(&checked.url).await?;
        let hook = Webhook {
            id: current.id,
            url: checked.url,
            event_types: checked.event_types,
            entity_ids: checked.entity_ids,
            secret: match checked.secret {
                SecretInput::Absent => current.secret.clone(),
                SecretInput::Remove => None,
                SecretInput::Set(secret) => Some(Secret::new(secret)),
            },
            description: checked.description,
            active: checked.active,
            created_at: current.created_at,
            updated_at: Utc::now(),
        };
        self.state()
            .put(
                tenant,
                records::DEFINITIONS,
                &hook.id.to_string(),
                hook.to_json(),
                Some(version),
            )
            .await?;
        self.audit(caller, "webhook.update", &hook).await;
        self.workers.refresh(tenant, hook.id).await;
        let position = self.cursor_position(tenant, &hook).await?;
        Ok(view(&hook, position))
    }

    /// Deletes a webhook with its cursor and delivery log (`DELETE /api/v1/webhooks/{id}`);
    /// gives the `max_webhooks` quota back.
    ///
    /// # Errors
    /// `Invalid` id, `NotFound`, storage failures.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), WebhookError> {
        let tenant = caller.tenant();
        let (hook, _) = self.read(tenant, id).await?;
        let key = hook.id.to_string();
        if !self
            .state()
            .delete(tenant, records::DEFINITIONS, &key)
            .await?
        {
            return Err(not_found(id));
        }
        self.quotas.release(tenant, QuotaKind::Webhooks, 1).await;
        self.audit(caller, "webhook.delete", &hook).await;
        // This node's worker stops now; another node's at its next cursor write or rescan.
        self.workers.refresh(tenant, hook.id).await;
        let cleaned = async {
            self.state().delete(tenant, records::CURSORS, &key).await?;
            let prefix = records::delivery_prefix(&key);
            loop {
                let page = self
                    .state()
                    .list(tenant, records::DELIVERIES, Some(prefix.clone()), None, 500)
                    .await?;
                if page.is_empty() {
                    return Ok::<_, StateError>(());
                }
                for (delivery, _) in page {
                    self.state()
                        .delete(tenant, records::DELIVERIES, &delivery)
                        .await?;
                }
            }
        }
        .await;
        if let Err(e) = cleaned {
            tracing::warn!(webhook = %key, error = %e,
                           "webhook deleted, but its cursor or deliveries could not all be removed");
        }
        Ok(())
    }

    /// The newest deliveries of a webhook, newest first
    /// (`GET /api/v1/webhooks/{id}/deliveries?limit`, 1 to [`DELIVERIES_KEPT`], default all).
    ///
    /// # Errors
    /// `Invalid` id or limit, `NotFound`, storage failures.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        id: &str,
        limit: Option<&str>,
    ) -> Result<DeliveryPage, WebhookError> {
        let limit = match limit {
            None => DELIVERIES_KEPT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=DELIVERIES_KEPT).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "limit",
                        format!("must be an integer from 1 to {DELIVERIES_KEPT}"),
                    ));
                }
            },
        };
        let tenant = caller.tenant();
        let (hook, _) = self.read(tenant, id).await?;
        let prefix = records::delivery_prefix(&hook.id.to_string());
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state()
                .list(
                    tenant,
                    records::DELIVERIES,
                    Some(prefix.clone()),
                    after.clone(),
                    500,
                )
                .await?;
            let done = page.len() < 500;
            after = page.last().map(|(k, _)| k.clone());
            all.extend(page);
            if done {
                break;
            }
        }
        let deliveries = all
            .into_iter()
            .rev()
            .filter_map(|(_, entry)| serde_json::from_value::<Delivery>(entry.value).ok())
            .take(limit)
            .collect();
        Ok(DeliveryPage {
            webhook_id: hook.id,
            deliveries,
        })
    }

    async fn audit(&self, caller: &Caller, action: &str, hook: &Webhook) {
        let record = AuditRecord::new(
            caller.tenant().as_str(),
            caller.actor(),
            action,
            AuditOutcome::Success,
        )
        .resource(hook.id.to_string())
        // The host only: a URL may carry a credential in its path or query.
        .details(json!({
            "host": hook.url.host_str(),
            "event_types": hook.event_types.to_strings(),
            "entity_ids": hook.entity_ids.len(),
            "active": hook.active,
            "has_secret": hook.secret.is_some(),
        }));
        record_or_log(self.audit.as_ref(), record).await;
    }
}

fn view(hook: &Webhook, cursor_position: u64) -> WebhookView {
    WebhookView {
        id: hook.id,
        url: hook.url.as_str().to_owned(),
        event_types: hook.event_types.to_strings(),
        entity_ids: hook
            .entity_ids
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
        has_secret: hook.secret.is_some(),
        description: hook.description.clone(),
        active: hook.active,
        created_at: hook.created_at,
        updated_at: hook.updated_at,
        cursor_position,
    }
}

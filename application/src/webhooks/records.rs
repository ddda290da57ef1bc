//! The state-store layout of webhooks (every record is JSON; all but the tenant index live in
//! the webhook's own tenant):
//!
//! - namespace `webhooks`, key = the webhook's id: its definition ([`Webhook`]), secret
//!   included (it is needed to sign, so it is stored; it is never returned by the API);
//! - namespace `webhook_cursors`, key = the webhook's id: [`Cursor`] — the position of the last
//!   settled event, and the delivery lease (which node delivers, until when). Every write of it
//!   is a compare-and-swap on the version the holder last wrote, so a node that lost the lease
//!   finds out at its next write and stops;
//! - namespace `webhook_deliveries`, key = `<webhook id>/<position, 20 digits>`: the
//!   [`Delivery`] log, the newest [`DELIVERIES_KEPT`] per webhook;
//! - tenant `_system`, namespace `webhook-tenants`, key = a tenant that has had webhooks, so
//!   the workers of every tenant can be found after a restart.

use allsource_domain::{EntityId, TenantId, TypeFilters};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::destination::WebhookUrl;
use crate::ports::Secret;

pub const DEFINITIONS: &str = "webhooks";
pub const CURSORS: &str = "webhook_cursors";
pub const DELIVERIES: &str = "webhook_deliveries";
pub const TENANTS: &str = "webhook-tenants";

/// Deliveries kept per webhook (the newest; older ones are deleted as new ones are recorded).
pub const DELIVERIES_KEPT: usize = 100;

/// The tenant that holds the index of tenants with webhooks.
pub fn index_tenant() -> TenantId {
    TenantId::system()
}

/// The key of a webhook's delivery of the event at `position`: keys sort by position.
pub fn delivery_key(webhook_id: &str, position: u64) -> String {
    format!("{webhook_id}/{position:020}")
}

/// The key prefix of a webhook's deliveries.
pub fn delivery_prefix(webhook_id: &str) -> String {
    format!("{webhook_id}/")
}

/// The id of the delivery of an event to a webhook: UUIDv5 in the namespace of the webhook's
/// id, of the event id's 16 bytes. The same event to the same webhook always has the same
/// id, across retries, restarts and nodes, so receivers can drop duplicates.
pub fn delivery_id(webhook: Uuid, event: Uuid) -> Uuid {
    Uuid::new_v5(&webhook, event.as_bytes())
}

/// A registered webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: Uuid,
    pub url: WebhookUrl,
    pub event_types: TypeFilters,
    /// Empty: every entity.
    pub entity_ids: Vec<EntityId>,
    pub secret: Option<Secret>,
    pub description: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// [`Webhook`] as stored.
#[derive(Serialize, Deserialize)]
struct StoredWebhook {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    #[serde(default)]
    entity_ids: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    description: Option<String>,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Webhook {
    pub fn to_json(&self) -> Value {
        let stored = StoredWebhook {
            id: self.id,
            url: self.url.as_str().to_owned(),
            event_types: self.event_types.to_strings(),
            entity_ids: self
                .entity_ids
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            secret: self.secret.as_ref().map(|s| s.expose().to_owned()),
            description: self.description.clone(),
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        serde_json::to_value(stored).unwrap_or(Value::Null)
    }

    /// # Errors
    /// A record this code did not write (named in the message).
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let stored: StoredWebhook = serde_json::from_value(value.clone())
            .map_err(|e| format!("unreadable webhook record: {e}"))?;
        let url = WebhookUrl::parse(&stored.url)
            .map_err(|e| format!("webhook {}: stored url {}", stored.id, e.0))?;
        let event_types = TypeFilters::parse(&stored.event_types)
            .map_err(|(i, e)| format!("webhook {}: stored event_types[{i}]: {}", stored.id, e.0))?;
        let entity_ids = stored
            .entity_ids
            .iter()
            .map(|e| EntityId::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("webhook {}: stored entity id: {}", stored.id, e.0))?;
        Ok(Self {
            id: stored.id,
            url,
            event_types,
            entity_ids,
            secret: stored.secret.map(Secret::new),
            description: stored.description,
            active: stored.active,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        })
    }

    /// Whether the webhook takes events of this entity.
    pub fn wants_entity(&self, entity: &EntityId) -> bool {
        self.entity_ids.is_empty() || self.entity_ids.contains(entity)
    }
}

/// A webhook's cursor and delivery lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Every matching event at or below it is settled (delivered, or failed after every
    /// attempt).
    pub position: u64,
    /// The node delivering, if any.
    #[serde(default)]
    pub holder: Option<String>,
    /// Until when (milliseconds since the Unix epoch) the holder's lease runs.
    #[serde(default)]
    pub lease_until_ms: i64,
}

impl Cursor {
    pub fn at(position: u64) -> Self {
        Self {
            position,
            holder: None,
            lease_until_ms: 0,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// # Errors
    /// A record this code did not write.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("unreadable webhook cursor: {e}"))
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// An attempt failed; another one is due at `next_attempt_at`.
    Retrying,
    /// A `2xx` answer.
    Delivered,
    /// Every attempt failed; the webhook went on with the next event.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub position: u64,
    pub event_type: String,
    pub entity_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The status code of the last answer, when the last attempt got one.
    pub last_status_code: Option<u16>,
    /// Why the last attempt got no answer (timeout, connection, refused destination).
    pub last_error: Option<String>,
    pub first_attempt_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    /// When the next attempt is due (`retrying` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered or marked failed.
    pub completed_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_reads_back_as_written() {
        let hook = Webhook {
            id: Uuid::now_v7(),
            url: WebhookUrl::parse("https://example.com/hook").expect("url"),
            event_types: TypeFilters::parse(&["order.*", "customer.created"]).expect("filters"),
            entity_ids: vec![EntityId::parse("order-1").expect("entity")],
            secret: Some(Secret::new("0123456789abcdef")),
            description: Some("orders".into()),
            active: false,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert_eq!(Webhook::from_json(&hook.to_json()), Ok(hook.clone()));
        assert!(!format!("{hook:?}").contains("0123456789abcdef"));
        assert!(Webhook::from_json(&serde_json::json!({"id": 1})).is_err());
    }

    #[test]
    fn delivery_ids_depend_on_the_webhook_and_the_event_only() {
        let (w1, w2, e1, e2) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        assert_eq!(delivery_id(w1, e1), delivery_id(w1, e1));
        assert_ne!(delivery_id(w1, e1), delivery_id(w1, e2));
        assert_ne!(delivery_id(w1, e1), delivery_id(w2, e1));
        assert_eq!(delivery_id(w1, e1).get_version_num(), 5);
    }

    #[test]
    fn delivery_keys_sort_by_position() {
        let id = Uuid::nil().to_string();
        assert!(delivery_key(&id, 9) < delivery_key(&id, 10));
        assert!(delivery_key(&id, 99_999) < delivery_key(&id, 100_000));
        assert!(delivery_key(&id, 1).starts_with(&delivery_prefix(&id)));
    }
}

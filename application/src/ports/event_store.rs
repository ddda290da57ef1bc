//! The `EventStore` port: the durable, tenant-partitioned log of events.
//!
//! # Contract (checked by the contract suite in `allsource-tests` for every adapter)
//! - Appends are atomic per call: all events of a batch are stored or none is.
//! - The adapter plans each batch with [`allsource_domain::plan_append`] inside its own critical
//!   section, so expectations and idempotency are decided against a consistent view.
//! - Versions are 1-based and gapless per (tenant, entity). Positions are global and strictly
//!   increasing; readers see events in position order and never observe a gap that is later
//!   filled (an event that a reader could skip by paging).
//! - Timestamps are assigned by the store at append, truncated to microseconds, and are
//!   non-decreasing in position order.
//! - An acknowledged append is on stable storage under the configured durability mode.
//! - Everything is scoped by tenant: no method ever returns another tenant's events.

use std::sync::Arc;

use allsource_domain::{
    AppendRejection, EntityId, Event, EventId, EventType, Position, ProposedEvent, TenantId,
    TypeFilters, Version,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// The answer for one appended (or re-sent) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReceipt {
    pub event_id: EventId,
    pub entity_id: EntityId,
    pub version: Version,
    pub position: Position,
    pub timestamp: DateTime<Utc>,
    /// True when the event was a retry of a stored one and nothing was appended.
    pub duplicate: bool,
}

impl AppendReceipt {
    pub fn for_event(event: &Event, duplicate: bool) -> Self {
        Self {
            event_id: event.id,
            entity_id: event.entity_id.clone(),
            version: event.version,
            position: event.position,
            timestamp: event.timestamp,
            duplicate,
        }
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreAppendError {
    /// The batch broke an expectation or reused an id: nothing was appended.
    #[error(transparent)]
    Rejected(#[from] AppendRejection),
    /// The storage cannot take writes now (shutting down, lost database, failed disk).
    /// Nothing was acknowledged; the client may retry with the same event ids.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage cannot answer now (starting up, lost database).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A range of one entity's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRange {
    /// First version to return (1-based, inclusive).
    pub from_version: u64,
    /// Last version to return (inclusive); `None` = up to the head.
    pub to_version: Option<u64>,
    /// At most this many events; `None` = no limit.
    pub limit: Option<usize>,
}

impl StreamRange {
    /// The whole stream.
    pub const ALL: Self = Self {
        from_version: 1,
        to_version: None,
        limit: None,
    };

    /// Whether `version` is inside the range (the limit aside).
    pub fn contains(&self, version: u64) -> bool {
        version >= self.from_version && self.to_version.is_none_or(|to| version <= to)
    }
}

/// Order of query results, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// A query over the tenant's log. All filters combine with AND.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    pub entity_id: Option<EntityId>,
    pub event_type: Option<EventType>,
    /// Only types starting with this text (`order.` matches `order.placed`).
    pub event_type_prefix: Option<String>,
    /// Only types matching one of these filters (`x`, `x.*`, `*`; empty = every type), as the
    /// followers of the log ask for them.
    pub type_filters: TypeFilters,
    /// Only events whose payload is an object holding each of these top-level keys with an
    /// equal value (see [`payload_matches`]).
    pub payload_filter: Option<serde_json::Map<String, serde_json::Value>>,
    /// `timestamp >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `timestamp < until`.
    pub until: Option<DateTime<Utc>>,
    /// `timestamp <= as_of`.
    pub as_of: Option<DateTime<Utc>>,
    /// Exclusive paging cursor: with `Asc`, positions greater than it; with `Desc`, smaller.
    pub from_position: Option<Position>,
    /// Skip this many matches (after the cursor).
    pub offset: usize,
    /// Return at most this many matches (≥ 1).
    pub limit: usize,
    pub order: SortOrder,
}

impl EventQuery {
    /// Whether an event passes every filter except paging (cursor, offset, limit).
    pub fn matches(&self, event: &Event) -> bool {
        self.entity_id
            .as_ref()
            .is_none_or(|e| *e == event.entity_id)
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| *t == event.event_type)
            && self.since.is_none_or(|s| event.timestamp >= s)
            && self.until.is_none_or(|u| event.timestamp < u)
            && self.as_of.is_none_or(|a| event.timestamp <= a)
            && self
                .event_type_prefix
                .as_deref()
                .is_none_or(|p| event.event_type.as_str().starts_with(p))
            && self.type_filters.matches(event.event_type.as_str())
            && self
                .payload_filter
                .as_ref()
                .is_none_or(|filter| payload_matches(event.payload.get(), filter))
    }

    /// Whether a position lies beyond the cursor in the query's order.
    pub fn after_cursor(&self, position: Position) -> bool {
        match (self.from_position, self.order) {
            (None, _) => true,
            (Some(cursor), SortOrder::Asc) => position > cursor,
            (Some(cursor), SortOrder::Desc) => position < cursor,
        }
    }
}

/// Whether a payload (JSON text) is an object holding every key of `filter` with an equal value.
///
/// Equality is JSON equality, except that numbers compare by value (`1` equals `1.0`), as
/// PostgreSQL's `jsonb` compares them, so every backend answers alike. A payload that is not an
/// object, or not valid JSON, matches no filter; an empty filter matches every payload.
pub fn payload_matches(payload: &str, filter: &serde_json::Map<String, serde_json::Value>) -> bool {
    if filter.is_empty() {
        return true;
    }
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str(payload) else {
        return false;
    };
    filter
        .iter()
        .all(|(key, wanted)| object.get(key).is_some_and(|v| json_equal(v, wanted)))
}

fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Order of an entity listing, by the time of the entity's last event (ties by entity id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntityOrder {
    /// Least recently changed first.
    Asc,
    /// Most recently changed first (the default).
    #[default]
    Desc,
}

/// One page of query results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryPage {
    pub events: Vec<Arc<Event>>,
    /// Whether more matches follow this page.
    pub has_more: bool,
}

/// Listing of the tenant's entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityListQuery {
    pub limit: usize,
    pub offset: usize,
    /// Only entities with at least one event whose type starts with this prefix.
    pub event_type_prefix: Option<String>,
    /// By the time of the last event, ties by entity id.
    pub order: EntityOrder,
}

/// One entity in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySummary {
    pub entity_id: EntityId,
    pub event_count: u64,
    pub version: Version,
    pub last_event_type: EventType,
    pub last_event_at: DateTime<Utc>,
}

/// A page of entities, in the order asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntityPage {
    pub entities: Vec<EntitySummary>,
    /// Number of entities matching the filter, all pages together.
    pub total: u64,
}

/// How many events of one type the tenant has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeCount {
    pub event_type: EventType,
    pub count: u64,
}

/// Figures about the tenant's part of the store, and about the storage itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreStats {
    pub total_events: u64,
    pub total_entities: u64,
    pub total_event_types: u64,
    /// Position of the tenant's newest event (0 if none).
    pub last_position: u64,
    /// Backend-specific figures (backend name, files, bytes, memory per event, ...).
    pub storage: serde_json::Map<String, serde_json::Value>,
}

/// The durable, tenant-partitioned event log.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends a batch atomically for `tenant`, in request order, answering one receipt per
    /// event (in request order). Event ids within one call are distinct (the caller checks).
    ///
    /// # Errors
    /// - [`StoreAppendError::Rejected`] with `VersionConflict` when an expectation fails, or
    ///   `DuplicateEventId` when an id is stored with different content. Nothing is appended.
    /// - [`StoreAppendError::Unavailable`] when storage cannot take writes; nothing is
    ///   acknowledged.
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError>;

    /// The events of one entity within `range`, in version order. Empty if none.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when storage cannot answer.
    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError>;

    /// Events matching `query`, in the query's position order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when storage cannot answer.
    async fn query(&self, tenant: &TenantId, query: EventQuery) -> Result<QueryPage, StoreError>;

    /// The tenant's event with this id, if any.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when storage cannot answer.
    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError>;

    /// The tenant's entities, ordered by entity id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when storage cannot answer.
    async fn list_entities(
        &self,
        tenant: &TenantId,
        query: EntityListQuery,
    ) -> Result<EntityPage, StoreError>;

    /// The tenant's event types with their counts, ordered by type.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when storage cannot answer.
    async fn event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError>;

    /// Figures about the tenant's events and the storage.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when storage cannot answer.
    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError>;

    /// Whether the store has finished recovery and serves requests.
    fn is_ready(&self) -> bool;

    /// Name of the backend (`memory`, `embedded`, `postgres`), for `/health`.
    fn backend(&self) -> &'static str;

    /// Stops taking appends, lets in-flight ones finish, and makes everything acknowledged
    /// durable. Appends after this get `Unavailable`.
    ///
    /// # Errors
    /// [`StoreError::Internal`] when the final flush fails.
    async fn shutdown(&self) -> Result<(), StoreError>;
}

//! HTTP request and response bodies, separate from domain types. Requests reject unknown fields;
//! responses follow `API.md` field by field. Payloads and metadata pass through as the client's
//! JSON text (`RawValue`), never re-parsed.

use std::sync::Arc;

use allsource_application::ports::{AppendReceipt, EntitySummary, EventTypeCount, StoreStats};
use allsource_application::use_cases::{
    AppendEventInput, EntityListInput, EntityStateInput, EntityStateView, QueryInput, StreamInput,
};
use allsource_domain::{Event, JsonPayload};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// RFC 3339, UTC, microseconds, `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A present `payload` is kept even when it is JSON `null`; only a missing one is `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JsonPayload>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// One event to append (`POST /api/v1/events`, and each item of a batch).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendEventRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub payload: Option<JsonPayload>,
    #[serde(default)]
    pub metadata: Option<JsonPayload>,
    #[serde(default)]
    pub expected_version: Option<serde_json::Value>,
}

impl From<AppendEventRequest> for AppendEventInput {
    fn from(r: AppendEventRequest) -> Self {
        Self {
            id: r.id,
            entity_id: r.entity_id,
            event_type: r.event_type,
            payload: r.payload,
            metadata: r.metadata,
            expected_version: r.expected_version,
        }
    }
}

/// `POST /api/v1/events/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBatchRequest {
    pub events: Vec<AppendEventRequest>,
}

/// The answer for one appended event.
#[derive(Debug, Serialize)]
pub struct ReceiptResponse {
    pub event_id: String,
    pub entity_id: String,
    pub version: u64,
    pub position: u64,
    pub timestamp: String,
    pub duplicate: bool,
}

impl From<&AppendReceipt> for ReceiptResponse {
    fn from(r: &AppendReceipt) -> Self {
        Self {
            event_id: r.event_id.to_string(),
            entity_id: r.entity_id.as_str().to_owned(),
            version: r.version.get(),
            position: r.position.get(),
            timestamp: timestamp(r.timestamp),
            duplicate: r.duplicate,
        }
    }
}

/// `POST /api/v1/events/batch` answer.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub total: usize,
    pub ingested: usize,
    pub events: Vec<ReceiptResponse>,
}

/// An event as the API shows it.
#[derive(Debug, Serialize)]
pub struct EventResponse<'a> {
    pub id: String,
    pub tenant_id: &'a str,
    pub entity_id: &'a str,
    pub event_type: &'a str,
    pub version: u64,
    pub position: u64,
    pub timestamp: String,
    pub payload: &'a RawValue,
    pub metadata: Option<&'a RawValue>,
}

impl<'a> From<&'a Event> for EventResponse<'a> {
    fn from(e: &'a Event) -> Self {
        Self {
            id: e.id.to_string(),
            tenant_id: e.tenant_id.as_str(),
            entity_id: e.entity_id.as_str(),
            event_type: e.event_type.as_str(),
            version: e.version.get(),
            position: e.position.get(),
            timestamp: timestamp(e.timestamp),
            payload: &e.payload,
            metadata: e.metadata.as_deref(),
        }
    }
}

pub fn events(list: &[Arc<Event>]) -> Vec<EventResponse<'_>> {
    list.iter()
        .map(|e| EventResponse::from(e.as_ref()))
        .collect()
}

/// `GET /api/v1/events/query` answer.
#[derive(Debug, Serialize)]
pub struct QueryResponse<'a> {
    pub events: Vec<EventResponse<'a>>,
    pub count: usize,
    pub has_more: bool,
    pub next_position: Option<u64>,
}

/// `GET /api/v1/entities/{id}/events` answer (`has_more` is an extension).
#[derive(Debug, Serialize)]
pub struct StreamResponse<'a> {
    pub events: Vec<EventResponse<'a>>,
    pub count: usize,
    pub has_more: bool,
}

/// `GET /api/v1/entities/{id}/state` answer.
#[derive(Debug, Serialize)]
pub struct StateResponse<'a> {
    pub entity_id: &'a str,
    pub version: u64,
    pub event_count: u64,
    pub last_updated: String,
    pub as_of: Option<String>,
    pub current_state: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<EventResponse<'a>>>,
}

impl<'a> From<&'a EntityStateView> for StateResponse<'a> {
    fn from(v: &'a EntityStateView) -> Self {
        Self {
            entity_id: v.state.entity_id.as_str(),
            version: v.state.version.get(),
            event_count: v.state.event_count,
            last_updated: timestamp(v.state.last_updated),
            as_of: v.as_of.map(timestamp),
            current_state: &v.state.state,
            history: v.history.as_deref().map(events),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EntitySummaryResponse<'a> {
    pub entity_id: &'a str,
    pub event_count: u64,
    pub version: u64,
    pub last_event_type: &'a str,
    pub last_event_at: String,
}

impl<'a> From<&'a EntitySummary> for EntitySummaryResponse<'a> {
    fn from(s: &'a EntitySummary) -> Self {
        Self {
            entity_id: s.entity_id.as_str(),
            event_count: s.event_count,
            version: s.version.get(),
            last_event_type: s.last_event_type.as_str(),
            last_event_at: timestamp(s.last_event_at),
        }
    }
}

/// `GET /api/v1/entities` answer.
#[derive(Debug, Serialize)]
pub struct EntitiesResponse<'a> {
    pub entities: Vec<EntitySummaryResponse<'a>>,
    pub total: u64,
    pub has_more: bool,
}

#[derive(Debug, Serialize)]
pub struct EventTypeResponse<'a> {
    pub event_type: &'a str,
    pub count: u64,
}

impl<'a> From<&'a EventTypeCount> for EventTypeResponse<'a> {
    fn from(t: &'a EventTypeCount) -> Self {
        Self {
            event_type: t.event_type.as_str(),
            count: t.count,
        }
    }
}

/// `GET /api/v1/event-types` answer.
#[derive(Debug, Serialize)]
pub struct EventTypesResponse<'a> {
    pub event_types: Vec<EventTypeResponse<'a>>,
    pub total: usize,
}

/// `GET /api/v1/stats` answer.
#[derive(Debug, Serialize)]
pub struct StatsResponse<'a> {
    pub total_events: u64,
    pub total_entities: u64,
    pub total_event_types: u64,
    pub last_position: u64,
    pub storage: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> From<&'a StoreStats> for StatsResponse<'a> {
    fn from(s: &'a StoreStats) -> Self {
        Self {
            total_events: s.total_events,
            total_entities: s.total_entities,
            total_event_types: s.total_event_types,
            last_position: s.last_position,
            storage: &s.storage,
        }
    }
}

/// Parameters of `GET /api/v1/events/query`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    entity_id: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    as_of: Option<String>,
    from_position: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
    order: Option<String>,
}

impl From<QueryParams> for QueryInput {
    fn from(p: QueryParams) -> Self {
        Self {
            entity_id: p.entity_id,
            event_type: p.event_type,
            since: p.since,
            until: p.until,
            as_of: p.as_of,
            from_position: p.from_position,
            offset: p.offset,
            limit: p.limit,
            order: p.order,
        }
    }
}

/// Parameters of `GET /api/v1/entities/{id}/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    from_version: Option<String>,
    to_version: Option<String>,
    limit: Option<String>,
}

impl From<StreamParams> for StreamInput {
    fn from(p: StreamParams) -> Self {
        Self {
            from_version: p.from_version,
            to_version: p.to_version,
            limit: p.limit,
        }
    }
}

/// Parameters of `GET /api/v1/entities/{id}/state`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateParams {
    as_of: Option<String>,
    include_history: Option<String>,
}

impl From<StateParams> for EntityStateInput {
    fn from(p: StateParams) -> Self {
        Self {
            as_of: p.as_of,
            include_history: p.include_history,
        }
    }
}

/// Parameters of `GET /api/v1/entities`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitiesParams {
    limit: Option<String>,
    offset: Option<String>,
    event_type_prefix: Option<String>,
}

impl From<EntitiesParams> for EntityListInput {
    fn from(p: EntitiesParams) -> Self {
        Self {
            limit: p.limit,
            offset: p.offset,
            event_type_prefix: p.event_type_prefix,
        }
    }
}

/// Parameters of routes that take none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

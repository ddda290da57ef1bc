//! HTTP bodies and parameters, separate from domain types.
//!
//! - Requests reject unknown fields (`deny_unknown_fields`): a typo must not silently drop data
//!   or widen a query. Required fields are `Option` here so that their absence reaches the use
//!   case, which reports it as a field error ("is required") along with every other one.
//! - Query parameters are all `Option<String>`: parsing and range checks belong to the use
//!   cases, which name the parameter in their errors.
//! - Responses follow `API.md` field by field. They borrow from the use cases' results, and
//!   payloads and metadata are written as the client's JSON text (`RawValue`), never re-parsed.
//! - Timestamps are RFC 3339 in UTC with exactly six fractional digits and `Z`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use allsource_application::ports::{
    AppendReceipt, EntityPage, EntitySummary, EventTypeCount, QueryPage, StoreStats,
};
use allsource_application::use_cases::{
    AppendEventInput, AppendReply, EntityListInput, EntityStateInput, EntityStateView, QueryInput,
    StreamInput,
};
use allsource_domain::{Event, JsonPayload};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::ApiError;

/// The API's timestamp format: `2026-11-22T10:15:00.123456Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// A `T` read from a JSON object only. serde's derived structs also accept an array of the
/// field values in declaration order, a form the API does not have and that would let a
/// malformed request through; request bodies and batch items are objects.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// For `payload` and `metadata`: a present value is kept even when it is JSON `null` (a `null`
/// payload is a valid payload); only a missing member is `None` (with `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JsonPayload>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// One event to append: the body of `POST /api/v1/events`, and each item of a batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendEventRequest {
    /// UUID; the server assigns a UUIDv7 when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Required; a missing one is the use case's 400 (so it is optional for serde only).
    #[serde(default)]
    #[schema(required = true, value_type = String)]
    pub entity_id: Option<String>,
    /// Required, like `entity_id`.
    #[serde(default)]
    #[schema(required = true, value_type = String)]
    pub event_type: Option<String>,
    /// Required; any JSON value, `null` included.
    #[serde(default, deserialize_with = "present")]
    #[schema(required = true, schema_with = crate::openapi::any_value)]
    pub payload: Option<JsonPayload>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::openapi::object_or_null)]
    pub metadata: Option<JsonPayload>,
    /// `"any"`, `"no_stream"`, `"stream_exists"` or an integer; checked by the use case.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::expected_version)]
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

/// The body of `POST /api/v1/events/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendBatchRequest {
    #[serde(default)]
    #[schema(value_type = Vec<AppendEventRequest>)]
    pub events: Option<Vec<Object<AppendEventRequest>>>,
}

impl AppendBatchRequest {
    /// The use case's inputs, in request order.
    ///
    /// # Errors
    /// 400 when `events` is missing or `null` (an empty list is the use case's to refuse).
    pub fn try_into_inputs(self) -> Result<Vec<AppendEventInput>, ApiError> {
        let events = self
            .events
            .ok_or_else(|| ApiError::invalid("events", "is required"))?;
        Ok(events
            .into_iter()
            .map(|Object(event)| AppendEventInput::from(event))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Query parameters

/// Parameters of `GET /api/v1/events/query`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
    pub event_type_prefix: Option<String>,
    pub payload_filter: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub as_of: Option<String>,
    pub from_position: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
    pub order: Option<String>,
}

impl From<QueryParams> for QueryInput {
    fn from(p: QueryParams) -> Self {
        Self {
            entity_id: p.entity_id,
            event_type: p.event_type,
            event_type_prefix: p.event_type_prefix,
            payload_filter: p.payload_filter,
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

/// Parameters of `GET /api/v1/entities/{entity_id}/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub limit: Option<String>,
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

/// Parameters of `GET /api/v1/entities/{entity_id}/state`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StateParams {
    pub as_of: Option<String>,
    pub include_history: Option<String>,
    /// An alias of `include_history` that existing clients send.
    pub history: Option<String>,
}

impl From<StateParams> for EntityStateInput {
    fn from(p: StateParams) -> Self {
        Self {
            as_of: p.as_of,
            include_history: p.include_history.or(p.history),
        }
    }
}

/// Parameters of `GET /api/v1/entities`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntitiesParams {
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub event_type_prefix: Option<String>,
    pub order: Option<String>,
}

impl From<EntitiesParams> for EntityListInput {
    fn from(p: EntitiesParams) -> Self {
        Self {
            limit: p.limit,
            offset: p.offset,
            event_type_prefix: p.event_type_prefix,
            order: p.order,
        }
    }
}

/// Parameters of routes that take none: any parameter is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

// ---------------------------------------------------------------------------------------------
// Responses

/// The answer for one appended (or re-sent) event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiptResponse<'a> {
    pub event_id: Uuid,
    pub entity_id: &'a str,
    pub version: u64,
    pub position: u64,
    pub timestamp: String,
    pub duplicate: bool,
}

impl<'a> From<&'a AppendReceipt> for ReceiptResponse<'a> {
    fn from(r: &'a AppendReceipt) -> Self {
        Self {
            event_id: r.event_id.as_uuid(),
            entity_id: r.entity_id.as_str(),
            version: r.version.get(),
            position: r.position.get(),
            timestamp: timestamp(r.timestamp),
            duplicate: r.duplicate,
        }
    }
}

/// `POST /api/v1/events/batch`: receipts in request order; `ingested` counts non-duplicates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse<'a> {
    pub total: usize,
    pub ingested: usize,
    pub events: Vec<ReceiptResponse<'a>>,
}

impl<'a> From<&'a AppendReply> for BatchResponse<'a> {
    fn from(reply: &'a AppendReply) -> Self {
        Self {
            total: reply.receipts.len(),
            ingested: reply.ingested(),
            events: reply.receipts.iter().map(ReceiptResponse::from).collect(),
        }
    }
}

/// An event as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventResponse<'a> {
    pub id: Uuid,
    pub tenant_id: &'a str,
    pub entity_id: &'a str,
    pub event_type: &'a str,
    pub version: u64,
    pub position: u64,
    pub timestamp: String,
    /// The stored JSON text, written as is.
    #[schema(schema_with = crate::openapi::any_value)]
    pub payload: &'a RawValue,
    /// `null` when absent.
    #[schema(schema_with = crate::openapi::object_or_null)]
    pub metadata: Option<&'a RawValue>,
}

impl<'a> From<&'a Event> for EventResponse<'a> {
    fn from(e: &'a Event) -> Self {
        Self {
            id: e.id.as_uuid(),
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

fn events(list: &[Arc<Event>]) -> Vec<EventResponse<'_>> {
    list.iter()
        .map(|e| EventResponse::from(e.as_ref()))
        .collect()
}

/// `GET /api/v1/events/query`. `next_position` is the position of the last event returned (the
/// cursor for the next page, as `from_position`), `null` when the page is empty.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryResponse<'a> {
    pub events: Vec<EventResponse<'a>>,
    pub count: usize,
    pub has_more: bool,
    pub next_position: Option<u64>,
}

impl<'a> From<&'a QueryPage> for QueryResponse<'a> {
    fn from(page: &'a QueryPage) -> Self {
        Self {
            events: events(&page.events),
            count: page.events.len(),
            has_more: page.has_more,
            next_position: page.events.last().map(|e| e.position.get()),
        }
    }
}

/// `GET /api/v1/entities/{entity_id}/events` (`has_more` is an extension of the contract).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamResponse<'a> {
    pub events: Vec<EventResponse<'a>>,
    pub count: usize,
    pub has_more: bool,
}

impl<'a> StreamResponse<'a> {
    pub fn new(list: &'a [Arc<Event>], has_more: bool) -> Self {
        Self {
            events: events(list),
            count: list.len(),
            has_more,
        }
    }
}

/// `GET /api/v1/entities/{entity_id}/state`. `as_of` is `null` when not asked for; `history`
/// is present only with `include_history=true`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StateResponse<'a> {
    pub entity_id: &'a str,
    pub version: u64,
    pub event_count: u64,
    pub last_updated: String,
    pub as_of: Option<String>,
    #[schema(schema_with = crate::openapi::any_value)]
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

/// One entity of `GET /api/v1/entities`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// `GET /api/v1/entities`. `total` counts the matching entities of all pages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntitiesResponse<'a> {
    pub entities: Vec<EntitySummaryResponse<'a>>,
    pub total: u64,
    pub has_more: bool,
}

impl<'a> EntitiesResponse<'a> {
    /// `offset` is the number of entities skipped before this page, for `has_more`.
    pub fn new(page: &'a EntityPage, offset: u64) -> Self {
        let shown = u64::try_from(page.entities.len()).unwrap_or(u64::MAX);
        Self {
            entities: page
                .entities
                .iter()
                .map(EntitySummaryResponse::from)
                .collect(),
            total: page.total,
            has_more: offset.saturating_add(shown) < page.total,
        }
    }
}

/// One type of `GET /api/v1/event-types`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypeResponse<'a> {
    pub event_type: &'a str,
    pub count: u64,
}

/// `GET /api/v1/event-types`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypesResponse<'a> {
    pub event_types: Vec<EventTypeResponse<'a>>,
    pub total: usize,
}

impl<'a> From<&'a [EventTypeCount]> for EventTypesResponse<'a> {
    fn from(types: &'a [EventTypeCount]) -> Self {
        Self {
            event_types: types
                .iter()
                .map(|t| EventTypeResponse {
                    event_type: t.event_type.as_str(),
                    count: t.count,
                })
                .collect(),
            total: types.len(),
        }
    }
}

/// `GET /api/v1/stats`. `storage` holds the backend's own figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsResponse<'a> {
    pub total_events: u64,
    pub total_entities: u64,
    pub total_event_types: u64,
    pub last_position: u64,
    #[schema(schema_with = crate::openapi::any_object)]
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

/// `{"id", "deleted": true}`: the answer of a deletion.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedResponse<'a> {
    pub id: &'a str,
    /// Always `true`.
    #[schema(schema_with = crate::openapi::always_true)]
    pub deleted: bool,
}

impl<'a> DeletedResponse<'a> {
    pub fn new(id: &'a str) -> Self {
        Self { id, deleted: true }
    }
}

/// `GET /health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// Always `healthy`: the process answers.
    pub status: &'static str,
    pub version: &'static str,
    pub storage: HealthStorage,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthStorage {
    /// `embedded`, `memory` or `postgres`.
    pub backend: &'static str,
}

/// `GET /health/ready` once the store serves.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadyResponse {
    /// Always `ready`.
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_six_fraction_digits_and_z() {
        let t = DateTime::from_timestamp_micros(1_795_342_500_123_456).expect("in range");
        assert_eq!(timestamp(t), "2026-11-22T10:15:00.123456Z");
        let whole = DateTime::from_timestamp_micros(1_795_342_500_000_000).expect("in range");
        assert_eq!(timestamp(whole), "2026-11-22T10:15:00.000000Z");
    }

    #[test]
    fn payload_null_is_present_and_missing_is_absent() {
        let with_null: AppendEventRequest =
            serde_json::from_str(r#"{"payload":null,"metadata":null}"#).expect("valid");
        assert_eq!(with_null.payload.as_ref().map(|p| p.get()), Some("null"));
        assert_eq!(with_null.metadata.as_ref().map(|p| p.get()), Some("null"));
        let without: AppendEventRequest = serde_json::from_str("{}").expect("valid");
        assert!(without.payload.is_none() && without.metadata.is_none());
    }

    #[test]
    fn payload_text_is_kept_verbatim() {
        let request: AppendEventRequest =
            serde_json::from_str(r#"{"payload": { "b" : 2,  "a":[1, 2.50] }}"#).expect("valid");
        assert_eq!(
            request.payload.as_ref().map(|p| p.get()),
            Some(r#"{ "b" : 2,  "a":[1, 2.50] }"#)
        );
    }

    #[test]
    fn requests_are_objects_not_arrays_of_fields() {
        // serde's derive alone takes this as entity_id "a", event_type "t", payload 1.
        assert!(serde_json::from_str::<AppendEventRequest>(r#"[null,"a","t",1]"#).is_ok());
        let error = serde_json::from_str::<Object<AppendEventRequest>>(r#"[null,"a","t",1]"#)
            .expect_err("an array is not an event");
        assert!(
            error
                .to_string()
                .starts_with("invalid type: sequence, expected a JSON object"),
            "{error}"
        );
        let batch: Object<AppendBatchRequest> =
            serde_json::from_str(r#"{"events":[{"entity_id":"a"}]}"#).expect("valid");
        let inputs = batch.0.try_into_inputs().expect("has events");
        assert_eq!(inputs[0].entity_id.as_deref(), Some("a"));
        assert!(
            serde_json::from_str::<AppendBatchRequest>(r#"{"events":[[null,"a","t",1]]}"#).is_err()
        );
    }

    #[test]
    fn entities_has_more_counts_the_skipped_ones() {
        let page = EntityPage {
            entities: vec![],
            total: 5,
        };
        assert!(EntitiesResponse::new(&page, 4).has_more);
        assert!(!EntitiesResponse::new(&page, 5).has_more);
        assert!(!EntitiesResponse::new(&page, u64::MAX).has_more);
    }
}

//! The stored event and the event a client proposes to append.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::{EntityId, EventId, EventType, ExpectedVersion, Position, TenantId, Version};

/// JSON kept as the exact text the client sent. Events are written and read far more often than
/// their payload is inspected, so it is passed through without being re-parsed.
pub type JsonPayload = Box<RawValue>;

/// An event as stored: immutable once appended.
#[derive(Debug)]
pub struct Event {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub entity_id: EntityId,
    pub event_type: EventType,
    /// 1-based, gapless per (tenant, entity).
    pub version: Version,
    /// Global, strictly increasing per store.
    pub position: Position,
    /// Assigned at append, microsecond precision, non-decreasing in position order.
    pub timestamp: DateTime<Utc>,
    /// Any JSON value.
    pub payload: JsonPayload,
    /// A JSON object, or absent.
    pub metadata: Option<JsonPayload>,
}

impl Clone for Event {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            tenant_id: self.tenant_id.clone(),
            entity_id: self.entity_id.clone(),
            event_type: self.event_type.clone(),
            version: self.version,
            position: self.position,
            timestamp: self.timestamp,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.tenant_id == other.tenant_id
            && self.entity_id == other.entity_id
            && self.event_type == other.event_type
            && self.version == other.version
            && self.position == other.position
            && self.timestamp == other.timestamp
            && self.payload.get() == other.payload.get()
            && self.metadata.as_ref().map(|m| m.get()) == other.metadata.as_ref().map(|m| m.get())
    }
}

impl Eq for Event {}

impl Event {
    /// Bytes of payload and metadata as serialized JSON (what `limits.max_event_bytes` bounds).
    pub fn body_bytes(&self) -> usize {
        self.payload.get().len() + self.metadata.as_ref().map_or(0, |m| m.get().len())
    }
}

/// An event a client asks to append, validated but not yet placed in the log.
#[derive(Debug)]
pub struct ProposedEvent {
    pub id: EventId,
    pub entity_id: EntityId,
    pub event_type: EventType,
    pub payload: JsonPayload,
    pub metadata: Option<JsonPayload>,
    pub expected_version: ExpectedVersion,
}

impl Clone for ProposedEvent {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            entity_id: self.entity_id.clone(),
            event_type: self.event_type.clone(),
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            expected_version: self.expected_version,
        }
    }
}

impl ProposedEvent {
    /// Bytes of payload and metadata as serialized JSON.
    pub fn body_bytes(&self) -> usize {
        self.payload.get().len() + self.metadata.as_ref().map_or(0, |m| m.get().len())
    }

    /// Turns the proposal into a stored event at the given place in the log.
    pub fn into_event(
        self,
        tenant_id: TenantId,
        version: Version,
        position: Position,
        timestamp: DateTime<Utc>,
    ) -> Event {
        Event {
            id: self.id,
            tenant_id,
            entity_id: self.entity_id,
            event_type: self.event_type,
            version,
            position,
            timestamp,
            payload: self.payload,
            metadata: self.metadata,
        }
    }
}

/// Whether a re-sent event is the same as the stored one, in the sense of idempotency: the same
/// entity, type and payload. Payloads are compared as JSON values, so formatting differences
/// (whitespace, key order) in a retry do not turn it into a conflict.
pub fn same_content(stored: &Event, proposed: &ProposedEvent) -> bool {
    if stored.entity_id != proposed.entity_id || stored.event_type != proposed.event_type {
        return false;
    }
    if stored.payload.get() == proposed.payload.get() {
        return true;
    }
    let parse = |raw: &RawValue| serde_json::from_str::<serde_json::Value>(raw.get()).ok();
    match (parse(&stored.payload), parse(&proposed.payload)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn raw(json: &str) -> JsonPayload {
        RawValue::from_string(json.to_owned()).expect("valid JSON in test")
    }

    pub fn proposed(entity: &str, event_type: &str, payload: &str) -> ProposedEvent {
        ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse(entity).unwrap(),
            event_type: EventType::parse(event_type).unwrap(),
            payload: raw(payload),
            metadata: None,
            expected_version: ExpectedVersion::Any,
        }
    }

    pub fn stored(p: ProposedEvent, version: u64, position: u64) -> Event {
        p.into_event(
            TenantId::default_tenant(),
            Version::new(version),
            Position::new(position),
            DateTime::from_timestamp_micros(1_700_000_000_000_000 + position as i64).unwrap(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn same_content_compares_json_values_not_text() {
        let p = proposed("e1", "t.a", r#"{"a":1,"b":[1,2]}"#);
        let stored_event = stored(p.clone(), 1, 1);
        let mut retry = p.clone();
        retry.payload = raw(r#"{ "b": [1, 2], "a": 1 }"#);
        assert!(same_content(&stored_event, &retry));

        let mut other_payload = p.clone();
        other_payload.payload = raw(r#"{"a":2,"b":[1,2]}"#);
        assert!(!same_content(&stored_event, &other_payload));

        let mut other_type = p.clone();
        other_type.event_type = EventType::parse("t.b").unwrap();
        assert!(!same_content(&stored_event, &other_type));

        let mut other_entity = p;
        other_entity.entity_id = EntityId::parse("e2").unwrap();
        assert!(!same_content(&stored_event, &other_entity));
    }

    #[test]
    fn body_bytes_counts_payload_and_metadata() {
        let mut p = proposed("e", "t", r#"{"a":1}"#);
        assert_eq!(p.body_bytes(), 7);
        p.metadata = Some(raw(r#"{"m":true}"#));
        assert_eq!(p.body_bytes(), 17);
        assert_eq!(stored(p, 1, 1).body_bytes(), 17);
    }
}

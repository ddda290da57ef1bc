//! Decoding rows of `allsource_events` into events. Every string goes through the domain's
//! validating constructors: a row that breaks a rule is reported, never trusted.

use allsource_domain::{EntityId, Event, EventId, EventType, Position, TenantId, Version};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

/// The select list matching [`event_from_row`].
pub const EVENT_COLUMNS: &str = "position, tenant_id, entity_id, event_type, version, id, \
                                 recorded_at, payload::text, metadata::text";

/// Builds an event from a row selected with [`EVENT_COLUMNS`].
///
/// # Errors
/// A column that is missing or breaks a domain rule (a corrupt row).
pub fn event_from_row(row: &PgRow) -> anyhow::Result<Event> {
    let position: i64 = row.try_get(0)?;
    let version: i64 = row.try_get(4)?;
    let id: Uuid = row.try_get(5)?;
    let timestamp: DateTime<Utc> = row.try_get(6)?;
    let payload: String = row.try_get(7)?;
    let metadata: Option<String> = row.try_get(8)?;
    Ok(Event {
        id: EventId::new(id),
        tenant_id: TenantId::parse(row.try_get::<&str, _>(1)?).context("tenant_id")?,
        entity_id: EntityId::parse(row.try_get::<&str, _>(2)?).context("entity_id")?,
        event_type: EventType::parse(row.try_get::<&str, _>(3)?).context("event_type")?,
        version: Version::new(u64::try_from(version).context("version")?),
        position: Position::new(u64::try_from(position).context("position")?),
        timestamp,
        payload: RawValue::from_string(payload).context("payload")?,
        metadata: metadata
            .map(RawValue::from_string)
            .transpose()
            .context("metadata")?,
    })
}

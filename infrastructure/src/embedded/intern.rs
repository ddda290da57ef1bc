//! Interning of tenant ids, entity ids and event types while loading events from disk, so the
//! millions of events in memory share one allocation per distinct name.

use std::collections::HashMap;

use allsource_domain::{EntityId, EventType, TenantId};

/// Validated, shared names by their text.
#[derive(Default)]
pub struct Interner {
    tenants: HashMap<Box<str>, TenantId>,
    entities: HashMap<Box<str>, EntityId>,
    types: HashMap<Box<str>, EventType>,
}

impl Interner {
    pub fn tenant(&mut self, raw: &str) -> Result<TenantId, String> {
        if let Some(t) = self.tenants.get(raw) {
            return Ok(t.clone());
        }
        let t = TenantId::parse(raw).map_err(|e| format!("tenant id '{raw}': {e}"))?;
        self.tenants.insert(raw.into(), t.clone());
        Ok(t)
    }

    pub fn entity(&mut self, raw: &str) -> Result<EntityId, String> {
        if let Some(e) = self.entities.get(raw) {
            return Ok(e.clone());
        }
        let e = EntityId::parse(raw).map_err(|e| format!("entity id: {e}"))?;
        self.entities.insert(raw.into(), e.clone());
        Ok(e)
    }

    pub fn event_type(&mut self, raw: &str) -> Result<EventType, String> {
        if let Some(t) = self.types.get(raw) {
            return Ok(t.clone());
        }
        let t = EventType::parse(raw).map_err(|e| format!("event type '{raw}': {e}"))?;
        self.types.insert(raw.into(), t.clone());
        Ok(t)
    }
}

//! The in-memory read side shared by the `memory` and `embedded` stores, and the group planner
//! their single writers use.
//!
//! # Shape
//! Per tenant: the tenant's log (`Vec<Arc<Event>>` in position order), its streams (entity id →
//! events in version order, so version `v` sits at `v - 1`), its types (type → indexes into the
//! log) and an id index. Every structure is append-only, so a reader sees a consistent prefix.
//!
//! # Concurrency
//! One `RwLock` guards everything. Only the store's single writer takes the write lock, and only
//! to publish an already-durable group (a few pointer pushes per event), so readers wait at most
//! for that; planning and I/O happen under a read lock or none. Because the writer is alone, a
//! plan made under a read lock is still valid when its group is published.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use allsource_application::ports::{
    AppendReceipt, EntityListQuery, EntityOrder, EntityPage, EntitySummary, EventQuery,
    EventTypeCount, QueryPage, SortOrder, StoreStats, StreamRange,
};
use allsource_domain::{
    AppendContext, AppendRejection, EntityId, Event, EventId, EventType, PlannedEvent, Position,
    ProposedEvent, TenantId, plan_append,
};
use chrono::{DateTime, Utc};
use parking_lot::{RwLock, RwLockReadGuard};

/// The read side: every event in memory, indexed per tenant.
#[derive(Default)]
pub struct EventIndex {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<TenantId, TenantIndex>,
    last_position: u64,
    last_timestamp: Option<DateTime<Utc>>,
    total_events: u64,
    /// Streams of all tenants.
    total_entities: u64,
    body_bytes: u64,
}

#[derive(Default)]
struct TenantIndex {
    log: Vec<Arc<Event>>,
    streams: HashMap<EntityId, Stream>,
    /// Entity ids in order, for listings.
    entity_order: BTreeSet<EntityId>,
    /// Type → indexes into `log`.
    types: HashMap<EventType, Vec<u32>>,
    by_id: HashMap<EventId, u32>,
}

#[derive(Default)]
struct Stream {
    /// Version `v` is at `v - 1`.
    events: Vec<Arc<Event>>,
    /// Distinct event types of the stream (few), for the listing's prefix filter.
    types: Vec<EventType>,
}

impl EventIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Position of the newest event in the store (0 when empty).
    pub fn last_position(&self) -> u64 {
        self.inner.read().last_position
    }

    /// Number of events in the store, all tenants.
    pub fn total_events(&self) -> u64 {
        self.inner.read().total_events
    }

    /// Number of events and of entities (streams) in the store, all tenants.
    pub fn totals(&self) -> (u64, u64) {
        let inner = self.inner.read();
        (inner.total_events, inner.total_entities)
    }

    /// Every tenant's events with `after < position <= upto`, in position order (backups).
    pub fn range_all(&self, after: u64, upto: u64) -> Vec<Arc<Event>> {
        let inner = self.inner.read();
        let mut out = Vec::new();
        for t in inner.tenants.values() {
            let start = t.log.partition_point(|e| e.position.get() <= after);
            let end = t.log.partition_point(|e| e.position.get() <= upto);
            if start < end {
                out.extend_from_slice(&t.log[start..end]);
            }
        }
        out.sort_unstable_by_key(|e| e.position.get());
        out
    }

    /// Starts planning a group of appends. Holds a read lock until dropped: drop it before
    /// [`publish`](Self::publish). Only the store's single writer may plan.
    pub fn planner(&self) -> GroupPlanner<'_> {
        let inner = self.inner.read();
        GroupPlanner {
            next_position: inner.last_position + 1,
            last_timestamp: inner.last_timestamp,
            inner,
            pending_versions: HashMap::new(),
            pending_ids: HashMap::new(),
        }
    }

    /// Makes durable events visible to readers. Events must continue the log: positions strictly
    /// increasing past [`last_position`](Self::last_position), versions continuing their streams.
    /// Recovery uses it as well as the writers.
    ///
    /// # Errors
    /// Refuses (publishing nothing of the offending event onward) an event that breaks the
    /// order, naming it; the caller decides whether that is corruption.
    pub fn publish(&self, events: impl IntoIterator<Item = Arc<Event>>) -> Result<(), String> {
        let mut inner = self.inner.write();
        for event in events {
            inner.push(event)?;
        }
        Ok(())
    }

    /// See [`EventStore::read_stream`](allsource_application::ports::EventStore::read_stream).
    pub fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Vec<Arc<Event>> {
        let inner = self.inner.read();
        let Some(stream) = inner
            .tenants
            .get(tenant)
            .and_then(|t| t.streams.get(entity_id))
        else {
            return Vec::new();
        };
        let len = stream.events.len() as u64;
        let start = range.from_version.max(1) - 1;
        let end = range.to_version.map_or(len, |to| to.min(len));
        if start >= end {
            return Vec::new();
        }
        let mut end = end as usize;
        let start = start as usize;
        if let Some(limit) = range.limit {
            end = end.min(start.saturating_add(limit));
        }
        stream.events[start..end].to_vec()
    }

    /// See [`EventStore::query`](allsource_application::ports::EventStore::query).
    pub fn query(&self, tenant: &TenantId, query: &EventQuery) -> QueryPage {
        let inner = self.inner.read();
        let Some(t) = inner.tenants.get(tenant) else {
            return QueryPage::default();
        };
        // Pick the narrowest candidate list the filters allow; all are in position order.
        if let Some(entity_id) = &query.entity_id {
            let events = t.streams.get(entity_id).map_or(&[][..], |s| &s.events[..]);
            return collect_page(slice_after_cursor(events, query), query);
        }
        if let Some(event_type) = &query.event_type {
            let indexes = t.types.get(event_type).map_or(&[][..], |v| &v[..]);
            let start = match (query.from_position, query.order) {
                (Some(p), SortOrder::Asc) => {
                    indexes.partition_point(|&i| t.log[i as usize].position <= p)
                }
                _ => 0,
            };
            let end = match (query.from_position, query.order) {
                (Some(p), SortOrder::Desc) => {
                    indexes.partition_point(|&i| t.log[i as usize].position < p)
                }
                _ => indexes.len(),
            };
            let candidates = indexes[start..end].iter().map(|&i| &t.log[i as usize]);
            return match query.order {
                SortOrder::Asc => collect_page(candidates, query),
                SortOrder::Desc => collect_page(candidates.rev(), query),
            };
        }
        collect_page(slice_after_cursor(&t.log, query), query)
    }

    /// See [`EventStore::get_event`](allsource_application::ports::EventStore::get_event).
    pub fn get_event(&self, tenant: &TenantId, id: EventId) -> Option<Arc<Event>> {
        let inner = self.inner.read();
        let t = inner.tenants.get(tenant)?;
        t.by_id.get(&id).map(|&i| Arc::clone(&t.log[i as usize]))
    }

    /// See [`EventStore::list_entities`](allsource_application::ports::EventStore::list_entities).
    pub fn list_entities(&self, tenant: &TenantId, query: &EntityListQuery) -> EntityPage {
        let inner = self.inner.read();
        let Some(t) = inner.tenants.get(tenant) else {
            return EntityPage::default();
        };
        let mut matching: Vec<_> = t
            .entity_order
            .iter()
            .filter_map(|id| {
                let stream = t.streams.get(id)?;
                let last = stream.events.last()?;
                let keep = query.event_type_prefix.as_deref().is_none_or(|prefix| {
                    stream
                        .types
                        .iter()
                        .any(|ty| ty.as_str().starts_with(prefix))
                });
                keep.then_some((id, stream, last.timestamp))
            })
            .collect();
        // By the last event's time, ties by entity id (ascending in both orders).
        matching.sort_unstable_by(|(a_id, _, a_at), (b_id, _, b_at)| {
            let by_time = match query.order {
                EntityOrder::Asc => a_at.cmp(b_at),
                EntityOrder::Desc => b_at.cmp(a_at),
            };
            by_time.then_with(|| a_id.cmp(b_id))
        });
        let total = matching.len() as u64;
        let entities = matching
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .filter_map(|(id, stream, _)| {
                let last = stream.events.last()?;
                Some(EntitySummary {
                    entity_id: id.clone(),
                    event_count: stream.events.len() as u64,
                    version: last.version,
                    last_event_type: last.event_type.clone(),
                    last_event_at: last.timestamp,
                })
            })
            .collect();
        EntityPage { entities, total }
    }

    /// See [`EventStore::event_types`](allsource_application::ports::EventStore::event_types).
    pub fn event_types(&self, tenant: &TenantId) -> Vec<EventTypeCount> {
        let inner = self.inner.read();
        let Some(t) = inner.tenants.get(tenant) else {
            return Vec::new();
        };
        let mut types: Vec<_> = t
            .types
            .iter()
            .map(|(ty, idx)| EventTypeCount {
                event_type: ty.clone(),
                count: idx.len() as u64,
            })
            .collect();
        types.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        types
    }

    /// The tenant's figures, plus the index's memory figures under `storage`.
    pub fn stats(&self, tenant: &TenantId) -> StoreStats {
        let inner = self.inner.read();
        let mut stats = StoreStats::default();
        if let Some(t) = inner.tenants.get(tenant) {
            stats.total_events = t.log.len() as u64;
            stats.total_entities = t.streams.len() as u64;
            stats.total_event_types = t.types.len() as u64;
            stats.last_position = t.log.last().map_or(0, |e| e.position.get());
        }
        let storage = &mut stats.storage;
        storage.insert("events_in_memory".into(), inner.total_events.into());
        storage.insert("store_last_position".into(), inner.last_position.into());
        storage.insert("index_bytes_per_event".into(), INDEX_BYTES_PER_EVENT.into());
        storage.insert("payload_bytes".into(), inner.body_bytes.into());
        stats
    }
}

/// Estimated bytes the read side holds per event beyond its payload and metadata text and its
/// interned names: the `Arc<Event>` allocation (header + struct), the log and stream pointers,
/// the type index entry and the id map entry (key, value, control byte, load factor).
/// `docs/BENCHMARKS.md` compares it with measured process memory.
pub const INDEX_BYTES_PER_EVENT: u64 = (16 + std::mem::size_of::<Event>() + 8 + 8 + 4 + 24) as u64;

impl Inner {
    fn push(&mut self, event: Arc<Event>) -> Result<(), String> {
        let position = event.position.get();
        if position <= self.last_position {
            return Err(format!(
                "event {} at position {position} does not follow position {}",
                event.id, self.last_position
            ));
        }
        let tenant = self.tenants.entry(event.tenant_id.clone()).or_default();
        let stream = tenant.streams.entry(event.entity_id.clone()).or_default();
        let expected_version = stream.events.len() as u64 + 1;
        if event.version.get() != expected_version {
            return Err(format!(
                "event {} of '{}' has version {}, expected {expected_version}",
                event.id, event.entity_id, event.version
            ));
        }
        if tenant.by_id.contains_key(&event.id) {
            return Err(format!("event id {} appears twice", event.id));
        }
        let Ok(log_index) = u32::try_from(tenant.log.len()) else {
            return Err("a tenant may hold at most 2^32 events in memory".into());
        };
        if expected_version == 1 {
            tenant.entity_order.insert(event.entity_id.clone());
            self.total_entities += 1;
        }
        if !stream.types.contains(&event.event_type) {
            stream.types.push(event.event_type.clone());
        }
        stream.events.push(Arc::clone(&event));
        tenant
            .types
            .entry(event.event_type.clone())
            .or_default()
            .push(log_index);
        tenant.by_id.insert(event.id, log_index);
        self.last_position = position;
        self.last_timestamp = Some(
            self.last_timestamp
                .map_or(event.timestamp, |t| t.max(event.timestamp)),
        );
        self.total_events += 1;
        self.body_bytes += event.body_bytes() as u64;
        tenant.log.push(event);
        Ok(())
    }
}

/// The part of a position-ordered slice beyond the query's cursor, in the query's order.
fn slice_after_cursor<'a>(
    events: &'a [Arc<Event>],
    query: &EventQuery,
) -> Box<dyn Iterator<Item = &'a Arc<Event>> + 'a> {
    match (query.from_position, query.order) {
        (None, SortOrder::Asc) => Box::new(events.iter()),
        (None, SortOrder::Desc) => Box::new(events.iter().rev()),
        (Some(p), SortOrder::Asc) => {
            let start = events.partition_point(|e| e.position <= p);
            Box::new(events[start..].iter())
        }
        (Some(p), SortOrder::Desc) => {
            let end = events.partition_point(|e| e.position < p);
            Box::new(events[..end].iter().rev())
        }
    }
}

/// Applies filters, offset and limit to candidates already past the cursor, in order.
fn collect_page<'a>(
    candidates: impl Iterator<Item = &'a Arc<Event>>,
    query: &EventQuery,
) -> QueryPage {
    let mut events = Vec::with_capacity(query.limit.min(1024));
    let mut skipped = 0usize;
    let mut has_more = false;
    for event in candidates {
        // Timestamps never decrease along positions: ascending, nothing after `until`/`as_of`
        // can match any more.
        if query.order == SortOrder::Asc
            && (query.until.is_some_and(|u| event.timestamp >= u)
                || query.as_of.is_some_and(|a| event.timestamp > a))
        {
            break;
        }
        if !query.matches(event) {
            continue;
        }
        if skipped < query.offset {
            skipped += 1;
            continue;
        }
        if events.len() == query.limit {
            has_more = true;
            break;
        }
        events.push(Arc::clone(event));
    }
    QueryPage { events, has_more }
}

/// Plans a group of appends for a single writer: stages each request against the published
/// log plus what earlier requests of the group staged, assigning versions, positions and
/// timestamps. Nothing becomes visible until the writer publishes the staged events.
pub struct GroupPlanner<'a> {
    inner: RwLockReadGuard<'a, Inner>,
    next_position: u64,
    last_timestamp: Option<DateTime<Utc>>,
    pending_versions: HashMap<(TenantId, EntityId), u64>,
    pending_ids: HashMap<(TenantId, EventId), Arc<Event>>,
}

/// One request, staged: the events to write (in position order) and the receipts to answer.
#[derive(Debug)]
pub struct StagedAppend {
    pub new_events: Vec<Arc<Event>>,
    pub receipts: Vec<AppendReceipt>,
}

struct TenantView<'p, 'a> {
    planner: &'p GroupPlanner<'a>,
    tenant: &'p TenantId,
}

impl AppendContext for TenantView<'_, '_> {
    fn stream_version(&self, entity_id: &EntityId) -> u64 {
        if let Some(v) = self
            .planner
            .pending_versions
            .get(&(self.tenant.clone(), entity_id.clone()))
        {
            return *v;
        }
        self.planner
            .inner
            .tenants
            .get(self.tenant)
            .and_then(|t| t.streams.get(entity_id))
            .map_or(0, |s| s.events.len() as u64)
    }

    fn stored_event(&self, id: &EventId) -> Option<Arc<Event>> {
        if let Some(e) = self.planner.pending_ids.get(&(self.tenant.clone(), *id)) {
            return Some(Arc::clone(e));
        }
        let t = self.planner.inner.tenants.get(self.tenant)?;
        t.by_id.get(id).map(|&i| Arc::clone(&t.log[i as usize]))
    }
}

impl GroupPlanner<'_> {
    /// Stages one append request. All its events share one timestamp: `now` truncated to
    /// microseconds, or the last timestamp if the clock went backwards.
    ///
    /// # Errors
    /// The batch's rejection; nothing of it is staged.
    pub fn stage(
        &mut self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
        now: DateTime<Utc>,
    ) -> Result<StagedAppend, AppendRejection> {
        let plan = plan_append(
            &TenantView {
                planner: self,
                tenant,
            },
            &events,
        )?;
        let timestamp = truncate_to_micros(now);
        let timestamp = self.last_timestamp.map_or(timestamp, |t| t.max(timestamp));
        // Share the index's copy of the tenant id too (see `share_names`).
        let shared_tenant = self
            .inner
            .tenants
            .get_key_value(tenant)
            .map(|(t, _)| t.clone());
        let tenant = shared_tenant.as_ref().unwrap_or(tenant);
        let mut staged = StagedAppend {
            new_events: Vec::with_capacity(events.len()),
            receipts: Vec::with_capacity(events.len()),
        };
        for (proposed, planned) in events.into_iter().zip(plan) {
            match planned {
                PlannedEvent::Duplicate(stored) => {
                    staged
                        .receipts
                        .push(AppendReceipt::for_event(&stored, true));
                }
                PlannedEvent::New { version } => {
                    let position = Position::new(self.next_position);
                    self.next_position += 1;
                    let proposed = self.share_names(tenant, proposed);
                    let event =
                        Arc::new(proposed.into_event(tenant.clone(), version, position, timestamp));
                    self.pending_versions
                        .insert((tenant.clone(), event.entity_id.clone()), version.get());
                    self.pending_ids
                        .insert((tenant.clone(), event.id), Arc::clone(&event));
                    staged
                        .receipts
                        .push(AppendReceipt::for_event(&event, false));
                    staged.new_events.push(event);
                }
            }
        }
        if !staged.new_events.is_empty() {
            self.last_timestamp = Some(timestamp);
        }
        Ok(staged)
    }
}

impl GroupPlanner<'_> {
    /// Reuses the index's copies of the entity id and event type when it has them, so the
    /// events of one stream share one allocation per name instead of one per event.
    fn share_names(&self, tenant: &TenantId, mut proposed: ProposedEvent) -> ProposedEvent {
        if let Some(t) = self.inner.tenants.get(tenant) {
            if let Some((entity_id, _)) = t.streams.get_key_value(&proposed.entity_id) {
                proposed.entity_id = entity_id.clone();
            }
            if let Some((event_type, _)) = t.types.get_key_value(&proposed.event_type) {
                proposed.event_type = event_type.clone();
            }
        }
        proposed
    }
}

/// Timestamps are kept with microsecond precision end to end (API, WAL, Parquet, PostgreSQL).
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use allsource_domain::{ExpectedVersion, Version};
    use chrono::TimeZone;
    use serde_json::value::RawValue;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    fn proposed(entity: &str, ty: &str) -> ProposedEvent {
        ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse(entity).unwrap(),
            event_type: EventType::parse(ty).unwrap(),
            payload: RawValue::from_string("{}".into()).unwrap(),
            metadata: None,
            expected_version: ExpectedVersion::Any,
        }
    }

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
    }

    fn append(index: &EventIndex, t: &TenantId, events: Vec<ProposedEvent>, now: DateTime<Utc>) {
        let staged = index.planner().stage(t, events, now).unwrap();
        index.publish(staged.new_events).unwrap();
    }

    #[test]
    fn planner_sees_earlier_requests_of_its_group() {
        let index = EventIndex::new();
        let t = tenant("a");
        let mut planner = index.planner();
        let first = planner.stage(&t, vec![proposed("e", "x")], at(1)).unwrap();
        let mut second_event = proposed("e", "x");
        second_event.expected_version = ExpectedVersion::Exact(1);
        let retry = first.new_events[0].id;
        let mut dup = proposed("e", "x");
        dup.id = retry;
        let second = planner.stage(&t, vec![second_event, dup], at(0)).unwrap();
        assert_eq!(second.receipts[0].version, Version::new(2));
        assert_eq!(second.receipts[0].position, Position::new(2));
        assert!(second.receipts[1].duplicate);
        // The clock went backwards: the timestamp does not.
        assert_eq!(second.receipts[0].timestamp, at(1));
        drop(planner);
        assert_eq!(index.last_position(), 0, "nothing visible before publish");
        index
            .publish(first.new_events.into_iter().chain(second.new_events))
            .unwrap();
        assert_eq!(index.last_position(), 2);
    }

    #[test]
    fn publish_refuses_out_of_order_events() {
        let index = EventIndex::new();
        let t = tenant("a");
        let staged = index
            .planner()
            .stage(&t, vec![proposed("e", "x"), proposed("e", "x")], at(1))
            .unwrap();
        let mut events = staged.new_events;
        events.swap(0, 1);
        assert!(index.publish(events).is_err());
    }

    #[test]
    fn tenants_are_isolated() {
        let index = EventIndex::new();
        let (a, b) = (tenant("a"), tenant("b"));
        append(&index, &a, vec![proposed("e", "x")], at(1));
        let staged = index
            .planner()
            .stage(&b, vec![proposed("e", "x")], at(2))
            .unwrap();
        assert_eq!(staged.receipts[0].version, Version::new(1));
        index.publish(staged.new_events).unwrap();
        let id_of_a = index.read_stream(&a, &EntityId::parse("e").unwrap(), StreamRange::ALL)[0].id;
        assert!(index.get_event(&b, id_of_a).is_none());
        assert!(index.get_event(&a, id_of_a).is_some());
        assert_eq!(index.stats(&a).total_events, 1);
        assert_eq!(index.stats(&b).last_position, 2);
    }

    #[test]
    fn read_stream_ranges() {
        let index = EventIndex::new();
        let t = tenant("a");
        append(
            &index,
            &t,
            (0..10).map(|_| proposed("e", "x")).collect(),
            at(1),
        );
        let e = EntityId::parse("e").unwrap();
        let versions = |r: StreamRange| -> Vec<u64> {
            index
                .read_stream(&t, &e, r)
                .iter()
                .map(|e| e.version.get())
                .collect()
        };
        assert_eq!(versions(StreamRange::ALL).len(), 10);
        assert_eq!(
            versions(StreamRange {
                from_version: 3,
                to_version: Some(5),
                limit: None
            }),
            [3, 4, 5]
        );
        assert_eq!(
            versions(StreamRange {
                from_version: 9,
                to_version: None,
                limit: Some(5)
            }),
            [9, 10]
        );
        assert_eq!(
            versions(StreamRange {
                from_version: 2,
                to_version: None,
                limit: Some(2)
            }),
            [2, 3]
        );
        assert!(
            versions(StreamRange {
                from_version: 11,
                to_version: None,
                limit: None
            })
            .is_empty()
        );
        assert!(
            versions(StreamRange {
                from_version: 0,
                to_version: Some(0),
                limit: None
            })
            .is_empty()
        );
    }

    #[test]
    fn query_paging_both_directions_and_by_type() {
        let index = EventIndex::new();
        let t = tenant("a");
        for i in 0..10u32 {
            let ty = if i % 2 == 0 { "even" } else { "odd" };
            append(
                &index,
                &t,
                vec![proposed(&format!("e{}", i % 3), ty)],
                at(i),
            );
        }
        let positions = |q: EventQuery| -> (Vec<u64>, bool) {
            let page = index.query(&t, &q);
            (
                page.events.iter().map(|e| e.position.get()).collect(),
                page.has_more,
            )
        };
        let base = EventQuery {
            limit: 3,
            ..Default::default()
        };
        assert_eq!(positions(base.clone()), (vec![1, 2, 3], true));
        assert_eq!(
            positions(EventQuery {
                from_position: Some(Position::new(8)),
                ..base.clone()
            }),
            (vec![9, 10], false)
        );
        let desc = EventQuery {
            order: SortOrder::Desc,
            ..base.clone()
        };
        assert_eq!(positions(desc.clone()), (vec![10, 9, 8], true));
        assert_eq!(
            positions(EventQuery {
                from_position: Some(Position::new(3)),
                ..desc.clone()
            }),
            (vec![2, 1], false)
        );
        let odd = EventQuery {
            event_type: Some(EventType::parse("odd").unwrap()),
            ..base.clone()
        };
        assert_eq!(positions(odd.clone()), (vec![2, 4, 6], true));
        assert_eq!(
            positions(EventQuery {
                from_position: Some(Position::new(6)),
                ..odd.clone()
            }),
            (vec![8, 10], false)
        );
        assert_eq!(
            positions(EventQuery {
                order: SortOrder::Desc,
                from_position: Some(Position::new(6)),
                ..odd
            }),
            (vec![4, 2], false)
        );
        let entity = EventQuery {
            entity_id: Some(EntityId::parse("e1").unwrap()),
            offset: 1,
            ..base.clone()
        };
        assert_eq!(positions(entity), (vec![5, 8], false));
        let window = EventQuery {
            since: Some(at(2)),
            until: Some(at(5)),
            ..base.clone()
        };
        assert_eq!(positions(window), (vec![3, 4, 5], false));
        let as_of = EventQuery {
            as_of: Some(at(1)),
            ..base.clone()
        };
        assert_eq!(positions(as_of), (vec![1, 2], false));
        assert_eq!(
            positions(EventQuery {
                limit: 3,
                ..Default::default()
            })
            .0
            .len(),
            3
        );
        assert!(index.query(&tenant("other"), &base).events.is_empty());
    }

    #[test]
    fn entity_listing_is_ordered_filtered_and_paged() {
        let index = EventIndex::new();
        let t = tenant("a");
        append(
            &index,
            &t,
            vec![
                proposed("b", "order.placed"),
                proposed("a", "user.created"),
                proposed("c", "order.paid"),
            ],
            at(1),
        );
        append(&index, &t, vec![proposed("a", "order.placed")], at(2));
        let page = index.list_entities(
            &t,
            &EntityListQuery {
                limit: 2,
                offset: 0,
                event_type_prefix: None,
                order: EntityOrder::Desc,
            },
        );
        assert_eq!(page.total, 3);
        let ids: Vec<_> = page.entities.iter().map(|e| e.entity_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(page.entities[0].event_count, 2);
        assert_eq!(page.entities[0].last_event_type.as_str(), "order.placed");
        let users = index.list_entities(
            &t,
            &EntityListQuery {
                limit: 10,
                offset: 0,
                event_type_prefix: Some("user.".into()),
                order: EntityOrder::Desc,
            },
        );
        assert_eq!(users.total, 1);
        let orders = index.list_entities(
            &t,
            &EntityListQuery {
                limit: 10,
                offset: 1,
                event_type_prefix: Some("order.".into()),
                order: EntityOrder::Desc,
            },
        );
        assert_eq!(orders.total, 3);
        assert_eq!(orders.entities.len(), 2);
        let oldest_first = index.list_entities(
            &t,
            &EntityListQuery {
                limit: 10,
                offset: 0,
                event_type_prefix: None,
                order: EntityOrder::Asc,
            },
        );
        let ids: Vec<_> = oldest_first
            .entities
            .iter()
            .map(|e| e.entity_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c", "a"]);
        let types = index.event_types(&t);
        let names: Vec<_> = types
            .iter()
            .map(|t| (t.event_type.as_str(), t.count))
            .collect();
        assert_eq!(
            names,
            [("order.paid", 1), ("order.placed", 2), ("user.created", 1)]
        );
    }
}

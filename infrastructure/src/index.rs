//! The read side shared by the `memory` and `embedded` stores, and the group planner their
//! single writers use.
//!
//! # Shape
//! The index holds *positions*, not events: per tenant, the tenant's log (positions in order),
//! its streams (entity id → positions in version order, so version `v` sits at `v - 1`, plus
//! the few figures a listing needs), its types (type → indexes into the log) and an id index
//! (id → index into the log). About 44 bytes per event ([`INDEX_BYTES_PER_EVENT`]), whatever
//! the events' size. Every structure is append-only, so a reader sees a consistent prefix.
//!
//! The events themselves are found by position: the newest ones in the in-memory *tail*
//! (every event the store has not yet sealed to disk), older ones through [`ColdEvents`] (the
//! embedded store's Parquet files behind a byte-bounded cache). The memory store never seals,
//! so its tail is the whole log.
//!
//! # Reads and I/O
//! Every read takes an [`Io`]: with [`Io::Forbidden`] it answers from memory (tail and cache)
//! or fails with [`ReadError::NeedsIo`]; the store then runs it again with [`Io::Allowed`] on
//! a blocking thread. Hot reads thus never leave the async worker, and cold ones never block
//! it.
//!
//! # Concurrency
//! One `RwLock` guards everything. The store's single writer takes it for writing to publish
//! an already-durable group (a few pushes per event), and the sealer to drop sealed events
//! from the tail. Readers copy the positions they need under the read lock and fetch events
//! without it, chunk by chunk, so disk reads never hold the lock. Because the writer is alone,
//! a plan made under a read lock is still valid when its group is published.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use allsource_application::ports::{
    AppendReceipt, EntityListQuery, EntityOrder, EntityPage, EntitySummary, EventQuery,
    EventTypeCount, QueryPage, SortOrder, StoreAppendError, StoreError, StoreStats, StreamRange,
};
use allsource_domain::{
    AppendContext, EntityId, Event, EventId, EventType, PlannedEvent, Position, ProposedEvent,
    TenantId, plan_append,
};
use anyhow::anyhow;
use chrono::{DateTime, Utc};
use parking_lot::{RwLock, RwLockReadGuard};

/// Whether a read may go to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Answer from memory or fail with [`ReadError::NeedsIo`] (on an async worker).
    Forbidden,
    /// Read from disk what memory does not hold (on a blocking thread).
    Allowed,
}

/// Why a read did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Some event is on disk only and the read was made with [`Io::Forbidden`].
    #[error("the read needs disk I/O")]
    NeedsIo,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NeedsIo => StoreError::Internal(anyhow!("a read needed disk I/O")),
            ReadError::Failed(e) => StoreError::Internal(e),
        }
    }
}

/// Events no longer in the index's tail: sealed to disk.
pub trait ColdEvents: Send + Sync {
    /// The events at `positions`, in that order: from memory (a cache), or from disk when
    /// `io` allows.
    ///
    /// # Errors
    /// [`ReadError::NeedsIo`] for a miss with [`Io::Forbidden`]; I/O errors, and a position no
    /// file holds.
    fn get_many(&self, positions: &[u64], io: Io) -> Result<Vec<Arc<Event>>, ReadError>;
}

/// One sealed event as recovery reads it from a file: names as text, so that only a stream,
/// type or tenant the index does not know yet costs an allocation.
#[derive(Debug, Clone, Copy)]
pub struct SealedRow<'a> {
    pub id: EventId,
    pub tenant_id: &'a str,
    pub entity_id: &'a str,
    pub event_type: &'a str,
    pub version: u64,
    pub position: u64,
    pub timestamp: DateTime<Utc>,
}

/// The ids of sealed events per tenant, built in file order (so an id's index in its tenant's
/// log is the number of the tenant's ids before it): see
/// [`EventIndex::install_sealed_ids`].
#[derive(Default)]
pub struct SealedIds {
    tenants: Map<String, Map<EventId, u32>>,
    /// Room the first tenant's map is made with: the number of sealed events.
    expected: usize,
}

impl SealedIds {
    /// For `expected` sealed events in all. The first tenant's map is sized for all of them,
    /// so that a store with one large tenant never grows (rehashes) its biggest table;
    /// [`EventIndex::install_sealed_ids`] gives back what it did not use.
    pub fn with_expected(expected: u64) -> Self {
        Self {
            tenants: Map::default(),
            expected: usize::try_from(expected).unwrap_or(0),
        }
    }

    /// The next sealed event of `tenant` has id `id`.
    ///
    /// # Errors
    /// An id seen twice, or a tenant past 2^32 events.
    pub fn add(&mut self, tenant: &str, id: EventId) -> Result<(), String> {
        let ids = match self.tenants.get_mut(tenant) {
            Some(ids) => ids,
            None => {
                let room = if self.tenants.is_empty() {
                    self.expected
                } else {
                    0
                };
                self.tenants
                    .entry(tenant.to_owned())
                    .or_insert_with(|| Map::with_capacity_and_hasher(room, Default::default()))
            }
        };
        let next = u32::try_from(ids.len()).map_err(|_| "a tenant may hold at most 2^32 events")?;
        if ids.insert(id, next).is_some() {
            return Err(format!("event id {id} appears twice"));
        }
        Ok(())
    }
}

/// Names for [`Inner::push`]: as text, plus shared copies when the caller has them.
struct Names<'a> {
    tenant: &'a str,
    entity: &'a str,
    event_type: &'a str,
    shared: Option<(&'a TenantId, &'a EntityId, &'a EventType)>,
}

impl Names<'_> {
    fn tenant(&self) -> Result<TenantId, String> {
        match self.shared {
            Some((t, _, _)) => Ok(t.clone()),
            None => TenantId::parse(self.tenant).map_err(|e| format!("tenant id: {e}")),
        }
    }

    fn entity(&self) -> Result<EntityId, String> {
        match self.shared {
            Some((_, e, _)) => Ok(e.clone()),
            None => EntityId::parse(self.entity).map_err(|e| format!("entity id: {e}")),
        }
    }

    fn event_type(&self) -> Result<EventType, String> {
        match self.shared {
            Some((_, _, t)) => Ok(t.clone()),
            None => EventType::parse(self.event_type).map_err(|e| format!("event type: {e}")),
        }
    }
}

/// The index's hash maps: aHash, keyed at random per process (its keys are client-chosen, so
/// a keyed hash against collision floods), several times faster than SipHash on these short
/// keys; the id map alone is hashed once per event at start-up and at each append.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Positions copied per lock when a read walks a long candidate list.
const CHUNK: usize = 512;

/// The read side: positions indexed per tenant, the unsealed tail in memory, the rest through
/// [`ColdEvents`].
#[derive(Default)]
pub struct EventIndex {
    inner: RwLock<Inner>,
    cold: Option<Arc<dyn ColdEvents>>,
}

#[derive(Default)]
struct Inner {
    tenants: Map<TenantId, TenantIndex>,
    /// Every event not yet sealed to disk, all tenants, in position order.
    tail: VecDeque<Arc<Event>>,
    last_position: u64,
    last_timestamp: Option<DateTime<Utc>>,
    total_events: u64,
    /// Streams of all tenants.
    total_entities: u64,
    body_bytes: u64,
    /// Every [`TIME_MARK_EVERY`]th event of the log (all tenants): its position and time, so
    /// that a time window becomes a range of positions without reading events.
    time_marks: Vec<(u64, DateTime<Utc>)>,
}

/// Events between two time marks (1/16 byte of index per event).
const TIME_MARK_EVERY: u64 = 256;

#[derive(Default)]
struct TenantIndex {
    /// Positions of the tenant's events, in order.
    log: Vec<u64>,
    streams: Map<EntityId, Stream>,
    /// Entity ids in order, for listings.
    entity_order: BTreeSet<EntityId>,
    /// Type → indexes into `log`.
    types: Map<EventType, Vec<u32>>,
    /// Id → index into `log`.
    by_id: Map<EventId, u32>,
}

struct Stream {
    /// Positions; version `v` is at `v - 1`.
    positions: Vec<u64>,
    /// Distinct event types of the stream (few), for the listing's prefix filter.
    types: Vec<EventType>,
    last_type: EventType,
    last_at: DateTime<Utc>,
}

/// Which position list of a tenant a query walks.
#[derive(Clone)]
enum Candidates {
    Log,
    Stream(EntityId),
    Type(EventType),
}

impl TenantIndex {
    fn list_len(&self, list: &Candidates) -> usize {
        match list {
            Candidates::Log => self.log.len(),
            Candidates::Stream(id) => self.streams.get(id).map_or(0, |s| s.positions.len()),
            Candidates::Type(ty) => self.types.get(ty).map_or(0, Vec::len),
        }
    }

    fn list_at(&self, list: &Candidates, i: usize) -> u64 {
        match list {
            Candidates::Log => self.log[i],
            Candidates::Stream(id) => self.streams[id].positions[i],
            Candidates::Type(ty) => self.log[self.types[ty][i] as usize],
        }
    }

    /// Index of the first entry of `list` whose position is above `p`.
    fn list_after(&self, list: &Candidates, p: u64) -> usize {
        match list {
            Candidates::Log => self.log.partition_point(|&q| q <= p),
            Candidates::Stream(id) => self
                .streams
                .get(id)
                .map_or(0, |s| s.positions.partition_point(|&q| q <= p)),
            Candidates::Type(ty) => self
                .types
                .get(ty)
                .map_or(0, |idx| idx.partition_point(|&i| self.log[i as usize] <= p)),
        }
    }
}

impl Inner {
    /// Positions a query's time window excludes, as (everything at or below, everything at
    /// or above), from the time marks: timestamps never decrease along positions.
    fn window_bounds(&self, query: &EventQuery) -> (u64, u64) {
        let marks = &self.time_marks;
        let mut below = 0;
        if let Some(since) = query.since {
            // The last mark before `since`: it and everything before it are older.
            let i = marks.partition_point(|(_, t)| *t < since);
            if i > 0 {
                below = marks[i - 1].0;
            }
        }
        let mut above = u64::MAX;
        let first_excluded = |keep: &dyn Fn(DateTime<Utc>) -> bool| {
            let i = marks.partition_point(|(_, t)| keep(*t));
            marks.get(i).map_or(u64::MAX, |(p, _)| *p)
        };
        if let Some(until) = query.until {
            above = above.min(first_excluded(&|t| t < until));
        }
        if let Some(as_of) = query.as_of {
            above = above.min(first_excluded(&|t| t <= as_of));
        }
        (below, above)
    }

    /// The tail's event at `position`, if the tail holds it.
    fn tail_get(&self, position: u64) -> Option<&Arc<Event>> {
        let first = self.tail.front()?.position.get();
        if position < first {
            return None;
        }
        // Positions are dense in practice: try the direct slot first.
        let guess = usize::try_from(position - first).ok()?;
        if let Some(e) = self.tail.get(guess)
            && e.position.get() == position
        {
            return Some(e);
        }
        let i = self.tail.partition_point(|e| e.position.get() < position);
        self.tail.get(i).filter(|e| e.position.get() == position)
    }
}

impl EventIndex {
    /// An index whose events all stay in memory (the memory store).
    pub fn new() -> Self {
        Self::default()
    }

    /// An index whose sealed events are read through `cold` once
    /// [`evict_through`](Self::evict_through) drops them from the tail.
    pub fn with_cold(cold: Arc<dyn ColdEvents>) -> Self {
        Self {
            inner: RwLock::default(),
            cold: Some(cold),
        }
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

    /// Number of events held in the tail (in memory, not yet sealed).
    pub fn tail_len(&self) -> usize {
        self.inner.read().tail.len()
    }

    /// The events at `positions`, in that order: from the tail, else from the cold side.
    fn fetch(&self, positions: &[u64], io: Io) -> Result<Vec<Arc<Event>>, ReadError> {
        let found: Vec<Option<Arc<Event>>> = {
            let inner = self.inner.read();
            positions
                .iter()
                .map(|&p| inner.tail_get(p).cloned())
                .collect()
        };
        let missing: Vec<u64> = found
            .iter()
            .zip(positions)
            .filter(|(slot, _)| slot.is_none())
            .map(|(_, &p)| p)
            .collect();
        if missing.is_empty() {
            return Ok(found.into_iter().flatten().collect());
        }
        let cold = self.cold.as_ref().ok_or_else(|| {
            ReadError::Failed(anyhow!("the index has no event at position {}", missing[0]))
        })?;
        let mut loaded = cold.get_many(&missing, io)?.into_iter();
        Ok(found
            .into_iter()
            .map(|slot| slot.or_else(|| loaded.next()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("the cold side answered fewer events than asked"))?)
    }

    /// Every tenant's events with `after < position <= upto`, in position order (backups).
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn range_all(&self, after: u64, upto: u64, io: Io) -> Result<Vec<Arc<Event>>, ReadError> {
        let mut positions = Vec::new();
        {
            let inner = self.inner.read();
            for t in inner.tenants.values() {
                let start = t.log.partition_point(|&p| p <= after);
                let end = t.log.partition_point(|&p| p <= upto);
                positions.extend_from_slice(&t.log[start..end.max(start)]);
            }
        }
        positions.sort_unstable();
        let mut out = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(CHUNK) {
            out.extend(self.fetch(chunk, io)?);
        }
        Ok(out)
    }

    /// Starts planning a group of appends. Holds a read lock until dropped: drop it before
    /// [`publish`](Self::publish). Only the store's single writer may plan.
    pub fn planner(&self) -> GroupPlanner<'_> {
        let inner = self.inner.read();
        GroupPlanner {
            next_position: inner.last_position + 1,
            last_timestamp: inner.last_timestamp,
            inner,
            cold: self.cold.as_deref(),
            pending_versions: Map::default(),
            pending_ids: Map::default(),
        }
    }

    /// Makes durable events visible to readers, held in the tail. Events must continue the
    /// log: positions strictly increasing past [`last_position`](Self::last_position),
    /// versions continuing their streams. Recovery uses it as well as the writers.
    ///
    /// # Errors
    /// Refuses (publishing nothing of the offending event onward) an event that breaks the
    /// order, naming it; the caller decides whether that is corruption.
    pub fn publish(&self, events: impl IntoIterator<Item = Arc<Event>>) -> Result<(), String> {
        let mut inner = self.inner.write();
        for event in events {
            inner.push(&event)?;
            inner.tail.push_back(event);
        }
        Ok(())
    }

    /// Indexes events that are already sealed (recovery reads them from the files without
    /// their payloads): the cold side must be able to fetch each. Same order rules as
    /// [`publish`](Self::publish).
    ///
    /// # Errors
    /// See [`publish`](Self::publish).
    pub fn publish_sealed(&self, rows: &[SealedRow<'_>]) -> Result<(), String> {
        if self.cold.is_none() {
            return Err("an index without a cold side cannot take sealed events".into());
        }
        let mut inner = self.inner.write();
        if !inner.tail.is_empty() {
            return Err("sealed events must be indexed before the tail".into());
        }
        for row in rows {
            let names = Names {
                tenant: row.tenant_id,
                entity: row.entity_id,
                event_type: row.event_type,
                shared: None,
            };
            inner.push_parts(
                row.id,
                &names,
                row.version,
                row.position,
                row.timestamp,
                0,
                false,
            )?;
        }
        Ok(())
    }

    /// Installs the ids of the sealed events, built alongside [`publish_sealed`] (recovery
    /// builds them on another thread). Must follow every `publish_sealed` and precede any
    /// [`publish`](Self::publish).
    ///
    /// # Errors
    /// Ids of a tenant that do not match its indexed events in number.
    ///
    /// [`publish_sealed`]: Self::publish_sealed
    pub fn install_sealed_ids(&self, ids: SealedIds) -> Result<(), String> {
        let mut inner = self.inner.write();
        if !inner.tail.is_empty() {
            return Err("sealed ids must be installed before the tail".into());
        }
        for (name, mut by_id) in ids.tenants {
            // The first tenant's map was sized for the whole store: give back what it did not
            // use when that is more than half.
            if by_id.capacity() > 2 * by_id.len() {
                by_id.shrink_to_fit();
            }
            let Some(tenant) = inner.tenants.get_mut(name.as_str()) else {
                return Err(format!(
                    "ids of tenant '{name}', which has no sealed events"
                ));
            };
            if by_id.len() != tenant.log.len() || !tenant.by_id.is_empty() {
                return Err(format!(
                    "tenant '{name}': {} ids for {} events",
                    by_id.len(),
                    tenant.log.len()
                ));
            }
            tenant.by_id = by_id;
        }
        if let Some((name, _)) = inner
            .tenants
            .iter()
            .find(|(_, t)| t.by_id.len() != t.log.len())
        {
            return Err(format!("tenant '{name}' has sealed events without ids"));
        }
        Ok(())
    }

    /// Adds the payload and metadata bytes of sealed events (read from the files' footers) to
    /// the `payload_bytes` figure.
    pub fn add_sealed_body_bytes(&self, bytes: u64) {
        self.inner.write().body_bytes += bytes;
    }

    /// Drops the events up to `position` from the tail: they are sealed, and the cold side
    /// can fetch them. No-op without a cold side.
    pub fn evict_through(&self, position: u64) {
        if self.cold.is_none() {
            return;
        }
        let mut inner = self.inner.write();
        while inner
            .tail
            .front()
            .is_some_and(|e| e.position.get() <= position)
        {
            inner.tail.pop_front();
        }
    }

    /// See [`EventStore::read_stream`](allsource_application::ports::EventStore::read_stream).
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
        io: Io,
    ) -> Result<Vec<Arc<Event>>, ReadError> {
        let positions = {
            let inner = self.inner.read();
            let Some(stream) = inner
                .tenants
                .get(tenant)
                .and_then(|t| t.streams.get(entity_id))
            else {
                return Ok(Vec::new());
            };
            let len = stream.positions.len() as u64;
            let start = range.from_version.max(1) - 1;
            let end = range.to_version.map_or(len, |to| to.min(len));
            if start >= end {
                return Ok(Vec::new());
            }
            let mut end = end as usize;
            let start = start as usize;
            if let Some(limit) = range.limit {
                end = end.min(start.saturating_add(limit));
            }
            stream.positions[start..end].to_vec()
        };
        self.fetch(&positions, io)
    }

    /// See [`EventStore::query`](allsource_application::ports::EventStore::query).
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn query(
        &self,
        tenant: &TenantId,
        query: &EventQuery,
        io: Io,
    ) -> Result<QueryPage, ReadError> {
        // Pick the narrowest candidate list the filters allow; all are in position order.
        let list = if let Some(entity_id) = &query.entity_id {
            Candidates::Stream(entity_id.clone())
        } else if let Some(event_type) = &query.event_type {
            Candidates::Type(event_type.clone())
        } else {
            Candidates::Log
        };
        // The part of the list beyond the cursor, as [start, end).
        let (mut start, mut end) = {
            let inner = self.inner.read();
            let Some(t) = inner.tenants.get(tenant) else {
                return Ok(QueryPage::default());
            };
            let len = t.list_len(&list);
            let (start, end) = match (query.from_position, query.order) {
                (None, _) => (0, len),
                (Some(p), SortOrder::Asc) => (t.list_after(&list, p.get()), len),
                (Some(p), SortOrder::Desc) => (0, t.list_after(&list, p.get().saturating_sub(1))),
            };
            // A time window narrows the range without reading events.
            let (below, above) = inner.window_bounds(query);
            let start = if below > 0 {
                start.max(t.list_after(&list, below))
            } else {
                start
            };
            let end = if above < u64::MAX {
                end.min(t.list_after(&list, above - 1))
            } else {
                end
            };
            (start, end.max(start))
        };
        let mut page = PageBuilder::new(query);
        let mut want = query.offset.saturating_add(query.limit).saturating_add(1);
        while start < end {
            let take = want.clamp(1, CHUNK).min(end - start);
            let positions: Vec<u64> = {
                let inner = self.inner.read();
                let Some(t) = inner.tenants.get(tenant) else {
                    break;
                };
                match query.order {
                    SortOrder::Asc => (start..start + take).map(|i| t.list_at(&list, i)).collect(),
                    SortOrder::Desc => (end - take..end)
                        .rev()
                        .map(|i| t.list_at(&list, i))
                        .collect(),
                }
            };
            match query.order {
                SortOrder::Asc => start += take,
                SortOrder::Desc => end -= take,
            }
            for event in self.fetch(&positions, io)? {
                if page.offer(event) {
                    return Ok(page.finish());
                }
            }
            want = CHUNK;
        }
        Ok(page.finish())
    }

    /// See [`EventStore::get_event`](allsource_application::ports::EventStore::get_event).
    ///
    /// # Errors
    /// See [`ReadError`].
    pub fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
        io: Io,
    ) -> Result<Option<Arc<Event>>, ReadError> {
        let position = {
            let inner = self.inner.read();
            let Some(t) = inner.tenants.get(tenant) else {
                return Ok(None);
            };
            let Some(&i) = t.by_id.get(&id) else {
                return Ok(None);
            };
            t.log[i as usize]
        };
        Ok(self.fetch(&[position], io)?.pop())
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
                let keep = query.event_type_prefix.as_deref().is_none_or(|prefix| {
                    stream
                        .types
                        .iter()
                        .any(|ty| ty.as_str().starts_with(prefix))
                });
                keep.then_some((id, stream))
            })
            .collect();
        // By the last event's time, ties by entity id (ascending in both orders).
        matching.sort_unstable_by(|(a_id, a), (b_id, b)| {
            let by_time = match query.order {
                EntityOrder::Asc => a.last_at.cmp(&b.last_at),
                EntityOrder::Desc => b.last_at.cmp(&a.last_at),
            };
            by_time.then_with(|| a_id.cmp(b_id))
        });
        let total = matching.len() as u64;
        let entities = matching
            .into_iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|(id, stream)| EntitySummary {
                entity_id: id.clone(),
                event_count: stream.positions.len() as u64,
                version: allsource_domain::Version::new(stream.positions.len() as u64),
                last_event_type: stream.last_type.clone(),
                last_event_at: stream.last_at,
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
            stats.last_position = t.log.last().copied().unwrap_or(0);
        }
        let storage = &mut stats.storage;
        storage.insert("events_in_memory".into(), inner.tail.len().into());
        storage.insert("store_last_position".into(), inner.last_position.into());
        storage.insert("index_bytes_per_event".into(), INDEX_BYTES_PER_EVENT.into());
        storage.insert(
            "index_bytes".into(),
            (inner.total_events * INDEX_BYTES_PER_EVENT).into(),
        );
        storage.insert("payload_bytes".into(), inner.body_bytes.into());
        stats
    }
}

/// Estimated bytes the index holds per event, whatever the event's size: the position in the
/// tenant's log (8) and in its stream (8), the type index entry (4), and the id map entry
/// (16-byte key, 4-byte value, control byte, at hashbrown's 7/8 load factor). Streams, names
/// and the unsealed tail come on top. `docs/BENCHMARKS.md` compares it with measured memory.
pub const INDEX_BYTES_PER_EVENT: u64 = 8 + 8 + 4 + (16 + 4 + 1) * 8 / 7;

impl Inner {
    /// Indexes a published event, sharing its names when they are new to the index.
    fn push(&mut self, event: &Event) -> Result<(), String> {
        let names = Names {
            tenant: event.tenant_id.as_str(),
            entity: event.entity_id.as_str(),
            event_type: event.event_type.as_str(),
            shared: Some((&event.tenant_id, &event.entity_id, &event.event_type)),
        };
        self.push_parts(
            event.id,
            &names,
            event.version.get(),
            event.position.get(),
            event.timestamp,
            event.body_bytes() as u64,
            true,
        )
    }

    /// Indexes one event (its id too, with `index_id`). Each map is searched once by the
    /// name's text; a name is copied (or parsed) only when it is new to its map.
    #[allow(clippy::too_many_arguments)]
    fn push_parts(
        &mut self,
        id: EventId,
        names: &Names<'_>,
        version: u64,
        position: u64,
        timestamp: DateTime<Utc>,
        body_bytes: u64,
        index_id: bool,
    ) -> Result<(), String> {
        if position <= self.last_position {
            return Err(format!(
                "event {id} at position {position} does not follow position {}",
                self.last_position
            ));
        }
        let tenant = match self.tenants.get_mut(names.tenant) {
            Some(t) => t,
            None => self.tenants.entry(names.tenant()?).or_default(),
        };
        let Ok(log_index) = u32::try_from(tenant.log.len()) else {
            return Err("a tenant may hold at most 2^32 events".into());
        };
        if index_id && tenant.by_id.contains_key(&id) {
            return Err(format!("event id {id} appears twice"));
        }
        let event_type = match tenant.types.get_key_value(names.event_type) {
            Some((ty, _)) => ty.clone(),
            None => names.event_type()?,
        };
        match tenant.streams.get_mut(names.entity) {
            Some(stream) => {
                let expected = stream.positions.len() as u64 + 1;
                if version != expected {
                    return Err(format!(
                        "event {id} of '{}' has version {version}, expected {expected}",
                        names.entity
                    ));
                }
                if !stream.types.contains(&event_type) {
                    stream.types.push(event_type.clone());
                }
                stream.positions.push(position);
                stream.last_type = event_type.clone();
                stream.last_at = timestamp;
            }
            None => {
                if version != 1 {
                    return Err(format!(
                        "event {id} of '{}' has version {version}, expected 1",
                        names.entity
                    ));
                }
                let entity = names.entity()?;
                tenant.entity_order.insert(entity.clone());
                tenant.streams.insert(
                    entity,
                    Stream {
                        positions: vec![position],
                        types: vec![event_type.clone()],
                        last_type: event_type.clone(),
                        last_at: timestamp,
                    },
                );
                self.total_entities += 1;
            }
        }
        match tenant.types.get_mut(names.event_type) {
            Some(list) => list.push(log_index),
            None => {
                tenant.types.insert(event_type, vec![log_index]);
            }
        }
        if index_id {
            tenant.by_id.insert(id, log_index);
        }
        tenant.log.push(position);
        self.last_position = position;
        self.last_timestamp = Some(self.last_timestamp.map_or(timestamp, |t| t.max(timestamp)));
        if self.total_events.is_multiple_of(TIME_MARK_EVERY) {
            self.time_marks.push((position, timestamp));
        }
        self.total_events += 1;
        self.body_bytes += body_bytes;
        Ok(())
    }
}

/// Applies filters, offset and limit to candidates already past the cursor, in order.
struct PageBuilder<'q> {
    query: &'q EventQuery,
    events: Vec<Arc<Event>>,
    skipped: usize,
    has_more: bool,
}

impl<'q> PageBuilder<'q> {
    fn new(query: &'q EventQuery) -> Self {
        Self {
            query,
            events: Vec::with_capacity(query.limit.min(1024)),
            skipped: 0,
            has_more: false,
        }
    }

    /// Takes the next candidate; `true` when the page is complete.
    fn offer(&mut self, event: Arc<Event>) -> bool {
        let query = self.query;
        // Timestamps never decrease along positions: ascending, nothing after `until`/`as_of`
        // can match any more.
        if query.order == SortOrder::Asc
            && (query.until.is_some_and(|u| event.timestamp >= u)
                || query.as_of.is_some_and(|a| event.timestamp > a))
        {
            return true;
        }
        if !query.matches(&event) {
            return false;
        }
        if self.skipped < query.offset {
            self.skipped += 1;
            return false;
        }
        if self.events.len() == query.limit {
            self.has_more = true;
            return true;
        }
        self.events.push(event);
        false
    }

    fn finish(self) -> QueryPage {
        QueryPage {
            events: self.events,
            has_more: self.has_more,
        }
    }
}

/// Plans a group of appends for a single writer: stages each request against the published
/// log plus what earlier requests of the group staged, assigning versions, positions and
/// timestamps. Nothing becomes visible until the writer publishes the staged events.
pub struct GroupPlanner<'a> {
    inner: RwLockReadGuard<'a, Inner>,
    cold: Option<&'a dyn ColdEvents>,
    next_position: u64,
    last_timestamp: Option<DateTime<Utc>>,
    pending_versions: Map<(TenantId, EntityId), u64>,
    pending_ids: Map<(TenantId, EventId), Arc<Event>>,
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
    /// Stored events the batch's ids name, fetched before planning (some from disk).
    stored: &'p HashMap<EventId, Arc<Event>>,
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
            .map_or(0, |s| s.positions.len() as u64)
    }

    fn stored_event(&self, id: &EventId) -> Option<Arc<Event>> {
        if let Some(e) = self.planner.pending_ids.get(&(self.tenant.clone(), *id)) {
            return Some(Arc::clone(e));
        }
        self.stored.get(id).cloned()
    }
}

impl GroupPlanner<'_> {
    /// Stages one append request. All its events share one timestamp: `now` truncated to
    /// microseconds, or the last timestamp if the clock went backwards.
    ///
    /// # Errors
    /// The batch's rejection, or a failure to read an already-stored event its ids name;
    /// nothing of it is staged.
    pub fn stage(
        &mut self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
        now: DateTime<Utc>,
    ) -> Result<StagedAppend, StoreAppendError> {
        let stored = self.stored_events(tenant, &events)?;
        let plan = plan_append(
            &TenantView {
                planner: self,
                tenant,
                stored: &stored,
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

    /// The published events that the batch's ids name (retries), read from disk when sealed.
    /// The planner's read lock is already held, so the tail is read through it; a disk read
    /// here is rare (a retry of an old event) and holds that read lock meanwhile.
    fn stored_events(
        &self,
        tenant: &TenantId,
        events: &[ProposedEvent],
    ) -> Result<HashMap<EventId, Arc<Event>>, StoreAppendError> {
        let mut stored = HashMap::new();
        let Some(t) = self.inner.tenants.get(tenant) else {
            return Ok(stored);
        };
        for proposed in events {
            let Some(&i) = t.by_id.get(&proposed.id) else {
                continue;
            };
            let position = t.log[i as usize];
            let event = match self.inner.tail_get(position) {
                Some(e) => Arc::clone(e),
                None => {
                    let cold = self
                        .cold
                        .ok_or_else(|| anyhow!("the index has no event at position {position}"))?;
                    cold.get_many(&[position], Io::Allowed)
                        .map_err(|e| StoreAppendError::Internal(e.into()))?
                        .pop()
                        .ok_or_else(|| anyhow!("no event at position {position}"))?
                }
            };
            stored.insert(proposed.id, event);
        }
        Ok(stored)
    }

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
        let id_of_a = index
            .read_stream(
                &a,
                &EntityId::parse("e").unwrap(),
                StreamRange::ALL,
                Io::Allowed,
            )
            .unwrap()[0]
            .id;
        assert!(index.get_event(&b, id_of_a, Io::Allowed).unwrap().is_none());
        assert!(index.get_event(&a, id_of_a, Io::Allowed).unwrap().is_some());
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
                .read_stream(&t, &e, r, Io::Allowed)
                .unwrap()
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
            let page = index.query(&t, &q, Io::Allowed).unwrap();
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
        assert!(
            index
                .query(&tenant("other"), &base, Io::Allowed)
                .unwrap()
                .events
                .is_empty()
        );
    }

    #[test]
    fn time_windows_match_a_scan_in_both_orders() {
        let index = EventIndex::new();
        let t = tenant("a");
        let other = tenant("b");
        // Several events per second, across many time marks, two tenants interleaved.
        for i in 0..2000u32 {
            let who = if i % 5 == 0 { &other } else { &t };
            let now = Utc
                .timestamp_opt(1_700_000_000 + i64::from(i / 3), 0)
                .unwrap();
            append(
                &index,
                who,
                vec![proposed(&format!("e{}", i % 4), "x")],
                now,
            );
        }
        let all = index
            .query(
                &t,
                &EventQuery {
                    limit: 100_000,
                    ..Default::default()
                },
                Io::Allowed,
            )
            .unwrap()
            .events;
        let second = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        for (since, until, as_of) in [
            (Some(100), None, None),
            (None, Some(400), None),
            (Some(250), Some(251), None),
            (None, None, Some(10)),
            (Some(600), None, Some(610)),
            (Some(700), Some(10_000), None),
            (Some(0), Some(0), None),
        ] {
            for order in [SortOrder::Asc, SortOrder::Desc] {
                for entity in [None, Some(EntityId::parse("e1").unwrap())] {
                    let query = EventQuery {
                        since: since.map(second),
                        until: until.map(second),
                        as_of: as_of.map(second),
                        entity_id: entity.clone(),
                        order,
                        limit: 100_000,
                        ..Default::default()
                    };
                    let got: Vec<u64> = index
                        .query(&t, &query, Io::Allowed)
                        .unwrap()
                        .events
                        .iter()
                        .map(|e| e.position.get())
                        .collect();
                    let mut expected: Vec<u64> = all
                        .iter()
                        .filter(|e| query.matches(e))
                        .map(|e| e.position.get())
                        .collect();
                    if order == SortOrder::Desc {
                        expected.reverse();
                    }
                    assert_eq!(
                        got, expected,
                        "{since:?} {until:?} {as_of:?} {order:?} {entity:?}"
                    );
                }
            }
        }
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

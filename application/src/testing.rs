//! Test support (feature `mocks`, and this crate's own tests): an in-memory [`StateStore`] that
//! keeps the port's contract and can be told to be slow or to fail, and [`Given`], a
//! given/when/then helper that builds a tenant's log of events and serves it as an
//! [`EventStore`]; [`SharedLog`], a log of several tenants that publishes its commits to a
//! [`CommitFeed`], for the followers of the log.
//!
//! ```ignore
//! let given = Given::tenant("acme").event("order-1", "order.placed", json!({"amount": 10}));
//! let state = Arc::new(MemoryStateStore::new());
//! // when: run the use case over `given.store()` and `state`
//! // then: assert on its answer, on `given.events()` and on `state.keys(..)`
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use allsource_domain::{
    AppendContext, EntityId, Event, EventId, EventType, ExpectedVersion, PlannedEvent, Position,
    ProposedEvent, TenantId, Version, plan_append,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::Value;

use crate::ports::{
    AppendReceipt, EntityListQuery, EntityPage, EventQuery, EventStore, EventTypeCount, QueryPage,
    SortOrder, StateEntry, StateError, StateStore, StoreAppendError, StoreError, StoreStats,
    StreamRange,
};
use crate::subscriptions::CommitFeed;

type Key = (String, String, String);

/// A failure the store is told to answer.
struct Failure {
    /// Only calls on this namespace (`None`: every namespace).
    namespace: Option<String>,
    /// Writes that still succeed before the failure starts (`puts` only).
    after_puts: Option<usize>,
    /// Whether reads (`get`, `list`) fail too.
    reads: bool,
}

/// An in-memory [`StateStore`] keeping the port's contract (versions, optimistic writes, key
/// order, tenant and namespace isolation). Values are kept as JSON text, as the durable
/// adapters keep them, so a value that does not survive serialization is noticed.
#[derive(Default)]
pub struct MemoryStateStore {
    entries: Mutex<BTreeMap<Key, (String, u64)>>,
    latency: Mutex<Option<Duration>>,
    failure: Mutex<Option<Failure>>,
    puts: AtomicUsize,
    lists: AtomicUsize,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call waits this long first (so that concurrent callers overlap).
    pub fn set_latency(&self, latency: Option<Duration>) {
        *self.latency.lock() = latency;
    }

    /// Writes to `namespace` fail with `Unavailable` after `successes` more succeed (a disk
    /// that goes away in the middle of a sequence of writes).
    pub fn fail_puts_after(&self, namespace: &str, successes: usize) {
        *self.failure.lock() = Some(Failure {
            namespace: Some(namespace.to_owned()),
            after_puts: Some(successes),
            reads: false,
        });
    }

    /// Every call fails with `Unavailable` (`true`), or none does (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        *self.failure.lock() = unavailable.then_some(Failure {
            namespace: None,
            after_puts: Some(0),
            reads: true,
        });
    }

    /// No call fails any more.
    pub fn heal(&self) {
        *self.failure.lock() = None;
    }

    /// Successful writes so far.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    /// Listings answered so far.
    pub fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }

    /// The keys of a tenant's namespace, in order.
    pub fn keys(&self, tenant: &TenantId, namespace: &str) -> Vec<String> {
        self.entries
            .lock()
            .keys()
            .filter(|(t, n, _)| t == tenant.as_str() && n == namespace)
            .map(|(_, _, k)| k.clone())
            .collect()
    }

    /// Every key of every tenant and namespace, in order.
    pub fn all_keys(&self) -> Vec<String> {
        self.entries
            .lock()
            .keys()
            .map(|(_, _, k)| k.clone())
            .collect()
    }

    /// Every `namespace/key` of every tenant except those of namespace `except`, in order.
    pub fn all_keys_outside(&self, except: &str) -> Vec<String> {
        self.entries
            .lock()
            .keys()
            .filter(|(_, n, _)| n != except)
            .map(|(_, n, k)| format!("{n}/{k}"))
            .collect()
    }

    async fn wait(&self) {
        let latency = *self.latency.lock();
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
    }

    fn check(&self, namespace: &str, write: bool) -> Result<(), StateError> {
        let mut failure = self.failure.lock();
        let Some(f) = failure.as_mut() else {
            return Ok(());
        };
        if f.namespace.as_deref().is_some_and(|n| n != namespace) {
            return Ok(());
        }
        let fails = if write {
            match f.after_puts.as_mut() {
                Some(0) => true,
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            }
        } else {
            f.reads
        };
        if fails {
            Err(StateError::Unavailable("the state store is down".into()))
        } else {
            Ok(())
        }
    }

    fn entry(text: &str, version: u64) -> Result<StateEntry, StateError> {
        Ok(StateEntry {
            value: serde_json::from_str(text).map_err(|e| StateError::Internal(e.into()))?,
            version,
        })
    }
}

fn key(tenant: &TenantId, namespace: &str, key: &str) -> Key {
    (tenant.to_string(), namespace.to_owned(), key.to_owned())
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(
        &self,
        tenant: &TenantId,
        namespace: &str,
        k: &str,
    ) -> Result<Option<StateEntry>, StateError> {
        self.wait().await;
        self.check(namespace, false)?;
        let found = self.entries.lock().get(&key(tenant, namespace, k)).cloned();
        found.map(|(text, v)| Self::entry(&text, v)).transpose()
    }

    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        k: &str,
        value: Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        self.wait().await;
        self.check(namespace, true)?;
        let mut entries = self.entries.lock();
        let k = key(tenant, namespace, k);
        let current = entries.get(&k).map_or(0, |(_, v)| *v);
        if let Some(expected) = expected
            && expected != current
        {
            return Err(StateError::VersionConflict { expected, current });
        }
        entries.insert(k, (value.to_string(), current + 1));
        self.puts.fetch_add(1, Ordering::SeqCst);
        Ok(current + 1)
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        namespace: &str,
        k: &str,
    ) -> Result<bool, StateError> {
        self.wait().await;
        self.check(namespace, true)?;
        Ok(self
            .entries
            .lock()
            .remove(&key(tenant, namespace, k))
            .is_some())
    }

    async fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        self.wait().await;
        self.check(namespace, false)?;
        self.lists.fetch_add(1, Ordering::SeqCst);
        let entries = self.entries.lock();
        entries
            .iter()
            .filter(|((t, n, k), _)| {
                t == tenant.as_str()
                    && n == namespace
                    && prefix.as_deref().is_none_or(|p| k.starts_with(p))
                    && after.as_deref().is_none_or(|a| k.as_str() > a)
            })
            .take(limit)
            .map(|((_, _, k), (text, v))| Ok((k.clone(), Self::entry(text, *v)?)))
            .collect()
    }
}

/// Given: a tenant's log of events, built in order. Versions count per entity from 1,
/// positions from 1, timestamps one millisecond apart. [`Given::store`] serves the log (and
/// what is appended to it later) as an [`EventStore`] of that one tenant.
#[derive(Clone)]
pub struct Given {
    tenant: TenantId,
    log: Arc<Mutex<Vec<Arc<Event>>>>,
}

impl Given {
    /// An empty log of `tenant`.
    ///
    /// # Panics
    /// On an invalid tenant id (a test's mistake).
    pub fn tenant(tenant: &str) -> Self {
        Self {
            tenant: TenantId::parse(tenant).expect("a valid tenant id in a test"),
            log: Arc::default(),
        }
    }

    /// The log with one more event.
    #[must_use]
    pub fn event(self, entity: &str, event_type: &str, payload: Value) -> Self {
        self.push(entity, event_type, payload);
        self
    }

    /// Appends an event to the log (also after the store was handed out).
    ///
    /// # Panics
    /// On an invalid entity id or event type (a test's mistake).
    pub fn push(&self, entity: &str, event_type: &str, payload: Value) -> Arc<Event> {
        let proposed = ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse(entity).expect("a valid entity id in a test"),
            event_type: EventType::parse(event_type).expect("a valid event type in a test"),
            payload: serde_json::value::to_raw_value(&payload).expect("JSON"),
            metadata: None,
            expected_version: ExpectedVersion::Any,
        };
        let mut log = self.log.lock();
        let version = log
            .iter()
            .filter(|e| e.entity_id == proposed.entity_id)
            .count() as u64
            + 1;
        let position = log.len() as u64 + 1;
        let event = Arc::new(proposed.into_event(
            self.tenant.clone(),
            Version::new(version),
            Position::new(position),
            timestamp(position),
        ));
        log.push(event.clone());
        event
    }

    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant
    }

    /// The log so far, in position order.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.log.lock().clone()
    }

    /// The log as an event store.
    pub fn store(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }

    /// Another tenant's calls fail the test: a use case must only read its caller's tenant.
    fn own(&self, tenant: &TenantId) {
        assert_eq!(
            tenant, &self.tenant,
            "a use case read another tenant than its caller's"
        );
    }
}

/// Timestamps of the log: one millisecond per position.
/// Whether a proposed event repeats a stored one (the store's idempotency rule).
fn same(stored: &Event, proposed: &ProposedEvent) -> bool {
    allsource_domain::same_content(stored, proposed)
}

fn timestamp(position: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_700_000_000_000_000 + position as i64 * 1000)
        .unwrap_or_default()
}

struct LogView<'a>(&'a [Arc<Event>]);

impl AppendContext for LogView<'_> {
    fn stream_version(&self, entity_id: &EntityId) -> u64 {
        self.0.iter().filter(|e| e.entity_id == *entity_id).count() as u64
    }
    fn stored_event(&self, id: &EventId) -> Option<Arc<Event>> {
        self.0.iter().find(|e| e.id == *id).cloned()
    }
}

#[async_trait]
impl EventStore for Given {
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError> {
        self.own(tenant);
        let mut log = self.log.lock();
        let plan = plan_append(&LogView(&log), &events)?;
        let mut receipts = Vec::with_capacity(events.len());
        for (event, planned) in events.into_iter().zip(plan) {
            match planned {
                PlannedEvent::Duplicate(stored) => {
                    receipts.push(AppendReceipt::for_event(&stored, true));
                }
                PlannedEvent::New { version } => {
                    let position = log.len() as u64 + 1;
                    let stored = Arc::new(event.into_event(
                        tenant.clone(),
                        version,
                        Position::new(position),
                        timestamp(position),
                    ));
                    receipts.push(AppendReceipt::for_event(&stored, false));
                    log.push(stored);
                }
            }
        }
        Ok(receipts)
    }

    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        self.own(tenant);
        Ok(self
            .log
            .lock()
            .iter()
            .filter(|e| e.entity_id == *entity_id && range.contains(e.version.get()))
            .take(range.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn query(&self, tenant: &TenantId, q: EventQuery) -> Result<QueryPage, StoreError> {
        self.own(tenant);
        let mut matching: Vec<Arc<Event>> = self
            .log
            .lock()
            .iter()
            .filter(|e| q.matches(e) && q.after_cursor(e.position))
            .cloned()
            .collect();
        if q.order == SortOrder::Desc {
            matching.reverse();
        }
        let has_more = matching.len() > q.offset + q.limit;
        Ok(QueryPage {
            events: matching.into_iter().skip(q.offset).take(q.limit).collect(),
            has_more,
        })
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        self.own(tenant);
        Ok(self.log.lock().iter().find(|e| e.id == id).cloned())
    }

    async fn list_entities(
        &self,
        tenant: &TenantId,
        _query: EntityListQuery,
    ) -> Result<EntityPage, StoreError> {
        self.own(tenant);
        Err(StoreError::Internal(anyhow::anyhow!(
            "the given log does not list entities"
        )))
    }

    async fn event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError> {
        self.own(tenant);
        let mut counts: BTreeMap<String, (EventType, u64)> = BTreeMap::new();
        for e in self.log.lock().iter() {
            counts
                .entry(e.event_type.as_str().to_owned())
                .or_insert_with(|| (e.event_type.clone(), 0))
                .1 += 1;
        }
        Ok(counts
            .into_values()
            .map(|(event_type, count)| EventTypeCount { event_type, count })
            .collect())
    }

    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError> {
        self.own(tenant);
        let log = self.log.lock();
        Ok(StoreStats {
            total_events: log.len() as u64,
            last_position: log.last().map_or(0, |e| e.position.get()),
            ..StoreStats::default()
        })
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "given"
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A log of several tenants whose appends are published to a [`CommitFeed`], as a store
/// adapter publishes them: the followers' tests run over it. Each [`SharedLog::append`] is one
/// commit group; publishing happens under the log's lock, so groups reach the feed in
/// position order, as from a store's single writer.
pub struct SharedLog {
    log: Mutex<Vec<Arc<Event>>>,
    feed: Arc<CommitFeed>,
    /// Queries answer `Unavailable` while set.
    pub fail_queries: std::sync::atomic::AtomicBool,
    /// Queries served so far.
    pub queries: AtomicUsize,
    /// Every query waits this long first (a store whose reads take time).
    pub query_latency: Mutex<Option<std::time::Duration>>,
}

impl SharedLog {
    /// An empty log whose feed keeps `capacity` groups for its slowest subscriber.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            log: Mutex::new(Vec::new()),
            feed: Arc::new(CommitFeed::new(capacity)),
            fail_queries: std::sync::atomic::AtomicBool::new(false),
            queries: AtomicUsize::new(0),
            query_latency: Mutex::new(None),
        })
    }

    pub fn feed(&self) -> Arc<CommitFeed> {
        Arc::clone(&self.feed)
    }

    /// Appends `(entity, event_type)` events of `tenant` as one commit group and publishes it.
    ///
    /// # Panics
    /// On an invalid tenant, entity or type (a test's mistake).
    pub fn append(&self, tenant: &str, events: &[(&str, &str)]) -> Vec<Arc<Event>> {
        let mut log = self.log.lock();
        let added = Self::push_all(&mut log, tenant, events);
        self.feed.publish_events(added.clone());
        added
    }

    /// Appends `(entity, event_type, payload)` events of `tenant` as one commit group and
    /// publishes it.
    ///
    /// # Panics
    /// On an invalid tenant, entity or type (a test's mistake).
    pub fn append_payloads(
        &self,
        tenant: &str,
        events: &[(&str, &str, serde_json::Value)],
    ) -> Vec<Arc<Event>> {
        let tenant = TenantId::parse(tenant).expect("a valid tenant id in a test");
        let mut log = self.log.lock();
        let added: Vec<Arc<Event>> = events
            .iter()
            .map(|(entity, event_type, payload)| {
                let proposed = ProposedEvent {
                    id: EventId::generate(),
                    entity_id: EntityId::parse(entity).expect("a valid entity id in a test"),
                    event_type: EventType::parse(event_type).expect("a valid event type in a test"),
                    payload: serde_json::value::to_raw_value(payload).expect("JSON"),
                    metadata: None,
                    expected_version: ExpectedVersion::Any,
                };
                Self::push(&mut log, &tenant, proposed)
            })
            .collect();
        self.feed.publish_events(added.clone());
        added
    }

    /// Appends like [`Self::append`] but publishes nothing: a lost notification (a NOTIFY that
    /// never arrived), which the next published group reveals as a gap.
    pub fn append_unpublished(&self, tenant: &str, events: &[(&str, &str)]) -> Vec<Arc<Event>> {
        let mut log = self.log.lock();
        Self::push_all(&mut log, tenant, events)
    }

    fn push_all(
        log: &mut Vec<Arc<Event>>,
        tenant: &str,
        events: &[(&str, &str)],
    ) -> Vec<Arc<Event>> {
        let tenant = TenantId::parse(tenant).expect("a valid tenant id in a test");
        events
            .iter()
            .map(|(entity, event_type)| {
                let proposed = ProposedEvent {
                    id: EventId::generate(),
                    entity_id: EntityId::parse(entity).expect("a valid entity id in a test"),
                    event_type: EventType::parse(event_type).expect("a valid event type in a test"),
                    payload: serde_json::value::to_raw_value(
                        &serde_json::json!({"n": log.len() + 1}),
                    )
                    .expect("JSON"),
                    metadata: None,
                    expected_version: ExpectedVersion::Any,
                };
                Self::push(log, &tenant, proposed)
            })
            .collect()
    }

    /// Stores one event at the next position, with the next version of its stream.
    fn push(log: &mut Vec<Arc<Event>>, tenant: &TenantId, proposed: ProposedEvent) -> Arc<Event> {
        let version = log
            .iter()
            .filter(|e| e.tenant_id == *tenant && e.entity_id == proposed.entity_id)
            .count() as u64
            + 1;
        let position = log.len() as u64 + 1;
        let event = Arc::new(proposed.into_event(
            tenant.clone(),
            Version::new(version),
            Position::new(position),
            timestamp(position),
        ));
        log.push(Arc::clone(&event));
        event
    }

    /// Everything appended, all tenants, in position order.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.log.lock().clone()
    }
}

#[async_trait]
impl EventStore for SharedLog {
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError> {
        let mut log = self.log.lock();
        let mut receipts = Vec::with_capacity(events.len());
        let mut added: Vec<Arc<Event>> = Vec::new();
        for event in events {
            // A retry of a stored event (same id, same content) is acknowledged again, as
            // every store does; the same id with other content is refused.
            if let Some(stored) = log
                .iter()
                .find(|e| e.tenant_id == *tenant && e.id == event.id)
            {
                if !crate::testing::same(stored, &event) {
                    return Err(StoreAppendError::Rejected(
                        allsource_domain::AppendRejection::DuplicateEventId {
                            index: receipts.len(),
                            event_id: event.id,
                        },
                    ));
                }
                receipts.push(AppendReceipt::for_event(stored, true));
                continue;
            }
            let stored = Self::push(&mut log, tenant, event);
            receipts.push(AppendReceipt::for_event(&stored, false));
            added.push(stored);
        }
        if !added.is_empty() {
            self.feed.publish_events(added);
        }
        Ok(receipts)
    }

    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        Ok(self
            .log
            .lock()
            .iter()
            .filter(|e| {
                e.tenant_id == *tenant
                    && e.entity_id == *entity_id
                    && range.contains(e.version.get())
            })
            .take(range.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn query(&self, tenant: &TenantId, q: EventQuery) -> Result<QueryPage, StoreError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let latency = *self.query_latency.lock();
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        if self.fail_queries.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("told to fail".into()));
        }
        let mut matching: Vec<Arc<Event>> = self
            .log
            .lock()
            .iter()
            .filter(|e| e.tenant_id == *tenant && q.matches(e) && q.after_cursor(e.position))
            .cloned()
            .collect();
        if q.order == SortOrder::Desc {
            matching.reverse();
        }
        let has_more = matching.len() > q.offset + q.limit;
        Ok(QueryPage {
            events: matching.into_iter().skip(q.offset).take(q.limit).collect(),
            has_more,
        })
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        Ok(self
            .log
            .lock()
            .iter()
            .find(|e| e.tenant_id == *tenant && e.id == id)
            .cloned())
    }

    async fn list_entities(
        &self,
        _tenant: &TenantId,
        _query: EntityListQuery,
    ) -> Result<EntityPage, StoreError> {
        Err(StoreError::Internal(anyhow::anyhow!(
            "the shared log does not list entities"
        )))
    }

    async fn event_types(&self, _tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError> {
        Ok(Vec::new())
    }

    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError> {
        let log = self.log.lock();
        let own: Vec<_> = log.iter().filter(|e| e.tenant_id == *tenant).collect();
        Ok(StoreStats {
            total_events: own.len() as u64,
            last_position: own.last().map_or(0, |e| e.position.get()),
            ..StoreStats::default()
        })
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "shared"
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

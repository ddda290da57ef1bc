//! `MemoryStore`: an [`EventStore`] that keeps everything in memory and forgets it at exit.
//! For tests and `--dev` experiments. Appends are serialized by one mutex (the "single
//! writer"), planned with the shared [`GroupPlanner`](crate::index::GroupPlanner) and published
//! at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use allsource_application::ports::{
    AppendReceipt, Clock, EntityListQuery, EntityPage, EventQuery, EventStore, EventTypeCount,
    QueryPage, StoreAppendError, StoreError, StoreStats, StreamRange,
};
use allsource_domain::{EntityId, Event, EventId, ProposedEvent, TenantId};
use async_trait::async_trait;
use parking_lot::Mutex;

use allsource_application::subscriptions::CommitFeed;

use crate::index::{EventIndex, Io};

/// The in-memory event store.
pub struct MemoryStore {
    index: EventIndex,
    writer: Mutex<()>,
    clock: Arc<dyn Clock>,
    closed: AtomicBool,
    feed: Option<Arc<CommitFeed>>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            index: EventIndex::new(),
            writer: Mutex::new(()),
            clock,
            closed: AtomicBool::new(false),
            feed: None,
        }
    }

    /// Publishes every append to `feed` once it is visible (under the writer lock, so in
    /// position order).
    #[must_use]
    pub fn with_feed(mut self, feed: Arc<CommitFeed>) -> Self {
        feed.start_at(self.index.last_position());
        self.feed = Some(feed);
        self
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreAppendError::Unavailable(
                "the store is shutting down".into(),
            ));
        }
        let _writer = self.writer.lock();
        let staged = self
            .index
            .planner()
            .stage(tenant, events, self.clock.now())?;
        let published = self.feed.is_some().then(|| staged.new_events.clone());
        self.index
            .publish(staged.new_events)
            .map_err(|e| StoreAppendError::Internal(anyhow::anyhow!(e)))?;
        if let (Some(feed), Some(events)) = (&self.feed, published) {
            feed.publish_events(events);
        }
        Ok(staged.receipts)
    }

    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        // Everything is in memory: reads never need I/O.
        Ok(self
            .index
            .read_stream(tenant, entity_id, range, Io::Forbidden)?)
    }

    async fn query(&self, tenant: &TenantId, query: EventQuery) -> Result<QueryPage, StoreError> {
        Ok(self.index.query(tenant, &query, Io::Forbidden)?)
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        Ok(self.index.get_event(tenant, id, Io::Forbidden)?)
    }

    async fn list_entities(
        &self,
        tenant: &TenantId,
        query: EntityListQuery,
    ) -> Result<EntityPage, StoreError> {
        Ok(self.index.list_entities(tenant, &query))
    }

    async fn event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError> {
        Ok(self.index.event_types(tenant))
    }

    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError> {
        let mut stats = self.index.stats(tenant);
        stats.storage.insert("backend".into(), "memory".into());
        Ok(stats)
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        // Wait for an append in progress to finish.
        drop(self.writer.lock());
        Ok(())
    }
}

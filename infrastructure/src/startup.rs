//! `StartingStore`: stands in for the real store while it recovers, so the server can listen
//! (and answer `/health/ready` with 503) before recovery has finished.

use std::sync::{Arc, OnceLock};

use allsource_application::ports::{
    AppendReceipt, EntityListQuery, EntityPage, EventQuery, EventStore, EventTypeCount, QueryPage,
    StoreAppendError, StoreError, StoreStats, StreamRange,
};
use allsource_domain::{EntityId, Event, EventId, ProposedEvent, TenantId};
use async_trait::async_trait;

const RECOVERING: &str = "the store is still recovering; retry shortly";

/// Forwards to the recovered store once [`set`](Self::set), answers `Unavailable` before.
pub struct StartingStore {
    backend: &'static str,
    ready: OnceLock<Arc<dyn EventStore>>,
}

impl StartingStore {
    pub fn new(backend: &'static str) -> Self {
        Self {
            backend,
            ready: OnceLock::new(),
        }
    }

    /// Hands over to the recovered store. A second call is ignored.
    pub fn set(&self, store: Arc<dyn EventStore>) {
        let _ = self.ready.set(store);
    }

    fn store(&self) -> Result<&Arc<dyn EventStore>, StoreError> {
        self.ready
            .get()
            .ok_or_else(|| StoreError::Unavailable(RECOVERING.into()))
    }
}

#[async_trait]
impl EventStore for StartingStore {
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError> {
        match self.ready.get() {
            Some(store) => store.append(tenant, events).await,
            None => Err(StoreAppendError::Unavailable(RECOVERING.into())),
        }
    }

    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        self.store()?.read_stream(tenant, entity_id, range).await
    }

    async fn query(&self, tenant: &TenantId, query: EventQuery) -> Result<QueryPage, StoreError> {
        self.store()?.query(tenant, query).await
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        self.store()?.get_event(tenant, id).await
    }

    async fn list_entities(
        &self,
        tenant: &TenantId,
        query: EntityListQuery,
    ) -> Result<EntityPage, StoreError> {
        self.store()?.list_entities(tenant, query).await
    }

    async fn event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError> {
        self.store()?.event_types(tenant).await
    }

    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError> {
        self.store()?.stats(tenant).await
    }

    fn is_ready(&self) -> bool {
        self.ready.get().is_some_and(|s| s.is_ready())
    }

    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        match self.ready.get() {
            Some(store) => store.shutdown().await,
            None => Ok(()),
        }
    }
}

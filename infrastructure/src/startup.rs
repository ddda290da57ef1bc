//! `StartingStore`: stands in for the real store while it recovers, so the server can listen
//! (and answer `/health/ready` with 503) before recovery has finished; `StartingCompactor`, the
//! same for the store's compactor; `StartingStateStore`, the same for the state store.

use std::sync::{Arc, OnceLock};

use allsource_application::ports::{
    AppendReceipt, CompactionError, CompactionReport, CompactionStats, Compactor, EntityListQuery,
    EntityPage, EventQuery, EventStore, EventTypeCount, QueryPage, StoreAppendError, StoreError,
    StoreStats, StreamRange,
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

/// The [`StateStore`](allsource_application::ports::StateStore) counterpart of
/// [`StartingStore`]: answers `Unavailable` until the real state store is [`set`](Self::set).
#[derive(Default)]
pub struct StartingStateStore {
    ready: OnceLock<Arc<dyn allsource_application::ports::StateStore>>,
}

impl StartingStateStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over to the opened state store. A second call is ignored.
    pub fn set(&self, store: Arc<dyn allsource_application::ports::StateStore>) {
        let _ = self.ready.set(store);
    }

    /// Whether the real state store has been set.
    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some()
    }

    fn store(
        &self,
    ) -> Result<
        &Arc<dyn allsource_application::ports::StateStore>,
        allsource_application::ports::StateError,
    > {
        self.ready
            .get()
            .ok_or_else(|| allsource_application::ports::StateError::Unavailable(RECOVERING.into()))
    }
}

#[async_trait]
impl allsource_application::ports::StateStore for StartingStateStore {
    async fn get(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<
        Option<allsource_application::ports::StateEntry>,
        allsource_application::ports::StateError,
    > {
        self.store()?.get(tenant, namespace, key).await
    }

    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
        value: serde_json::Value,
        expected: Option<u64>,
    ) -> Result<u64, allsource_application::ports::StateError> {
        self.store()?
            .put(tenant, namespace, key, value, expected)
            .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<bool, allsource_application::ports::StateError> {
        self.store()?.delete(tenant, namespace, key).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<
        Vec<(String, allsource_application::ports::StateEntry)>,
        allsource_application::ports::StateError,
    > {
        self.store()?
            .list(tenant, namespace, prefix, after, limit)
            .await
    }
}

/// Forwards to the recovered store's compactor once [`set`](Self::set), answers `Unavailable`
/// before (the compactor of the embedded store exists only after recovery).
#[derive(Default)]
pub struct StartingCompactor {
    ready: OnceLock<Arc<dyn Compactor>>,
}

impl StartingCompactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over to the recovered store's compactor. A second call is ignored.
    pub fn set(&self, compactor: Arc<dyn Compactor>) {
        let _ = self.ready.set(compactor);
    }

    fn compactor(&self) -> Result<&Arc<dyn Compactor>, CompactionError> {
        self.ready
            .get()
            .ok_or_else(|| CompactionError::Unavailable(RECOVERING.into()))
    }
}

#[async_trait]
impl Compactor for StartingCompactor {
    async fn trigger(&self) -> Result<CompactionReport, CompactionError> {
        self.compactor()?.trigger().await
    }

    async fn stats(&self) -> Result<CompactionStats, CompactionError> {
        self.compactor()?.stats().await
    }
}

/// The sealed Parquet files of a store still recovering: none until recovery hands over the
/// embedded store's (the SQL engine then reads everything through the store port, which answers
/// the same, more slowly). Other backends never hand any over.
#[derive(Default)]
pub struct StartingSealedFiles {
    ready: OnceLock<Arc<dyn crate::sql::SealedFiles>>,
}

impl StartingSealedFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over to the recovered store's files. A second call is ignored.
    pub fn set(&self, files: Arc<dyn crate::sql::SealedFiles>) {
        let _ = self.ready.set(files);
    }
}

#[async_trait]
impl crate::sql::SealedFiles for StartingSealedFiles {
    async fn sealed(&self) -> crate::sql::SealedCut {
        match self.ready.get() {
            Some(files) => files.sealed().await,
            None => crate::sql::SealedCut {
                files: Vec::new(),
                last_position: 0,
                guard: Box::new(()),
            },
        }
    }
}

//! The projection engine: where projections live in the [`StateStore`], and how events are
//! folded into them without ever counting one twice.
//!
//! # Layout in the state store (per tenant)
//! - namespace `projections`, key `<name>`: the head record
//!   `{"definition": <spec>, "generation": "<id>", "created_at": "..."}`. The generation names
//!   the state the projection currently serves; a rebuild writes a new generation aside and
//!   swaps it in by rewriting this record (with its expected version).
//! - namespace `projection-state:<name>:<generation>`, key = the projection key:
//!   `{"position": p, "state": {...}}` ([`KeyedState`]), `p` = the last event folded into it.
//! - namespace `projection-checkpoints`, key `<name>:<generation>`: `{"position": c}`, the last
//!   log position whose events are all in the generation's state.
//! - tenant `_system`, namespace `projection-tenants`, key = a tenant with projections (so the
//!   runner knows whom to serve after a restart).
//!
//! # The invariant that prevents double counting
//! Key values are written first, each tagged with the position of the last event it includes;
//! the checkpoint is written after them. After a crash between the two, the runner re-reads
//! the events after the old checkpoint, and every key skips the events at or below its own tag.
//! So each event is folded into each key exactly once, whatever the crash point. Every write
//! uses the expected version it read, so two runners (two nodes on PostgreSQL) never overwrite
//! each other's work: the loser of a race stops and retries from the stored state.

use std::collections::HashMap;
use std::sync::Arc;

use allsource_domain::projection::{KeyedState, ProjectionDefinition, ProjectionSpec};
use allsource_domain::{Event, TenantId};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::ports::{EventQuery, EventStore, SortOrder, StateStore, StorageFailure};

/// Namespace of the head records.
pub const DEFINITIONS: &str = "projections";
/// Namespace of the checkpoints.
pub const CHECKPOINTS: &str = "projection-checkpoints";
/// Namespace (of [`system_tenant`]) listing the tenants that have projections.
pub const TENANTS: &str = "projection-tenants";
/// Page size when listing or counting state keys.
const LIST_PAGE: usize = 1000;
/// Lag is counted up to this many events.
pub const LAG_COUNT_CAP: usize = 1000;

/// The tenant under which cross-tenant bookkeeping is kept.
pub fn system_tenant() -> TenantId {
    TenantId::system()
}

/// Namespace of one generation's state.
pub fn state_namespace(name: &str, generation: &str) -> String {
    format!("projection-state:{name}:{generation}")
}

fn checkpoint_key(name: &str, generation: &str) -> String {
    format!("{name}:{generation}")
}

/// A fresh generation id (time-ordered, unique).
pub fn new_generation() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Why the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Someone else wrote first (another node, a rebuild's swap); retry from stored state.
    #[error("concurrent update of projection state")]
    Conflict,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl StorageFailure for EngineError {
    fn unavailable(why: String) -> Self {
        Self::Unavailable(why)
    }
    fn internal(error: anyhow::Error) -> Self {
        Self::Internal(error)
    }
    /// Every projection write is optimistic: the runner tries again; a use case answers 409.
    fn version_conflict(_: u64, _: u64) -> Self {
        Self::Conflict
    }
}

crate::storage_errors!(EngineError);

/// A registered projection as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionHead {
    pub definition: ProjectionDefinition,
    pub generation: String,
    pub created_at: DateTime<Utc>,
    /// Version of the head record (for the swap's expectation).
    pub version: u64,
}

impl ProjectionHead {
    pub fn to_json(&self) -> Value {
        json!({
            "definition": self.definition.to_spec(),
            "generation": self.generation,
            "created_at": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        })
    }

    fn from_entry(value: &Value, version: u64) -> Result<Self, EngineError> {
        let bad =
            |what: &str| EngineError::Internal(anyhow::anyhow!("bad projection record: {what}"));
        let spec: ProjectionSpec = serde_json::from_value(
            value
                .get("definition")
                .cloned()
                .ok_or_else(|| bad("no definition"))?,
        )
        .map_err(|_| bad("definition"))?;
        // A stored built-in is stored in full; parse its name alone.
        let definition = match spec
            .name
            .as_deref()
            .and_then(allsource_domain::projection::builtin)
        {
            Some(builtin) => builtin,
            None => spec
                .parse()
                .map_err(|_| bad("definition does not validate"))?,
        };
        let generation = value
            .get("generation")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("generation"))?
            .to_owned();
        let created_at = value
            .get("created_at")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| bad("created_at"))?;
        Ok(Self {
            definition,
            generation,
            created_at,
            version,
        })
    }
}

/// A checkpoint with the version of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub position: u64,
    /// 0 when none is stored yet.
    pub version: u64,
}

/// A projection of a tenant (for in-process locks and error reports).
type ProjectionId = (TenantId, String);

/// Reads and writes projections in the stores; shared by the use cases, the runner and replay.
pub struct ProjectionEngine {
    pub(crate) events: Arc<dyn EventStore>,
    pub(crate) state: Arc<dyn StateStore>,
    batch_size: usize,
    locks: parking_lot::Mutex<HashMap<ProjectionId, Arc<tokio::sync::Mutex<()>>>>,
    errors: parking_lot::Mutex<HashMap<ProjectionId, String>>,
    pub(crate) wake: tokio::sync::Notify,
    /// Set when the server shuts down: catching up stops after the page in progress.
    stopping: std::sync::atomic::AtomicBool,
}

impl ProjectionEngine {
    /// `batch_size`: events read per page while catching up (1 to 10 000).
    pub fn new(events: Arc<dyn EventStore>, state: Arc<dyn StateStore>, batch_size: usize) -> Self {
        Self {
            events,
            state,
            batch_size: batch_size.clamp(1, 10_000),
            locks: parking_lot::Mutex::new(HashMap::new()),
            errors: parking_lot::Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Makes catching up stop after the page in progress (shutdown). Everything written so far
    /// is consistent: the next start resumes from the checkpoint.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Asks the runner to catch up now (after an append).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The in-process lock of one projection: catch-up batches, swaps and deletes hold it, so
    /// a swap never lands in the middle of a batch of this node.
    pub(crate) fn lock(&self, tenant: &TenantId, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry((tenant.clone(), name.to_owned()))
            .or_default()
            .clone()
    }

    /// Forgets the in-process entries of a projection: its lock once nobody holds or waits for
    /// it (a lock still in use stays, so that its holders keep excluding each other), and, when
    /// `deleted`, its last error. Called after a delete, so the maps hold only projections that
    /// exist or are in use.
    pub(crate) fn forget(&self, tenant: &TenantId, name: &str, deleted: bool) {
        let key = (tenant.clone(), name.to_owned());
        {
            let mut locks = self.locks.lock();
            if locks.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
                locks.remove(&key);
            }
        }
        if deleted {
            self.errors.lock().remove(&key);
        }
    }

    /// Number of in-process locks and error reports held (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        (self.locks.lock().len(), self.errors.lock().len())
    }

    pub(crate) fn last_error(&self, tenant: &TenantId, name: &str) -> Option<String> {
        self.errors
            .lock()
            .get(&(tenant.clone(), name.to_owned()))
            .cloned()
    }

    fn set_error(&self, tenant: &TenantId, name: &str, error: Option<String>) {
        let key = (tenant.clone(), name.to_owned());
        let mut errors = self.errors.lock();
        match error {
            Some(e) => {
                errors.insert(key, e);
            }
            None => {
                errors.remove(&key);
            }
        }
    }

    /// The head record of a projection.
    ///
    /// # Errors
    /// Storage failures; a record that does not parse is `Internal`.
    pub async fn head(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<ProjectionHead>, EngineError> {
        match self.state.get(tenant, DEFINITIONS, name).await? {
            None => Ok(None),
            Some(entry) => ProjectionHead::from_entry(&entry.value, entry.version).map(Some),
        }
    }

    /// Every head record of the tenant, by name.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn heads(&self, tenant: &TenantId) -> Result<Vec<ProjectionHead>, EngineError> {
        let mut heads = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state
                .list(tenant, DEFINITIONS, None, after.clone(), LIST_PAGE)
                .await?;
            let done = page.len() < LIST_PAGE;
            for (key, entry) in page {
                match ProjectionHead::from_entry(&entry.value, entry.version) {
                    Ok(head) => heads.push(head),
                    Err(e) => {
                        tracing::error!(tenant = %tenant, projection = %key, error = %e, "skipping an unreadable projection record")
                    }
                }
                after = Some(key);
            }
            if done {
                return Ok(heads);
            }
        }
    }

    /// Tenants that have (or had) projections.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tenants(&self) -> Result<Vec<TenantId>, EngineError> {
        let mut tenants = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state
                .list(&system_tenant(), TENANTS, None, after.clone(), LIST_PAGE)
                .await?;
            let done = page.len() < LIST_PAGE;
            for (key, _) in page {
                if let Ok(t) = TenantId::parse(&key) {
                    tenants.push(t);
                }
                after = Some(key);
            }
            if done {
                return Ok(tenants);
            }
        }
    }

    pub(crate) async fn remember_tenant(&self, tenant: &TenantId) -> Result<(), EngineError> {
        self.state
            .put(&system_tenant(), TENANTS, tenant.as_str(), json!({}), None)
            .await?;
        Ok(())
    }

    /// The checkpoint of a generation (position 0 when none is stored).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn checkpoint(
        &self,
        tenant: &TenantId,
        name: &str,
        generation: &str,
    ) -> Result<Checkpoint, EngineError> {
        Ok(
            match self
                .state
                .get(tenant, CHECKPOINTS, &checkpoint_key(name, generation))
                .await?
            {
                None => Checkpoint::default(),
                Some(entry) => Checkpoint {
                    position: entry
                        .value
                        .get("position")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    version: entry.version,
                },
            },
        )
    }

    pub(crate) async fn write_checkpoint(
        &self,
        tenant: &TenantId,
        name: &str,
        generation: &str,
        position: u64,
        expected: u64,
    ) -> Result<u64, EngineError> {
        Ok(self
            .state
            .put(
                tenant,
                CHECKPOINTS,
                &checkpoint_key(name, generation),
                json!({ "position": position }),
                Some(expected),
            )
            .await?)
    }

    /// Folds events (in position order) into a generation's keys, each key read, folded and
    /// written once, tagged with its last position. Returns how many (event, key) pairs were
    /// folded (events already in a key are skipped).
    ///
    /// # Errors
    /// `Conflict` when a key was written concurrently; storage failures.
    pub async fn apply(
        &self,
        tenant: &TenantId,
        definition: &ProjectionDefinition,
        namespace: &str,
        events: &[Arc<Event>],
    ) -> Result<u64, EngineError> {
        // Group by key, keeping the log order inside each key.
        let mut order: Vec<String> = Vec::new();
        let mut by_key: HashMap<String, Vec<(&Event, Value)>> = HashMap::new();
        for event in events {
            // The filter needs no payload: events of other types or entities are not parsed.
            if !definition.filter.matches(event) {
                continue;
            }
            let Ok(payload) = serde_json::from_str::<Value>(event.payload.get()) else {
                continue;
            };
            if let Some(key) = definition.route(event, &payload) {
                by_key
                    .entry(key.clone())
                    .or_insert_with(|| {
                        order.push(key);
                        Vec::new()
                    })
                    .push((event, payload));
            }
        }
        let mut folded = 0;
        for key in order {
            let Some(items) = by_key.remove(&key) else {
                continue;
            };
            let (mut keyed, expected) = match self.state.get(tenant, namespace, &key).await? {
                None => (KeyedState::new(definition), 0),
                Some(entry) => (
                    KeyedState::from_json(&entry.value).ok_or_else(|| {
                        EngineError::Internal(anyhow::anyhow!(
                            "bad projection state under key '{key}'"
                        ))
                    })?,
                    entry.version,
                ),
            };
            let mut changed = 0;
            for (event, payload) in &items {
                if keyed.apply(definition, event, payload) {
                    changed += 1;
                }
            }
            if changed > 0 {
                self.state
                    .put(tenant, namespace, &key, keyed.to_json(), Some(expected))
                    .await?;
                folded += changed;
            }
        }
        Ok(folded)
    }

    /// The tenant's newest position (0 without events).
    ///
    /// # Errors
    /// Storage failures.
    pub async fn head_position(&self, tenant: &TenantId) -> Result<u64, EngineError> {
        let page = self
            .events
            .query(
                tenant,
                EventQuery {
                    limit: 1,
                    order: SortOrder::Desc,
                    ..EventQuery::default()
                },
            )
            .await?;
        Ok(page.events.first().map_or(0, |e| e.position.get()))
    }

    /// Events after `position`, counted up to [`LAG_COUNT_CAP`]; `true` when capped.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn events_after(
        &self,
        tenant: &TenantId,
        position: u64,
    ) -> Result<(u64, bool), EngineError> {
        let page = self
            .events
            .query(
                tenant,
                EventQuery {
                    from_position: Some(allsource_domain::Position::new(position)),
                    limit: LAG_COUNT_CAP,
                    ..EventQuery::default()
                },
            )
            .await?;
        Ok((page.events.len() as u64, page.has_more))
    }

    /// Number of keys of a generation.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn key_count(&self, tenant: &TenantId, namespace: &str) -> Result<u64, EngineError> {
        let mut count = 0;
        let mut after = None;
        loop {
            let page = self
                .state
                .list(tenant, namespace, None, after.clone(), LIST_PAGE)
                .await?;
            count += page.len() as u64;
            if page.len() < LIST_PAGE {
                return Ok(count);
            }
            after = page.last().map(|(k, _)| k.clone());
        }
    }

    /// Deletes a generation's keys and checkpoint (best effort: a leftover is unreferenced).
    pub async fn drop_generation(&self, tenant: &TenantId, name: &str, generation: &str) {
        let namespace = state_namespace(name, generation);
        loop {
            match self
                .state
                .list(tenant, &namespace, None, None, LIST_PAGE)
                .await
            {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    for (key, _) in page {
                        if let Err(e) = self.state.delete(tenant, &namespace, &key).await {
                            tracing::warn!(error = %e, "cannot delete projection state; left behind");
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list projection state; left behind");
                    return;
                }
            }
        }
        if let Err(e) = self
            .state
            .delete(tenant, CHECKPOINTS, &checkpoint_key(name, generation))
            .await
        {
            tracing::warn!(error = %e, "cannot delete a projection checkpoint; left behind");
        }
    }

    /// Brings one projection up to the log's head: pages through the events after its
    /// checkpoint, folds them, then writes the checkpoint. Returns events read.
    ///
    /// # Errors
    /// `Conflict` (retry later), storage failures.
    pub async fn catch_up(&self, tenant: &TenantId, name: &str) -> Result<u64, EngineError> {
        let lock = self.lock(tenant, name);
        let held = lock.lock().await;
        let outcome = self.catch_up_locked(tenant, name).await;
        match &outcome {
            Ok(_) | Err(EngineError::Conflict) => self.set_error(tenant, name, None),
            Err(e) => self.set_error(tenant, name, Some(e.to_string())),
        }
        drop(held);
        drop(lock);
        match outcome {
            // Deleted meanwhile: keep nothing for it.
            Ok(None) => {
                self.forget(tenant, name, true);
                Ok(0)
            }
            Ok(Some(read)) => Ok(read),
            Err(e) => Err(e),
        }
    }

    /// `None` when the projection does not exist (any more).
    async fn catch_up_locked(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<u64>, EngineError> {
        let Some(head) = self.head(tenant, name).await? else {
            return Ok(None);
        };
        let namespace = state_namespace(name, &head.generation);
        let mut checkpoint = self.checkpoint(tenant, name, &head.generation).await?;
        let mut read = 0;
        loop {
            if self.is_stopping() {
                return Ok(Some(read));
            }
            let page = self
                .events
                .query(
                    tenant,
                    EventQuery {
                        from_position: Some(allsource_domain::Position::new(checkpoint.position)),
                        limit: self.batch_size,
                        ..EventQuery::default()
                    },
                )
                .await?;
            let Some(last) = page.events.last().map(|e| e.position.get()) else {
                return Ok(Some(read));
            };
            read += page.events.len() as u64;
            self.apply(tenant, &head.definition, &namespace, &page.events)
                .await?;
            checkpoint.version = self
                .write_checkpoint(tenant, name, &head.generation, last, checkpoint.version)
                .await?;
            checkpoint.position = last;
            if !page.has_more {
                return Ok(Some(read));
            }
        }
    }

    /// Catches up every projection of every tenant once. Failures are recorded per projection
    /// (status `last_error`) and retried on the next round.
    pub async fn catch_up_all(&self) {
        let tenants = match self.tenants().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "projections: cannot list tenants");
                return;
            }
        };
        for tenant in tenants {
            if self.is_stopping() {
                return;
            }
            let heads = match self.heads(&tenant).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "projections: cannot list");
                    continue;
                }
            };
            for head in heads {
                let name = head.definition.name.as_str();
                if let Err(e) = self.catch_up(&tenant, name).await {
                    tracing::warn!(tenant = %tenant, projection = name, error = %e, "projection catch-up failed; retrying later");
                }
            }
        }
    }
}

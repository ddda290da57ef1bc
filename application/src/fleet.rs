//! A fleet: one supervised worker per runnable definition stored in a namespace of the state
//! store, for every tenant — the shape webhooks and pipelines share.
//!
//! [`Workers`] starts a worker for every runnable definition once [`start`](Workers::start)ed,
//! restarts one whose stored record changed (a new version), stops one whose definition was
//! disabled or deleted (and gives its lease back through [`Fleet::release`]), and reads every
//! tenant's definitions again every [`Fleet::rescan_interval`], which is how a node learns of
//! definitions changed on another node. The tenants to look at are the keys of an index
//! namespace under the reserved tenant `_system`, written by whoever creates a definition.
//!
//! What a worker does, how a definition is read and how a lease is given back is the fleet's
//! own ([`Fleet`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allsource_domain::TenantId;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::ports::{StateEntry, StateError, StateStore};
use crate::supervise::supervise;

/// Keys read per page of the state store.
const PAGE: usize = 500;

/// What a [`Workers`] runs.
pub(crate) trait Fleet: Send + Sync + 'static {
    /// A definition read from the store, ready to run.
    type Item: Send + 'static;

    /// What the fleet's workers are, in logs (`webhook`, `pipeline`).
    const NAME: &'static str;

    /// The name of the rescan loop, in logs (`webhook rescan`).
    const RESCAN: &'static str;

    fn state(&self) -> &dyn StateStore;

    /// The namespace of the definitions, keyed by the item's id (a UUID), in each tenant.
    fn definitions(&self) -> &'static str;

    /// The namespace, under `TenantId::system()`, whose keys are the tenants to look at.
    fn tenant_index(&self) -> &'static str;

    fn rescan_interval(&self) -> Duration;

    /// A stored definition, or `None` when it cannot run (unreadable: logged).
    fn parse(&self, entry: &StateEntry) -> Option<Self::Item>;

    /// Whether the definition wants a worker (active, enabled).
    fn runs(item: &Self::Item) -> bool;

    /// Starts the worker of a definition (supervised).
    fn spawn(self: &Arc<Self>, tenant: TenantId, item: Self::Item) -> JoinHandle<()>;

    /// Gives this node's lease on an item back, if it holds one.
    fn release(&self, tenant: &TenantId, id: Uuid) -> impl Future<Output = ()> + Send;
}

/// A worker running on this node, for one version of its definition's record.
struct Running {
    version: u64,
    handle: JoinHandle<()>,
}

/// The workers of one fleet on this node (see the module docs).
pub(crate) struct Workers<F: Fleet> {
    fleet: Arc<F>,
    running: tokio::sync::Mutex<HashMap<(TenantId, Uuid), Running>>,
    started: AtomicBool,
    rescan: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl<F: Fleet> Workers<F> {
    pub fn new(fleet: Arc<F>) -> Self {
        Self {
            fleet,
            running: tokio::sync::Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
            rescan: parking_lot::Mutex::new(None),
        }
    }

    pub fn fleet(&self) -> &Arc<F> {
        &self.fleet
    }

    /// Starts the workers of every runnable definition, and the rescan.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let workers = Arc::clone(self);
        let handle = supervise(F::RESCAN, move || {
            let workers = Arc::clone(&workers);
            async move {
                while workers.started.load(Ordering::Acquire) {
                    if let Err(e) = workers.reconcile_all().await {
                        tracing::warn!(fleet = F::NAME, error = %e,
                                       "cannot read the definitions; trying again later");
                    }
                    tokio::time::sleep(workers.fleet.rescan_interval()).await;
                }
            }
        });
        *self.rescan.lock() = Some(handle);
    }

    /// Stops every worker of this node and gives their leases back.
    pub async fn stop(&self) {
        self.started.store(false, Ordering::Release);
        let rescan = self.rescan.lock().take();
        if let Some(handle) = rescan {
            handle.abort();
            let _ = handle.await;
        }
        let mut running = self.running.lock().await;
        for ((tenant, id), worker) in running.drain() {
            stop(worker).await;
            self.fleet.release(&tenant, id).await;
        }
    }

    /// Brings one item's worker in line with its stored definition (after a change on this
    /// node). Nothing before [`start`](Self::start).
    pub async fn refresh(&self, tenant: &TenantId, id: Uuid) {
        if !self.started.load(Ordering::Acquire) {
            return;
        }
        let mut running = self.running.lock().await;
        match self
            .fleet
            .state()
            .get(tenant, self.fleet.definitions(), &id.to_string())
            .await
        {
            Ok(entry) => {
                let found = entry.map(|e| (self.fleet.parse(&e), e.version));
                self.apply(&mut running, tenant, id, found).await;
            }
            // The rescan will try again.
            Err(e) => tracing::warn!(fleet = F::NAME, id = %id, error = %e,
                                     "cannot read a definition"),
        }
    }

    async fn apply(
        &self,
        running: &mut HashMap<(TenantId, Uuid), Running>,
        tenant: &TenantId,
        id: Uuid,
        found: Option<(Option<F::Item>, u64)>,
    ) {
        let key = (tenant.clone(), id);
        match found {
            Some((Some(item), version)) if F::runs(&item) => {
                if running
                    .get(&key)
                    .is_some_and(|r| r.version == version && !r.handle.is_finished())
                {
                    return;
                }
                if let Some(old) = running.remove(&key) {
                    stop(old).await;
                }
                let handle = self.fleet.spawn(tenant.clone(), item);
                running.insert(key, Running { version, handle });
            }
            _ => {
                if let Some(old) = running.remove(&key) {
                    stop(old).await;
                    self.fleet.release(tenant, id).await;
                }
            }
        }
    }

    /// One pass over every tenant's definitions.
    async fn reconcile_all(&self) -> Result<(), StateError> {
        let mut running = self.running.lock().await;
        if !self.started.load(Ordering::Acquire) {
            return Ok(());
        }
        let state = self.fleet.state();
        let tenants = list_all(state, &TenantId::system(), self.fleet.tenant_index()).await?;
        let mut seen = Vec::new();
        for (tenant, _) in tenants {
            let Ok(tenant) = TenantId::parse(&tenant) else {
                continue;
            };
            let definitions = match list_all(state, &tenant, self.fleet.definitions()).await {
                Ok(definitions) => definitions,
                Err(e) => {
                    // Keep this tenant's workers as they are.
                    tracing::warn!(fleet = F::NAME, tenant = %tenant, error = %e,
                                   "cannot list the definitions");
                    seen.extend(running.keys().filter(|(t, _)| *t == tenant).cloned());
                    continue;
                }
            };
            for (key, entry) in definitions {
                let Ok(id) = Uuid::parse_str(&key) else {
                    continue;
                };
                seen.push((tenant.clone(), id));
                let found = Some((self.fleet.parse(&entry), entry.version));
                self.apply(&mut running, &tenant, id, found).await;
            }
        }
        let gone: Vec<_> = running
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for (tenant, id) in gone {
            self.apply(&mut running, &tenant, id, None).await;
        }
        Ok(())
    }

    /// Ends every worker at once without giving any lease back, as a crash would.
    #[cfg(test)]
    pub async fn crash(&self) {
        self.started.store(false, Ordering::Release);
        if let Some(handle) = self.rescan.lock().take() {
            handle.abort();
        }
        for (_, worker) in self.running.lock().await.drain() {
            worker.handle.abort();
        }
    }

    /// The items with a worker on this node (for tests and stats).
    pub async fn running(&self) -> Vec<(TenantId, Uuid)> {
        let mut keys: Vec<_> = self.running.lock().await.keys().cloned().collect();
        keys.sort();
        keys
    }
}

async fn stop(worker: Running) {
    worker.handle.abort();
    let _ = worker.handle.await;
}

/// Every key of a namespace, in order.
pub(crate) async fn list_all(
    state: &dyn StateStore,
    tenant: &TenantId,
    namespace: &str,
) -> Result<Vec<(String, StateEntry)>, StateError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .list(tenant, namespace, None, after.clone(), PAGE)
            .await?;
        let done = page.len() < PAGE;
        after = page.last().map(|(k, _)| k.clone());
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

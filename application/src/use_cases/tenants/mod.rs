//! Tenants: creating, reading, changing, (de)activating and deleting them; their quotas and
//! usage. [`Tenants`] is also the [`TenantGate`] (is the tenant active?), the [`QuotaGate`]
//! (usage counters checked against quotas) and an [`AppendGuard`] (events per day and storage
//! bytes of appends).
//!
//! # Who may do what
//! - The *operators* are the holders of `manage_tenants` in tenant `default`: they manage every
//!   tenant.
//! - A holder of `manage_tenants` in another tenant sees only its own tenant (list, read,
//!   quotas, stats) and changes nothing: a tenant cannot raise its own quotas or reactivate
//!   itself. Another tenant is answered `404`, as if it did not exist.
//! - Stats of one's own tenant need only `read`.
//! - Tenant `default` always exists (it is created with the `unlimited` tier when missing) and
//!   can be neither deleted nor deactivated (`409`).
//! - Ids starting with `_` are reserved for the installation ([`TenantId::is_reserved`]:
//!   `_identity`, `_system`, ...) and refused on create (`400` naming `id`).
//!
//! # Deleting a tenant
//! Deleting a tenant deletes its record and usage counters, and tells every registered
//! [`TenantMembers`] (the identity use cases: users, API keys, logins, access tokens) to let
//! go of what they keep for it. Creating a tenant tells them too, before the record is
//! written, so a re-created tenant of the same id starts with no identities even if an earlier
//! deletion was interrupted. Its events stay in the store.
//!
//! # Storage
//! Tenant records live in the state store under tenant `default`, namespace `tenants`, key =
//! tenant id. Usage counters live under the tenant itself, namespace `tenant_usage`, key
//! `counters`, as `{day, events_today, storage_bytes, api_keys, projections, pipelines}`.
//!
//! # Counting
//! Each tenant has one in-memory cell: the last counters read from or written to the state
//! store (with their version) plus the changes not yet written (a delta). Checks and changes
//! happen under the cell's lock, so on one node they are serialized per tenant and exact. After
//! a change, the delta is written with the stored version as the expectation; at most one write
//! per tenant is in flight and it loops until the delta is empty, so concurrent appends share
//! writes instead of queueing one each. When another node wrote in between (version conflict),
//! the counters are read again and the delta is added to them: nodes add, never overwrite.
//! Queries per hour are counted in this node's memory only (a read must not cost a write).
//!
//! Appends are checked before and counted after (from the receipts, so re-sent duplicates do
//! not count): concurrent appends of one tenant may overshoot a quota by what is in flight.
//!
//! # Layout
//! - `crud`: the tenant records (their persisted form, the short-lived cache) and the use cases
//!   of `/api/v1/tenants`.
//! - `usage`: the usage counters (cells, deltas, flushes) and the stats use case.
//! - `gates`: [`TenantGate`], [`QuotaGate`] and [`AppendGuard`] for the other use cases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use allsource_domain::{Tenant, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::params::FieldError;
use super::read::ReadEvents;
use crate::Caller;
use crate::ports::{
    AuditLog, AuditOutcome, AuditRecord, Clock, StateError, StateStore, StoreStats,
};
use crate::quota::{GateError, QuotaKind};
#[cfg(doc)]
use crate::{
    quota::{QuotaGate, TenantGate},
    use_cases::append::AppendGuard,
};
use usage::UsageCell;

mod crud;
mod gates;
mod usage;

pub use usage::quota_limit;

/// State-store namespace of tenant records (under tenant `default`).
pub const TENANTS_NAMESPACE: &str = "tenants";
/// State-store namespace of a tenant's usage counters (under the tenant).
pub const USAGE_NAMESPACE: &str = "tenant_usage";
/// How long a tenant record read from the state store is trusted. Changes made through this
/// node invalidate it at once; changes made on another node take effect here within this time.
pub const TENANT_CACHE_MILLIS: i64 = 2_000;

/// What another use case keeps per tenant and lets go of with it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TenantMembers: Send + Sync {
    /// Deletes or revokes everything kept for the tenant. Idempotent: it runs when a tenant is
    /// deleted and again before a tenant of that id is created.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` storage errors; the tenant use case reports them.
    async fn purge_tenant(&self, tenant: &TenantId) -> Result<(), GateError>;
}

/// Deletes every key a tenant has in some state-store namespaces (consumers, consumer groups,
/// webhooks): what a deleted tenant leaves behind, so that a tenant created later with the same
/// id starts without it.
pub struct PurgeNamespaces {
    state: Arc<dyn StateStore>,
    namespaces: Vec<&'static str>,
}

impl PurgeNamespaces {
    pub fn new(state: Arc<dyn StateStore>, namespaces: Vec<&'static str>) -> Self {
        Self { state, namespaces }
    }
}

#[async_trait]
impl TenantMembers for PurgeNamespaces {
    async fn purge_tenant(&self, tenant: &TenantId) -> Result<(), GateError> {
        const PAGE: usize = 1000;
        let failed = |e: StateError| match e {
            StateError::Unavailable(why) => GateError::Unavailable(why),
            other => GateError::Internal(other.into()),
        };
        for namespace in &self.namespaces {
            loop {
                let page = self
                    .state
                    .list(tenant, namespace, None, None, PAGE)
                    .await
                    .map_err(failed)?;
                if page.is_empty() {
                    break;
                }
                for (key, _) in page {
                    self.state
                        .delete(tenant, namespace, &key)
                        .await
                        .map_err(failed)?;
                }
            }
        }
        Ok(())
    }
}

/// Why a tenant use case failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// 400.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// 403: the caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such tenant (or not one the caller may see).
    #[error("{0}")]
    NotFound(String),
    /// 409: the tenant exists already, changed concurrently, or is `default`.
    #[error("{0}")]
    Conflict(String),
    /// 503.
    #[error("tenant storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StateError> for TenantError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::VersionConflict { .. } => {
                Self::Conflict("the tenant was changed concurrently; retry".into())
            }
            StateError::Unavailable(why) => Self::Unavailable(why),
            StateError::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<TenantError> for GateError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Unavailable(why) => GateError::Unavailable(why),
            other => GateError::Internal(anyhow::anyhow!(other.to_string())),
        }
    }
}

/// Raw input of `POST /api/v1/tenants`.
#[derive(Debug, Default, Clone)]
pub struct CreateTenantInput {
    pub id: Option<String>,
    /// Defaults to the id.
    pub name: Option<String>,
    /// Defaults to `free`.
    pub tier: Option<String>,
}

/// Raw input of `PUT /api/v1/tenants/{id}`: absent fields are kept.
#[derive(Debug, Default, Clone)]
pub struct UpdateTenantInput {
    pub name: Option<String>,
    pub tier: Option<String>,
}

/// One quota of a tenant: what is used of it and its limit (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub kind: QuotaKind,
    pub used: u64,
    pub limit: Option<u64>,
}

/// `GET /api/v1/tenants/{id}/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantStats {
    pub tenant: Tenant,
    pub usage: Vec<QuotaUsage>,
    pub events: StoreStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind, still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A tenant record (or its known absence) and when it was read, in ms.
type Cached = (Option<Arc<Tenant>>, i64);

struct Inner {
    store: Arc<dyn StateStore>,
    audit: Arc<dyn AuditLog>,
    reads: ReadEvents,
    clock: Arc<dyn Clock>,
    /// Tenant id → (record or known absence, when it was read in ms).
    cache: Mutex<HashMap<TenantId, Cached>>,
    usage: Mutex<HashMap<TenantId, Arc<Mutex<UsageCell>>>>,
    /// Told when a tenant goes (and before one is created).
    members: Mutex<Vec<Arc<dyn TenantMembers>>>,
}

/// The tenant use cases, and the tenant and quota gates.
#[derive(Clone)]
pub struct Tenants {
    inner: Arc<Inner>,
}

impl Tenants {
    pub fn new(
        store: Arc<dyn StateStore>,
        audit: Arc<dyn AuditLog>,
        reads: ReadEvents,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                audit,
                reads,
                clock,
                cache: Mutex::new(HashMap::new()),
                usage: Mutex::new(HashMap::new()),
                members: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Registers what else keeps state per tenant (the composition root registers the
    /// identity use cases): it is purged with every deleted tenant.
    pub fn add_members(&self, members: Arc<dyn TenantMembers>) {
        lock(&self.inner.members).push(members);
    }

    /// Purges the tenant from every registered [`TenantMembers`].
    async fn purge_members(&self, id: &TenantId) -> Result<(), TenantError> {
        let members: Vec<_> = lock(&self.inner.members).clone();
        for member in members {
            member.purge_tenant(id).await.map_err(|e| match e {
                GateError::Unavailable(why) => TenantError::Unavailable(why),
                GateError::Internal(cause) => TenantError::Internal(cause),
                other => TenantError::Internal(anyhow::anyhow!(other.to_string())),
            })?;
        }
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        id: &TenantId,
        details: serde_json::Value,
    ) {
        let record = AuditRecord::new(id.as_str(), caller.actor(), action, AuditOutcome::Success)
            .resource(id.as_str())
            .details(details);
        if let Err(e) = self.inner.audit.record(record).await {
            tracing::warn!(error = %e, action, tenant = id.as_str(), "audit record lost");
        }
    }
}

#[cfg(test)]
mod tests;

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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use allsource_domain::{
    Permission, QuotaOverrides, Quotas, RateLimit, Tenant, TenantId, TenantName, Tier,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::append::{AppendError, AppendGuard, GuardedEvent};
use super::params::{Errors, FieldError};
use super::read::ReadEvents;
use crate::Caller;
use crate::ports::{
    AppendReceipt, AuditLog, AuditOutcome, AuditRecord, Clock, StateError, StateStore, StoreStats,
};
use crate::quota::{GateError, QuotaExceeded, QuotaGate, QuotaKind, TenantGate};

/// State-store namespace of tenant records (under tenant `default`).
pub const TENANTS_NAMESPACE: &str = "tenants";
/// State-store namespace of a tenant's usage counters (under the tenant).
pub const USAGE_NAMESPACE: &str = "tenant_usage";
const USAGE_KEY: &str = "counters";
/// How long a tenant record read from the state store is trusted. Changes made through this
/// node invalidate it at once; changes made on another node take effect here within this time.
pub const TENANT_CACHE_MILLIS: i64 = 2_000;
/// Writes of one tenant's counters that conflict with other nodes in a row before giving up.
const MAX_FLUSH_ATTEMPTS: usize = 32;
/// Writes one flush makes before it returns: under steady load the delta never empties, and
/// no caller may be kept waiting for ever. What is left goes out with the next flush.
const MAX_FLUSH_WRITES: usize = 3;
/// `Retry-After` of quotas that do not refill with time (storage, keys, projections, pipelines).
const NON_PERIODIC_RETRY_SECS: u64 = 60;

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

/// The limit of one quota kind.
pub fn quota_limit(quotas: &Quotas, kind: QuotaKind) -> Option<u64> {
    match kind {
        QuotaKind::EventsPerDay => quotas.max_events_per_day,
        QuotaKind::StorageBytes => quotas.max_storage_bytes,
        QuotaKind::QueriesPerHour => quotas.max_queries_per_hour,
        QuotaKind::ApiKeys => quotas.max_api_keys,
        QuotaKind::Projections => quotas.max_projections,
        QuotaKind::Pipelines => quotas.max_pipelines,
    }
}

/// The persisted form of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TenantRecord {
    id: String,
    name: String,
    tier: String,
    active: bool,
    /// Quota name → override (`null`: unlimited). Absent quotas follow the tier.
    #[serde(default)]
    overrides: std::collections::BTreeMap<String, Option<u64>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn overrides_slot(o: &mut QuotaOverrides, kind: QuotaKind) -> &mut Option<Option<u64>> {
    match kind {
        QuotaKind::EventsPerDay => &mut o.max_events_per_day,
        QuotaKind::StorageBytes => &mut o.max_storage_bytes,
        QuotaKind::QueriesPerHour => &mut o.max_queries_per_hour,
        QuotaKind::ApiKeys => &mut o.max_api_keys,
        QuotaKind::Projections => &mut o.max_projections,
        QuotaKind::Pipelines => &mut o.max_pipelines,
    }
}

impl TenantRecord {
    fn from_tenant(t: &Tenant) -> Self {
        let mut overrides = std::collections::BTreeMap::new();
        let mut o = t.overrides;
        for kind in QuotaKind::ALL {
            if let Some(value) = *overrides_slot(&mut o, kind) {
                overrides.insert(kind.as_str().to_owned(), value);
            }
        }
        Self {
            id: t.id.as_str().to_owned(),
            name: t.name.as_str().to_owned(),
            tier: t.tier.as_str().to_owned(),
            active: t.active,
            overrides,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }

    fn into_tenant(self) -> anyhow::Result<Tenant> {
        let mut overrides = QuotaOverrides::default();
        for kind in QuotaKind::ALL {
            if let Some(value) = self.overrides.get(kind.as_str()) {
                *overrides_slot(&mut overrides, kind) = Some(*value);
            }
        }
        Ok(Tenant {
            id: TenantId::parse(&self.id)?,
            name: TenantName::parse(&self.name)?,
            tier: Tier::parse(&self.tier)?,
            active: self.active,
            overrides,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Persisted usage counters of a tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counters {
    /// Days since 1970-01-01 (UTC) that `events_today` counts.
    day: i64,
    events_today: u64,
    storage_bytes: u64,
    api_keys: u64,
    projections: u64,
    pipelines: u64,
}

/// Changes not yet written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Delta {
    /// The day `events` belongs to.
    day: i64,
    events: i64,
    storage_bytes: i64,
    api_keys: i64,
    projections: i64,
    pipelines: i64,
}

impl Delta {
    fn is_empty(&self) -> bool {
        self.events == 0
            && self.storage_bytes == 0
            && self.api_keys == 0
            && self.projections == 0
            && self.pipelines == 0
    }
}

fn plus(base: u64, delta: i64) -> u64 {
    if delta >= 0 {
        base.saturating_add(delta as u64)
    } else {
        base.saturating_sub(delta.unsigned_abs())
    }
}

fn day_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(86_400)
}

fn hour_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(3_600)
}

/// The counters as they are with the delta applied, for `today`.
fn combined(base: &Counters, delta: &Delta, today: i64) -> Counters {
    let events_base = if base.day == today {
        base.events_today
    } else {
        0
    };
    let events_delta = if delta.day == today { delta.events } else { 0 };
    Counters {
        day: today,
        events_today: plus(events_base, events_delta),
        storage_bytes: plus(base.storage_bytes, delta.storage_bytes),
        api_keys: plus(base.api_keys, delta.api_keys),
        projections: plus(base.projections, delta.projections),
        pipelines: plus(base.pipelines, delta.pipelines),
    }
}

/// One tenant's usage on this node.
#[derive(Debug, Default)]
struct UsageCell {
    loaded: bool,
    base: Counters,
    version: u64,
    delta: Delta,
    flushing: bool,
    hour: i64,
    queries: u64,
}

impl UsageCell {
    fn used(&self, kind: QuotaKind, now: DateTime<Utc>) -> u64 {
        let c = combined(&self.base, &self.delta, day_of(now));
        match kind {
            QuotaKind::EventsPerDay => c.events_today,
            QuotaKind::StorageBytes => c.storage_bytes,
            QuotaKind::QueriesPerHour => {
                if self.hour == hour_of(now) {
                    self.queries
                } else {
                    0
                }
            }
            QuotaKind::ApiKeys => c.api_keys,
            QuotaKind::Projections => c.projections,
            QuotaKind::Pipelines => c.pipelines,
        }
    }

    fn add(&mut self, kind: QuotaKind, amount: i64, now: DateTime<Utc>) {
        let d = &mut self.delta;
        match kind {
            QuotaKind::EventsPerDay => {
                let today = day_of(now);
                if d.day != today {
                    d.day = today;
                    d.events = 0;
                }
                d.events += amount;
            }
            QuotaKind::StorageBytes => d.storage_bytes += amount,
            QuotaKind::ApiKeys => d.api_keys += amount,
            QuotaKind::Projections => d.projections += amount,
            QuotaKind::Pipelines => d.pipelines += amount,
            QuotaKind::QueriesPerHour => {
                let hour = hour_of(now);
                if self.hour != hour {
                    self.hour = hour;
                    self.queries = 0;
                }
                self.queries = plus(self.queries, amount);
            }
        }
    }
}

/// Seconds until the quota has room again, by kind.
fn retry_after(kind: QuotaKind, now: DateTime<Utc>) -> u64 {
    let t = now.timestamp();
    match kind {
        QuotaKind::EventsPerDay => (86_400 - t.rem_euclid(86_400)) as u64,
        QuotaKind::QueriesPerHour => (3_600 - t.rem_euclid(3_600)) as u64,
        _ => NON_PERIODIC_RETRY_SECS,
    }
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
            }),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn is_operator(caller: &Caller) -> bool {
        caller.tenant() == &TenantId::default_tenant() && caller.can(Permission::ManageTenants)
    }

    fn require_operator(caller: &Caller) -> Result<(), TenantError> {
        if Self::is_operator(caller) {
            Ok(())
        } else {
            Err(TenantError::Forbidden(
                "only holders of 'manage_tenants' in tenant 'default' may change tenants".into(),
            ))
        }
    }

    fn parse_id(raw: &str, field: &str) -> Result<TenantId, TenantError> {
        TenantId::parse(raw).map_err(|e| TenantError::Invalid(vec![FieldError::new(field, e.0)]))
    }

    fn not_found(id: &str) -> TenantError {
        TenantError::NotFound(format!("no tenant '{id}'"))
    }

    /// Whether the caller may see tenant `id` (operators: all; others: their own).
    fn visible(caller: &Caller, id: &TenantId) -> bool {
        Self::is_operator(caller) || caller.tenant() == id
    }

    /// The tenant record as stored, with its version. Tenant `default` is created if missing.
    async fn load(&self, id: &TenantId) -> Result<Option<(Tenant, u64)>, TenantError> {
        let default = TenantId::default_tenant();
        let entry = self
            .inner
            .store
            .get(&default, TENANTS_NAMESPACE, id.as_str())
            .await?;
        match entry {
            Some(entry) => {
                let record: TenantRecord = serde_json::from_value(entry.value)
                    .map_err(|e| TenantError::Internal(anyhow::anyhow!(e)))?;
                let tenant = record.into_tenant().map_err(TenantError::Internal)?;
                Ok(Some((tenant, entry.version)))
            }
            None if *id == default => {
                let tenant = Tenant::new(
                    default.clone(),
                    TenantName::parse("Default").map_err(|e| TenantError::Internal(e.into()))?,
                    Tier::Unlimited,
                    self.now(),
                );
                match self.write(&tenant, 0).await {
                    Ok(version) => Ok(Some((tenant, version))),
                    // Another node (or request) created it first: read theirs.
                    Err(TenantError::Conflict(_)) => Box::pin(self.load(id)).await,
                    Err(e) => Err(e),
                }
            }
            None => Ok(None),
        }
    }

    async fn write(&self, tenant: &Tenant, expected: u64) -> Result<u64, TenantError> {
        let value = serde_json::to_value(TenantRecord::from_tenant(tenant))
            .map_err(|e| TenantError::Internal(e.into()))?;
        let version = self
            .inner
            .store
            .put(
                &TenantId::default_tenant(),
                TENANTS_NAMESPACE,
                tenant.id.as_str(),
                value,
                Some(expected),
            )
            .await?;
        self.invalidate(&tenant.id);
        Ok(version)
    }

    fn invalidate(&self, id: &TenantId) {
        lock(&self.inner.cache).remove(id);
    }

    /// The tenant, from the short-lived cache or the state store.
    ///
    /// # Errors
    /// `Unavailable`/`Internal`.
    pub async fn cached(&self, id: &TenantId) -> Result<Option<Arc<Tenant>>, TenantError> {
        let now_ms = self.now().timestamp_millis();
        if let Some((tenant, at)) = lock(&self.inner.cache).get(id)
            && now_ms - at < TENANT_CACHE_MILLIS
            && now_ms >= *at
        {
            return Ok(tenant.clone());
        }
        let tenant = self.load(id).await?.map(|(t, _)| Arc::new(t));
        lock(&self.inner.cache).insert(id.clone(), (tenant.clone(), now_ms));
        Ok(tenant)
    }

    /// The rate limit of a tenant's tier (`None` for an unknown tenant).
    ///
    /// # Errors
    /// `Unavailable`/`Internal`.
    pub async fn rate_limit(&self, id: &TenantId) -> Result<Option<RateLimit>, TenantError> {
        Ok(self.cached(id).await?.map(|t| t.rate_limit()))
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

    /// The tenant, created active on `tier` if it does not exist yet (for other use cases that
    /// bring tenants into being, such as registering the first user of a tenant). Audited as
    /// `tenant.create` by `system` when it creates.
    ///
    /// # Errors
    /// `Unavailable`/`Internal`.
    pub async fn ensure(&self, id: &TenantId, tier: Tier) -> Result<Tenant, TenantError> {
        if let Some((tenant, _)) = self.load(id).await? {
            return Ok(tenant);
        }
        let name = TenantName::parse(id.as_str()).map_err(|e| TenantError::Internal(e.into()))?;
        let tenant = Tenant::new(id.clone(), name, tier, self.now());
        match self.write(&tenant, 0).await {
            Ok(_) => {
                let system = Caller::new(TenantId::default_tenant());
                self.audit(
                    &system,
                    "tenant.create",
                    id,
                    json!({"tier": tier.as_str(), "implicit": true}),
                )
                .await;
                Ok(tenant)
            }
            // Created concurrently: theirs.
            Err(TenantError::Conflict(_)) => self
                .load(id)
                .await?
                .map(|(t, _)| t)
                .ok_or_else(|| TenantError::Conflict("tenant deleted concurrently".into())),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/v1/tenants`: every tenant for operators, one's own tenant for others.
    ///
    /// # Errors
    /// `Unavailable`/`Internal`.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<Tenant>, TenantError> {
        if !Self::is_operator(caller) {
            return Ok(self
                .load(caller.tenant())
                .await?
                .map(|(t, _)| vec![t])
                .unwrap_or_default());
        }
        // Make sure `default` exists before listing.
        self.load(&TenantId::default_tenant()).await?;
        let default = TenantId::default_tenant();
        let mut tenants = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .list(&default, TENANTS_NAMESPACE, None, after.clone(), 500)
                .await?;
            let last = page.last().map(|(k, _)| k.clone());
            for (_, entry) in page {
                let record: TenantRecord = serde_json::from_value(entry.value)
                    .map_err(|e| TenantError::Internal(anyhow::anyhow!(e)))?;
                tenants.push(record.into_tenant().map_err(TenantError::Internal)?);
            }
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        Ok(tenants)
    }

    /// `GET /api/v1/tenants/{id}`.
    ///
    /// # Errors
    /// `Invalid` id; `NotFound` when missing or not visible to the caller.
    pub async fn get(&self, caller: &Caller, raw_id: &str) -> Result<Tenant, TenantError> {
        let id = Self::parse_id(raw_id, "id")?;
        if !Self::visible(caller, &id) {
            return Err(Self::not_found(raw_id));
        }
        self.load(&id)
            .await?
            .map(|(t, _)| t)
            .ok_or_else(|| Self::not_found(raw_id))
    }

    /// `POST /api/v1/tenants`.
    ///
    /// # Errors
    /// `Forbidden` for non-operators; `Invalid` input; `Conflict` when the id is taken.
    pub async fn create(
        &self,
        caller: &Caller,
        input: CreateTenantInput,
    ) -> Result<Tenant, TenantError> {
        Self::require_operator(caller)?;
        let mut errors = Errors::default();
        let id = match input.id.as_deref() {
            None => {
                errors.push("id", "is required");
                None
            }
            Some(raw) => errors.check("id", TenantId::parse(raw)),
        };
        let name = match (input.name.as_deref(), input.id.as_deref()) {
            (Some(raw), _) => errors.check("name", TenantName::parse(raw)),
            (None, Some(id)) => TenantName::parse(id).ok(),
            (None, None) => None,
        };
        let tier = match input.tier.as_deref() {
            None => Some(Tier::Free),
            Some(raw) => errors.check("tier", Tier::parse(raw)),
        };
        let (Some(id), Some(name), Some(tier)) = (id, name, tier) else {
            return Err(TenantError::Invalid(errors.0));
        };
        if !errors.0.is_empty() {
            return Err(TenantError::Invalid(errors.0));
        }
        if id == TenantId::default_tenant() {
            return Err(TenantError::Conflict(
                "tenant 'default' exists already".into(),
            ));
        }
        let tenant = Tenant::new(id, name, tier, self.now());
        self.write(&tenant, 0).await.map_err(|e| match e {
            TenantError::Conflict(_) => {
                TenantError::Conflict(format!("tenant '{}' exists already", tenant.id.as_str()))
            }
            other => other,
        })?;
        self.audit(
            caller,
            "tenant.create",
            &tenant.id,
            json!({"name": tenant.name.as_str(), "tier": tenant.tier.as_str()}),
        )
        .await;
        Ok(tenant)
    }

    /// Loads a tenant for a change by an operator.
    async fn for_change(
        &self,
        caller: &Caller,
        raw_id: &str,
    ) -> Result<(Tenant, u64), TenantError> {
        let id = Self::parse_id(raw_id, "id")?;
        if !Self::visible(caller, &id) {
            return Err(Self::not_found(raw_id));
        }
        Self::require_operator(caller)?;
        self.load(&id).await?.ok_or_else(|| Self::not_found(raw_id))
    }

    /// `PUT /api/v1/tenants/{id}`: name and tier.
    ///
    /// # Errors
    /// `Forbidden`, `NotFound`, `Invalid`, `Conflict` (concurrent change).
    pub async fn update(
        &self,
        caller: &Caller,
        raw_id: &str,
        input: UpdateTenantInput,
    ) -> Result<Tenant, TenantError> {
        let mut errors = Errors::default();
        let name = input
            .name
            .as_deref()
            .and_then(|raw| errors.check("name", TenantName::parse(raw)));
        let tier = input
            .tier
            .as_deref()
            .and_then(|raw| errors.check("tier", Tier::parse(raw)));
        let (mut tenant, version) = self.for_change(caller, raw_id).await?;
        if !errors.0.is_empty() {
            return Err(TenantError::Invalid(errors.0));
        }
        if let Some(name) = name {
            tenant.name = name;
        }
        if let Some(tier) = tier {
            tenant.tier = tier;
        }
        tenant.updated_at = self.now();
        self.write(&tenant, version).await?;
        self.audit(
            caller,
            "tenant.update",
            &tenant.id,
            json!({"name": tenant.name.as_str(), "tier": tenant.tier.as_str()}),
        )
        .await;
        Ok(tenant)
    }

    /// `POST /api/v1/tenants/{id}/activate` and `.../deactivate`. Takes effect at once on this
    /// node (the cache is invalidated).
    ///
    /// # Errors
    /// `Forbidden`, `NotFound`, `Conflict` for deactivating `default`.
    pub async fn set_active(
        &self,
        caller: &Caller,
        raw_id: &str,
        active: bool,
    ) -> Result<Tenant, TenantError> {
        let (mut tenant, version) = self.for_change(caller, raw_id).await?;
        if !active && tenant.is_default() {
            return Err(TenantError::Conflict(
                "tenant 'default' cannot be deactivated".into(),
            ));
        }
        if tenant.active != active {
            tenant.active = active;
            tenant.updated_at = self.now();
            self.write(&tenant, version).await?;
        }
        let action = if active {
            "tenant.activate"
        } else {
            "tenant.deactivate"
        };
        self.audit(caller, action, &tenant.id, serde_json::Value::Null)
            .await;
        Ok(tenant)
    }

    /// `PUT /api/v1/tenants/{id}/quotas`: replaces the tenant's overrides.
    ///
    /// # Errors
    /// `Forbidden`, `NotFound`, `Conflict` (concurrent change).
    pub async fn set_quotas(
        &self,
        caller: &Caller,
        raw_id: &str,
        overrides: QuotaOverrides,
    ) -> Result<Tenant, TenantError> {
        let (mut tenant, version) = self.for_change(caller, raw_id).await?;
        let before = tenant.quotas();
        tenant.overrides = overrides;
        tenant.updated_at = self.now();
        self.write(&tenant, version).await?;
        let after = tenant.quotas();
        let details: serde_json::Map<String, serde_json::Value> = QuotaKind::ALL
            .into_iter()
            .filter(|k| quota_limit(&before, *k) != quota_limit(&after, *k))
            .map(|k| {
                (
                    k.as_str().to_owned(),
                    json!({"from": quota_limit(&before, k), "to": quota_limit(&after, k)}),
                )
            })
            .collect();
        self.audit(caller, "quota.update", &tenant.id, details.into())
            .await;
        Ok(tenant)
    }

    /// `DELETE /api/v1/tenants/{id}`: the record and its usage counters. Its credentials are
    /// refused from then on (unknown tenant); its events stay in the store.
    ///
    /// # Errors
    /// `Forbidden`, `NotFound`, `Conflict` for `default`.
    pub async fn delete(&self, caller: &Caller, raw_id: &str) -> Result<(), TenantError> {
        let (tenant, _) = self.for_change(caller, raw_id).await?;
        if tenant.is_default() {
            return Err(TenantError::Conflict(
                "tenant 'default' cannot be deleted".into(),
            ));
        }
        self.inner
            .store
            .delete(
                &TenantId::default_tenant(),
                TENANTS_NAMESPACE,
                tenant.id.as_str(),
            )
            .await?;
        self.invalidate(&tenant.id);
        self.inner
            .store
            .delete(&tenant.id, USAGE_NAMESPACE, USAGE_KEY)
            .await?;
        lock(&self.inner.usage).remove(&tenant.id);
        self.audit(caller, "tenant.delete", &tenant.id, serde_json::Value::Null)
            .await;
        Ok(())
    }

    /// `GET /api/v1/tenants/{id}/stats`: usage against quotas and the tenant's event figures.
    ///
    /// # Errors
    /// `NotFound` when missing or not visible.
    pub async fn stats(&self, caller: &Caller, raw_id: &str) -> Result<TenantStats, TenantError> {
        let tenant = self.get(caller, raw_id).await?;
        let cell = self
            .loaded_cell(&tenant.id)
            .await
            .map_err(|e| TenantError::Unavailable(e.to_string()))?;
        let now = self.now();
        let quotas = tenant.quotas();
        let usage = {
            let cell = lock(&cell);
            QuotaKind::ALL
                .into_iter()
                .map(|kind| QuotaUsage {
                    kind,
                    used: cell.used(kind, now),
                    limit: quota_limit(&quotas, kind),
                })
                .collect()
        };
        let events = self
            .inner
            .reads
            .stats(&Caller::new(tenant.id.clone()))
            .await
            .map_err(|e| match e {
                super::ReadError::Unavailable(why) => TenantError::Unavailable(why),
                other => TenantError::Internal(anyhow::anyhow!(other.to_string())),
            })?;
        Ok(TenantStats {
            tenant,
            usage,
            events,
        })
    }

    fn cell(&self, id: &TenantId) -> Arc<Mutex<UsageCell>> {
        lock(&self.inner.usage)
            .entry(id.clone())
            .or_default()
            .clone()
    }

    /// The tenant's usage cell, its counters read from the state store on first use.
    async fn loaded_cell(&self, id: &TenantId) -> Result<Arc<Mutex<UsageCell>>, GateError> {
        let cell = self.cell(id);
        if lock(&cell).loaded {
            return Ok(cell);
        }
        let (base, version) = self.read_counters(id).await?;
        let mut c = lock(&cell);
        if !c.loaded {
            c.loaded = true;
            c.base = base;
            c.version = version;
        }
        drop(c);
        Ok(cell)
    }

    async fn read_counters(&self, id: &TenantId) -> Result<(Counters, u64), GateError> {
        match self.inner.store.get(id, USAGE_NAMESPACE, USAGE_KEY).await {
            Ok(Some(entry)) => {
                let counters = serde_json::from_value(entry.value)
                    .map_err(|e| GateError::Internal(anyhow::anyhow!(e)))?;
                Ok((counters, entry.version))
            }
            Ok(None) => Ok((Counters::default(), 0)),
            Err(StateError::Unavailable(why)) => Err(GateError::Unavailable(why)),
            Err(e) => Err(GateError::Internal(anyhow::anyhow!(e))),
        }
    }

    /// Writes the cell's delta. If a write is in flight already, it will take this delta too.
    async fn flush(&self, id: &TenantId, cell: &Mutex<UsageCell>) -> Result<(), GateError> {
        {
            let mut c = lock(cell);
            if c.flushing {
                return Ok(());
            }
            c.flushing = true;
        }
        // Cleared on drop, so a caller whose future is dropped mid-write (a client that went
        // away) cannot leave the tenant's counters unwritable on this node.
        struct Flushing<'a>(&'a Mutex<UsageCell>);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                lock(self.0).flushing = false;
            }
        }
        let _flushing = Flushing(cell);
        self.flush_loop(id, cell).await
    }

    async fn flush_loop(&self, id: &TenantId, cell: &Mutex<UsageCell>) -> Result<(), GateError> {
        let mut conflicts = 0;
        let mut writes = 0;
        while writes < MAX_FLUSH_WRITES {
            let (next, taken, expected) = {
                let c = lock(cell);
                if c.delta.is_empty() {
                    return Ok(());
                }
                let today = day_of(self.now());
                (combined(&c.base, &c.delta, today), c.delta, c.version)
            };
            let value = serde_json::to_value(next).map_err(|e| GateError::Internal(e.into()))?;
            match self
                .inner
                .store
                .put(id, USAGE_NAMESPACE, USAGE_KEY, value, Some(expected))
                .await
            {
                Ok(version) => {
                    writes += 1;
                    let mut c = lock(cell);
                    c.base = next;
                    c.version = version;
                    let d = &mut c.delta;
                    if d.day == taken.day {
                        d.events -= taken.events;
                    }
                    d.storage_bytes -= taken.storage_bytes;
                    d.api_keys -= taken.api_keys;
                    d.projections -= taken.projections;
                    d.pipelines -= taken.pipelines;
                }
                Err(StateError::VersionConflict { .. }) => {
                    conflicts += 1;
                    if conflicts >= MAX_FLUSH_ATTEMPTS {
                        return Err(GateError::Unavailable(
                            "usage counters keep changing on other nodes".into(),
                        ));
                    }
                    let (base, version) = self.read_counters(id).await?;
                    let mut c = lock(cell);
                    c.base = base;
                    c.version = version;
                }
                Err(StateError::Unavailable(why)) => return Err(GateError::Unavailable(why)),
                Err(e) => return Err(GateError::Internal(anyhow::anyhow!(e))),
            }
        }
        Ok(())
    }

    /// Writes every tenant's unwritten usage changes. The composition root calls it now and
    /// then and at shutdown, so the last changes of a quiet tenant are not left in memory.
    pub async fn flush_all(&self) {
        let cells: Vec<(TenantId, Arc<Mutex<UsageCell>>)> = lock(&self.inner.usage)
            .iter()
            .map(|(id, cell)| (id.clone(), cell.clone()))
            .collect();
        for (id, cell) in cells {
            if lock(&cell).delta.is_empty() {
                continue;
            }
            if let Err(e) = self.flush(&id, &cell).await {
                tracing::warn!(error = %e, tenant = id.as_str(), "usage counters not written yet");
            }
        }
    }

    async fn quotas_of(&self, id: &TenantId) -> Result<Quotas, GateError> {
        match self.cached(id).await? {
            Some(t) => Ok(t.quotas()),
            None => Err(GateError::TenantInactive(format!(
                "tenant '{}' does not exist",
                id.as_str()
            ))),
        }
    }

    fn exceeded(kind: QuotaKind, limit: u64, used: u64, now: DateTime<Utc>) -> QuotaExceeded {
        QuotaExceeded {
            quota: kind.as_str().to_owned(),
            limit,
            used,
            retry_after_secs: retry_after(kind, now),
        }
    }
}

#[async_trait]
impl TenantGate for Tenants {
    async fn check_active(&self, tenant: &TenantId) -> Result<(), GateError> {
        self.active(tenant).await.map(|_| ())
    }
}

impl Tenants {
    /// The rate limit of the tenant's tier, if the tenant exists and is active (one cached
    /// lookup for both, once per request).
    ///
    /// # Errors
    /// [`GateError::TenantInactive`] for a deactivated or unknown tenant; `Unavailable`/`Internal`.
    pub async fn active_rate_limit(&self, tenant: &TenantId) -> Result<RateLimit, GateError> {
        Ok(self.active(tenant).await?.rate_limit())
    }

    async fn active(&self, tenant: &TenantId) -> Result<Arc<Tenant>, GateError> {
        match self.cached(tenant).await? {
            Some(t) if t.active => Ok(t),
            Some(_) => Err(GateError::TenantInactive(format!(
                "tenant '{}' is deactivated",
                tenant.as_str()
            ))),
            None => Err(GateError::TenantInactive(format!(
                "tenant '{}' does not exist",
                tenant.as_str()
            ))),
        }
    }
}

#[async_trait]
impl QuotaGate for Tenants {
    async fn consume(
        &self,
        tenant: &TenantId,
        kind: QuotaKind,
        amount: u64,
    ) -> Result<(), GateError> {
        let limit = quota_limit(&self.quotas_of(tenant).await?, kind);
        let cell = self.loaded_cell(tenant).await?;
        let now = self.now();
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        {
            let mut c = lock(&cell);
            let used = c.used(kind, now);
            if let Some(limit) = limit
                && plus(used, amount) > limit
            {
                return Err(GateError::QuotaExceeded(Self::exceeded(
                    kind, limit, used, now,
                )));
            }
            c.add(kind, amount, now);
        }
        if kind == QuotaKind::QueriesPerHour {
            return Ok(());
        }
        if let Err(e) = self.flush(tenant, &cell).await {
            // Nothing taken after all.
            lock(&cell).add(kind, -amount, now);
            return Err(e);
        }
        Ok(())
    }

    async fn release(&self, tenant: &TenantId, kind: QuotaKind, amount: u64) {
        let Ok(cell) = self.loaded_cell(tenant).await else {
            tracing::warn!(
                tenant = tenant.as_str(),
                "usage counters unavailable; release lost"
            );
            return;
        };
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        lock(&cell).add(kind, -amount, self.now());
        if kind != QuotaKind::QueriesPerHour
            && let Err(e) = self.flush(tenant, &cell).await
        {
            tracing::warn!(error = %e, tenant = tenant.as_str(), "usage counters not written yet");
        }
    }
}

#[async_trait]
impl AppendGuard for Tenants {
    async fn before_append<'a>(
        &self,
        caller: &Caller,
        events: &[GuardedEvent<'a>],
        _batch: bool,
    ) -> Result<(), AppendError> {
        let gate = |e: GateError| match e {
            GateError::QuotaExceeded(q) => AppendError::QuotaExceeded(q),
            GateError::Unavailable(why) => AppendError::Unavailable(why),
            GateError::TenantInactive(why) => AppendError::Forbidden(why),
            GateError::Internal(e) => AppendError::Internal(e),
        };
        let quotas = self.quotas_of(caller.tenant()).await.map_err(gate)?;
        if quotas.max_events_per_day.is_none() && quotas.max_storage_bytes.is_none() {
            return Ok(());
        }
        let cell = self.loaded_cell(caller.tenant()).await.map_err(gate)?;
        let now = self.now();
        let count = events.len() as u64;
        let bytes: u64 = events.iter().map(|e| e.body_bytes as u64).sum();
        let c = lock(&cell);
        for (kind, amount) in [
            (QuotaKind::EventsPerDay, count),
            (QuotaKind::StorageBytes, bytes),
        ] {
            let used = c.used(kind, now);
            if let Some(limit) = quota_limit(&quotas, kind)
                && used.saturating_add(amount) > limit
            {
                return Err(AppendError::QuotaExceeded(Self::exceeded(
                    kind, limit, used, now,
                )));
            }
        }
        Ok(())
    }

    async fn after_append(
        &self,
        caller: &Caller,
        receipts: &[AppendReceipt],
        body_bytes: &[usize],
    ) {
        let (count, bytes) = body_bytes
            .iter()
            .zip(receipts)
            .filter(|(_, r)| !r.duplicate)
            .fold((0i64, 0i64), |(n, b), (bytes, _)| {
                (n + 1, b + *bytes as i64)
            });
        if count == 0 {
            return;
        }
        let tenant = caller.tenant();
        let cell = match self.loaded_cell(tenant).await {
            Ok(cell) => cell,
            Err(e) => {
                tracing::warn!(error = %e, tenant = tenant.as_str(), "append not counted");
                return;
            }
        };
        let now = self.now();
        let mut c = lock(&cell);
        c.add(QuotaKind::EventsPerDay, count, now);
        c.add(QuotaKind::StorageBytes, bytes, now);
        // Not written here: this node's checks read the cell (stored counters + delta), so
        // they are exact at once, and [`Tenants::flush_all`] writes the delta within a second.
        // A write per burst of appends put a state-store fsync beside every WAL fsync and
        // halved append throughput on one disk. What a crash can lose is at most that second
        // of counting, never an event.
    }
}

#[cfg(test)]
mod tests;

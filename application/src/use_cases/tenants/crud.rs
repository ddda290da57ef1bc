//! The tenant records and the use cases of `/api/v1/tenants`: create, read, list, update,
//! (de)activate, set quotas, delete. Records are cached for [`TENANT_CACHE_MILLIS`].

use std::sync::Arc;

use allsource_domain::{QuotaOverrides, RateLimit, Tenant, TenantId, TenantName, Tier};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::usage::{USAGE_KEY, quota_limit};
use super::{
    CreateTenantInput, TENANT_CACHE_MILLIS, TENANTS_NAMESPACE, TenantError, Tenants,
    USAGE_NAMESPACE, UpdateTenantInput, lock,
};
use crate::Caller;
use crate::quota::QuotaKind;
use crate::use_cases::params::{Errors, FieldError};

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
        QuotaKind::Subscriptions => &mut o.max_subscriptions,
        QuotaKind::Webhooks => &mut o.max_webhooks,
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

impl Tenants {
    fn require_operator(caller: &Caller) -> Result<(), TenantError> {
        if caller.is_operator() {
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
        caller.is_operator() || caller.tenant() == id
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
        self.purge_members(id).await?;
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
        if !caller.is_operator() {
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
        if id.is_reserved() {
            return Err(TenantError::Invalid(vec![FieldError::new(
                "id",
                format!(
                    "is reserved: ids starting with '{}' belong to the installation",
                    TenantId::RESERVED_PREFIX
                ),
            )]));
        }
        if id == TenantId::default_tenant() {
            return Err(TenantError::Conflict(
                "tenant 'default' exists already".into(),
            ));
        }
        if self.load(&id).await?.is_some() {
            return Err(TenantError::Conflict(format!(
                "tenant '{}' exists already",
                id.as_str()
            )));
        }
        // Whatever an earlier tenant of this id left behind (an interrupted deletion) goes
        // first: a new tenant starts with no users, keys or logins.
        self.purge_members(&id).await?;
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

    /// `DELETE /api/v1/tenants/{id}`: the record, its usage counters, and (through the
    /// registered [`TenantMembers`](super::TenantMembers)) its users, API keys and logins.
    /// Its credentials are refused from then on; its events stay in the store.
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
        // The record is gone, so every credential of the tenant is refused from here on;
        // then what the tenant's users, keys and logins left behind goes too.
        self.purge_members(&tenant.id).await?;
        self.inner
            .store
            .delete(&tenant.id, USAGE_NAMESPACE, USAGE_KEY)
            .await?;
        lock(&self.inner.usage).remove(&tenant.id);
        self.audit(caller, "tenant.delete", &tenant.id, serde_json::Value::Null)
            .await;
        Ok(())
    }
}

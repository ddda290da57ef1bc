//! The gates other use cases consult: [`TenantGate`] (is the tenant active?), [`QuotaGate`]
//! (take and give back quota) and the [`AppendGuard`] of appends (events per day and storage
//! bytes: checked before, counted after from the receipts).

use std::sync::Arc;

use allsource_domain::{Quotas, RateLimit, Tenant, TenantId};
use async_trait::async_trait;

use super::usage::{plus, quota_limit};
use super::{Tenants, lock};
use crate::Caller;
use crate::ports::AppendReceipt;
use crate::quota::{GateError, QuotaGate, QuotaKind, TenantGate};
use crate::use_cases::append::{AppendError, AppendGuard, GuardedEvent};

impl Tenants {
    async fn quotas_of(&self, id: &TenantId) -> Result<Quotas, GateError> {
        match self.cached(id).await? {
            Some(t) => Ok(t.quotas()),
            None => Err(GateError::TenantInactive(format!(
                "tenant '{}' does not exist",
                id.as_str()
            ))),
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

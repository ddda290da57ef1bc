//! Usage counting: one in-memory cell per tenant (the stored counters and the delta not yet
//! written), flushed to the state store with compare-and-set so that nodes add up, never
//! overwrite; and the stats use case that shows usage against quotas.

use std::sync::{Arc, Mutex};

use allsource_domain::Quotas;
use allsource_domain::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{QuotaUsage, TenantError, TenantStats, Tenants, USAGE_NAMESPACE, lock};
use crate::Caller;
use crate::ports::StateError;
use crate::quota::{GateError, QuotaExceeded, QuotaKind};

/// The key of the counters in [`USAGE_NAMESPACE`].
pub(super) const USAGE_KEY: &str = "counters";
/// Writes of one tenant's counters that conflict with other nodes in a row before giving up.
const MAX_FLUSH_ATTEMPTS: usize = 32;
/// Writes one flush makes before it returns: under steady load the delta never empties, and
/// no caller may be kept waiting for ever. What is left goes out with the next flush.
const MAX_FLUSH_WRITES: usize = 3;
/// `Retry-After` of quotas that do not refill with time (storage, keys, projections, pipelines).
const NON_PERIODIC_RETRY_SECS: u64 = 60;

/// The limit of one quota kind.
pub fn quota_limit(quotas: &Quotas, kind: QuotaKind) -> Option<u64> {
    match kind {
        QuotaKind::EventsPerDay => quotas.max_events_per_day,
        QuotaKind::StorageBytes => quotas.max_storage_bytes,
        QuotaKind::QueriesPerHour => quotas.max_queries_per_hour,
        QuotaKind::ApiKeys => quotas.max_api_keys,
        QuotaKind::Projections => quotas.max_projections,
        QuotaKind::Pipelines => quotas.max_pipelines,
        QuotaKind::Subscriptions => quotas.max_subscriptions,
        QuotaKind::Webhooks => quotas.max_webhooks,
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
    /// Absent in records written before webhooks existed.
    #[serde(default)]
    webhooks: u64,
}

/// Changes not yet written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Delta {
    /// The day `events` belongs to.
    day: i64,
    events: i64,
    storage_bytes: i64,
    api_keys: i64,
    projections: i64,
    pipelines: i64,
    webhooks: i64,
}

impl Delta {
    pub(super) fn is_empty(&self) -> bool {
        self.events == 0
            && self.storage_bytes == 0
            && self.api_keys == 0
            && self.projections == 0
            && self.pipelines == 0
            && self.webhooks == 0
    }
}

pub(super) fn plus(base: u64, delta: i64) -> u64 {
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
        webhooks: plus(base.webhooks, delta.webhooks),
    }
}

/// One tenant's usage on this node.
#[derive(Debug, Default)]
pub(super) struct UsageCell {
    loaded: bool,
    base: Counters,
    version: u64,
    pub(super) delta: Delta,
    pub(super) flushing: bool,
    hour: i64,
    queries: u64,
    /// Open subscriptions on this node: in memory only.
    subscriptions: u64,
}

impl UsageCell {
    pub(super) fn used(&self, kind: QuotaKind, now: DateTime<Utc>) -> u64 {
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
            QuotaKind::Webhooks => c.webhooks,
            QuotaKind::Subscriptions => self.subscriptions,
        }
    }

    pub(super) fn add(&mut self, kind: QuotaKind, amount: i64, now: DateTime<Utc>) {
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
            QuotaKind::Webhooks => d.webhooks += amount,
            QuotaKind::Subscriptions => self.subscriptions = plus(self.subscriptions, amount),
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

impl Tenants {
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
                crate::use_cases::ReadError::Unavailable(why) => TenantError::Unavailable(why),
                other => TenantError::Internal(anyhow::anyhow!(other.to_string())),
            })?;
        Ok(TenantStats {
            tenant,
            usage,
            events,
        })
    }

    pub(super) fn cell(&self, id: &TenantId) -> Arc<Mutex<UsageCell>> {
        lock(&self.inner.usage)
            .entry(id.clone())
            .or_default()
            .clone()
    }

    /// The tenant's usage cell, its counters read from the state store on first use.
    pub(super) async fn loaded_cell(
        &self,
        id: &TenantId,
    ) -> Result<Arc<Mutex<UsageCell>>, GateError> {
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
    pub(super) async fn flush(
        &self,
        id: &TenantId,
        cell: &Mutex<UsageCell>,
    ) -> Result<(), GateError> {
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
                    d.webhooks -= taken.webhooks;
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

    pub(super) fn exceeded(
        kind: QuotaKind,
        limit: u64,
        used: u64,
        now: DateTime<Utc>,
    ) -> QuotaExceeded {
        QuotaExceeded {
            quota: kind.as_str().to_owned(),
            limit,
            used,
            retry_after_secs: retry_after(kind, now),
        }
    }
}

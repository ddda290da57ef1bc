//! `StateAuditLog`: the audit log kept through the [`StateStore`] port, so it is as durable as
//! the installation's state (the file state store of the embedded backend, PostgreSQL, or
//! memory) with no storage of its own.
//!
//! # Layout in the state store
//! - namespace `audit` of the record's tenant, key = the record's UUIDv7 id (ids sort by time,
//!   so the store's key order is time order and a query is a range scan), value = the record;
//! - namespace `audit.tenants` of tenant `default`: one key per tenant that has records, so
//!   an operator's query over every tenant knows where to look.
//!
//! # Volume
//! Every record is a key of the state store; the file state store keeps all its keys in memory
//! (about 0.5-1 KiB per record). [`StateAuditLog::prune`] removes records older than a cutoff;
//! the server runs it hourly with `audit.retention_days` (default 90, 0 keeps everything).
//! Installations that must keep years of audit should use the postgres backend.

use std::collections::HashSet;
use std::sync::Arc;

use allsource_application::ports::{
    AuditError, AuditLog, AuditQuery, AuditRecord, StateError, StateStore,
};
use allsource_domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;

use super::memory::matches;

/// Namespace of the records, in each tenant.
pub const AUDIT_NAMESPACE: &str = "audit";
/// Namespace, in tenant `default`, listing the tenants that have records.
pub const AUDIT_TENANTS_NAMESPACE: &str = "audit.tenants";

/// Keys read per state-store call while scanning.
const PAGE: usize = 500;

/// The audit log over a state store.
pub struct StateAuditLog {
    state: Arc<dyn StateStore>,
    /// Tenants already listed in `audit.tenants` by this process.
    known_tenants: Mutex<HashSet<String>>,
}

fn translate(e: StateError) -> AuditError {
    match e {
        StateError::Unavailable(why) => AuditError::Unavailable(why),
        StateError::VersionConflict { expected, current } => AuditError::Internal(anyhow::anyhow!(
            "audit record written twice (expected {expected}, current {current})"
        )),
        StateError::Internal(e) => AuditError::Internal(e),
    }
}

fn tenant(raw: &str) -> Result<TenantId, AuditError> {
    TenantId::parse(raw)
        .map_err(|e| AuditError::Internal(anyhow::anyhow!("audit record tenant '{raw}': {e}")))
}

/// The milliseconds since the epoch of a UUIDv7 key, if it is one.
fn key_millis(key: &str) -> Option<i64> {
    let (seconds, nanos) = uuid::Uuid::parse_str(key).ok()?.get_timestamp()?.to_unix();
    Some(i64::try_from(seconds).ok()? * 1000 + i64::from(nanos / 1_000_000))
}

/// A key below every UUIDv7 of `at` and later, above every one before it.
fn key_floor(at: DateTime<Utc>) -> String {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        ms >> 16,
        ms & 0xffff
    )
}

impl StateAuditLog {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Self {
            state,
            known_tenants: Mutex::new(HashSet::new()),
        }
    }

    /// Every tenant that has records.
    async fn tenants(&self) -> Result<Vec<String>, AuditError> {
        let mut tenants = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .state
                .list(
                    &TenantId::default_tenant(),
                    AUDIT_TENANTS_NAMESPACE,
                    None,
                    after.take(),
                    PAGE,
                )
                .await
                .map_err(translate)?;
            let done = page.len() < PAGE;
            after = page.last().map(|(k, _)| k.clone());
            tenants.extend(page.into_iter().map(|(k, _)| k));
            if done {
                return Ok(tenants);
            }
        }
    }

    /// Matching records of one tenant, oldest first, at most `query.limit`.
    async fn scan(
        &self,
        tenant: &TenantId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        // Ids and timestamps are taken a moment apart: a second of slack on both ends.
        let floor = query.since.map(|s| key_floor(s - Duration::seconds(1)));
        let mut after = match (query.after.clone(), floor) {
            (Some(a), Some(f)) => Some(a.max(f)),
            (a, f) => a.or(f),
        };
        let stop_after_ms = query
            .until
            .map(|u| (u + Duration::seconds(1)).timestamp_millis());
        let mut found = Vec::new();
        while found.len() < query.limit {
            let page = self
                .state
                .list(tenant, AUDIT_NAMESPACE, None, after.take(), PAGE)
                .await
                .map_err(translate)?;
            let done = page.len() < PAGE;
            after = page.last().map(|(k, _)| k.clone());
            for (key, entry) in page {
                if let (Some(stop), Some(ms)) = (stop_after_ms, key_millis(&key))
                    && ms > stop
                {
                    return Ok(found);
                }
                let record: AuditRecord = match serde_json::from_value(entry.value) {
                    Ok(record) => record,
                    Err(e) => {
                        tracing::error!(%key, error = %e, "unreadable audit record skipped");
                        continue;
                    }
                };
                if matches(query, &record) {
                    found.push(record);
                    if found.len() == query.limit {
                        return Ok(found);
                    }
                }
            }
            if done {
                break;
            }
        }
        Ok(found)
    }

    /// Removes the records written before `cutoff`; returns how many.
    ///
    /// # Errors
    /// Storage errors (what was removed before stays removed).
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<usize, AuditError> {
        let cutoff_ms = cutoff.timestamp_millis();
        let mut removed = 0;
        for raw in self.tenants().await? {
            let Ok(tenant) = TenantId::parse(&raw) else {
                continue;
            };
            'tenant: loop {
                let page = self
                    .state
                    .list(&tenant, AUDIT_NAMESPACE, None, None, PAGE)
                    .await
                    .map_err(translate)?;
                if page.is_empty() {
                    break;
                }
                for (key, _) in &page {
                    if key_millis(key).is_none_or(|ms| ms >= cutoff_ms) {
                        break 'tenant;
                    }
                    if self
                        .state
                        .delete(&tenant, AUDIT_NAMESPACE, key)
                        .await
                        .map_err(translate)?
                    {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl AuditLog for StateAuditLog {
    async fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        let tenant = tenant(&record.tenant_id)?;
        let id = record.id.clone();
        let value = serde_json::to_value(&record).map_err(|e| AuditError::Internal(e.into()))?;
        // Expected version 0: a record is written once and never changed.
        self.state
            .put(&tenant, AUDIT_NAMESPACE, &id, value, Some(0))
            .await
            .map_err(translate)?;
        let new_tenant = !self.known_tenants.lock().contains(tenant.as_str());
        if new_tenant {
            self.state
                .put(
                    &TenantId::default_tenant(),
                    AUDIT_TENANTS_NAMESPACE,
                    tenant.as_str(),
                    serde_json::json!({}),
                    None,
                )
                .await
                .map_err(translate)?;
            self.known_tenants.lock().insert(tenant.as_str().to_owned());
        }
        Ok(())
    }

    async fn query(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let tenants = match &query.tenant_id {
            Some(t) => vec![t.clone()],
            None => self.tenants().await?,
        };
        let mut records = Vec::new();
        for raw in tenants {
            // A tenant id that cannot exist has no records.
            let Ok(tenant) = TenantId::parse(&raw) else {
                continue;
            };
            records.extend(self.scan(&tenant, &query).await?);
        }
        // Each tenant's scan is in id order; merged, the first `limit` ids are the answer.
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records.truncate(query.limit);
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use allsource_application::ports::AuditOutcome;

    use super::*;
    use crate::state::MemoryStateStore;

    fn log() -> StateAuditLog {
        StateAuditLog::new(Arc::new(MemoryStateStore::new()))
    }

    fn at(record: AuditRecord, ms: i64) -> AuditRecord {
        let timestamp = DateTime::from_timestamp_millis(ms).unwrap();
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(ms / 1000).unwrap(),
            u32::try_from((ms % 1000) * 1_000_000).unwrap(),
        ));
        AuditRecord {
            id: id.to_string(),
            timestamp,
            ..record
        }
    }

    fn rec(tenant: &str, action: &str) -> AuditRecord {
        AuditRecord::new(tenant, "user:1", action, AuditOutcome::Success)
    }

    fn ids(records: &[AuditRecord]) -> Vec<String> {
        records.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn key_floors_sort_between_milliseconds() {
        let ms = 1_764_000_000_123;
        let t = DateTime::from_timestamp_millis(ms).unwrap();
        let record = at(rec("a", "x"), ms);
        let before = at(rec("a", "x"), ms - 1);
        assert!(key_floor(t) < record.id);
        assert!(key_floor(t) > before.id);
        assert_eq!(key_millis(&record.id), Some(ms));
        assert_eq!(key_millis("not-a-key"), None);
    }

    #[tokio::test]
    async fn records_are_kept_per_tenant_and_read_in_time_order() {
        let log = log();
        let base = 1_764_000_000_000;
        let a1 = at(rec("acme", "auth.login"), base);
        let g1 = at(rec("globex", "auth.login"), base + 10);
        let a2 = at(rec("acme", "policy.decision"), base + 20);
        for r in [&a2, &g1, &a1] {
            log.record(r.clone()).await.unwrap();
        }
        let query = |tenant: Option<&str>| AuditQuery {
            tenant_id: tenant.map(str::to_owned),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(&log.query(query(Some("acme"))).await.unwrap()),
            ids(&[a1.clone(), a2.clone()])
        );
        assert_eq!(
            ids(&log.query(query(None)).await.unwrap()),
            ids(&[a1.clone(), g1.clone(), a2.clone()])
        );
        assert!(log.query(query(Some("nobody"))).await.unwrap().is_empty());
        assert!(
            log.query(query(Some("not a tenant")))
                .await
                .unwrap()
                .is_empty()
        );
        let limited = AuditQuery {
            limit: 2,
            ..query(None)
        };
        assert_eq!(
            ids(&log.query(limited).await.unwrap()),
            ids(&[a1.clone(), g1.clone()])
        );
    }

    #[tokio::test]
    async fn filters_cursor_and_time_range_over_many_pages() {
        let log = log();
        let base = 1_764_000_000_000;
        let mut all = Vec::new();
        for i in 0..1200 {
            let action = if i % 3 == 0 {
                "auth.login"
            } else {
                "user.create"
            };
            let r = at(rec("acme", action), base + i * 1000);
            log.record(r.clone()).await.unwrap();
            all.push(r);
        }
        let q = AuditQuery {
            tenant_id: Some("acme".into()),
            action: Some("auth.".into()),
            since: Some(all[600].timestamp),
            until: Some(all[900].timestamp),
            limit: 1000,
            ..Default::default()
        };
        let found = log.query(q.clone()).await.unwrap();
        let expected: Vec<_> = all[600..900]
            .iter()
            .filter(|r| r.action == "auth.login")
            .cloned()
            .collect();
        assert_eq!(ids(&found), ids(&expected));
        let page = log
            .query(AuditQuery {
                after: Some(expected[49].id.clone()),
                limit: 10,
                ..q
            })
            .await
            .unwrap();
        assert_eq!(ids(&page), ids(&expected[50..60]));
    }

    #[tokio::test]
    async fn prune_removes_only_old_records_of_every_tenant() {
        let log = log();
        let base = 1_764_000_000_000;
        let old_a = at(rec("acme", "x"), base);
        let old_g = at(rec("globex", "x"), base + 1);
        let new_a = at(rec("acme", "x"), base + 60_000);
        for r in [&old_a, &old_g, &new_a] {
            log.record(r.clone()).await.unwrap();
        }
        let cutoff = DateTime::from_timestamp_millis(base + 30_000).unwrap();
        assert_eq!(log.prune(cutoff).await.unwrap(), 2);
        let left = log
            .query(AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ids(&left), ids(&[new_a]));
        assert_eq!(log.prune(cutoff).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn storage_failures_become_audit_errors() {
        let mut state = allsource_application::ports::MockStateStore::new();
        state
            .expect_put()
            .returning(|_, _, _, _, _| Err(StateError::Unavailable("disk".into())));
        let log = StateAuditLog::new(Arc::new(state));
        assert!(matches!(
            log.record(rec("acme", "x")).await,
            Err(AuditError::Unavailable(_))
        ));
        assert!(matches!(
            log.record(rec("not a tenant", "x")).await,
            Err(AuditError::Internal(_))
        ));
    }
}

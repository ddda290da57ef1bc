//! `MemoryAuditLog`: the audit log in a vector. Nothing durable; for tests and `--dev`.

use allsource_application::ports::{AuditError, AuditLog, AuditQuery, AuditRecord};
use async_trait::async_trait;
use parking_lot::Mutex;

/// An in-memory audit log.
#[derive(Default)]
pub struct MemoryAuditLog {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAuditLog {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Whether `record` passes every filter of `query` (the cursor and limit aside).
pub fn matches(query: &AuditQuery, record: &AuditRecord) -> bool {
    query
        .tenant_id
        .as_ref()
        .is_none_or(|t| *t == record.tenant_id)
        && query.actor.as_ref().is_none_or(|a| *a == record.actor)
        && query.action.as_ref().is_none_or(|a| {
            if a.ends_with('.') {
                record.action.starts_with(a.as_str())
            } else {
                *a == record.action
            }
        })
        && query.outcome.is_none_or(|o| o == record.outcome)
        && query.since.is_none_or(|s| record.timestamp >= s)
        && query.until.is_none_or(|u| record.timestamp < u)
        && query.after.as_ref().is_none_or(|c| record.id > *c)
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.records.lock().push(record);
        Ok(())
    }

    async fn query(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self
            .records
            .lock()
            .iter()
            .filter(|r| matches(&query, r))
            .take(query.limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use allsource_application::ports::AuditOutcome;

    use super::*;

    #[tokio::test]
    async fn filters_by_every_field_and_pages_by_id() {
        let log = MemoryAuditLog::new();
        let a = AuditRecord::new("acme", "user:1", "auth.login", AuditOutcome::Success);
        let b = AuditRecord::new("acme", "anonymous", "auth.login", AuditOutcome::Failure);
        let c = AuditRecord::new("globex", "user:2", "tenant.update", AuditOutcome::Success);
        for r in [&a, &b, &c] {
            log.record(r.clone()).await.unwrap();
        }
        let q = |query: AuditQuery| {
            let log = &log;
            async move {
                log.query(AuditQuery { limit: 10, ..query })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            q(AuditQuery::default()).await,
            vec![a.id.clone(), b.id.clone(), c.id.clone()]
        );
        let acme = AuditQuery {
            tenant_id: Some("acme".into()),
            ..Default::default()
        };
        assert_eq!(q(acme).await, vec![a.id.clone(), b.id.clone()]);
        let auth = AuditQuery {
            action: Some("auth.".into()),
            ..Default::default()
        };
        assert_eq!(q(auth).await, vec![a.id.clone(), b.id.clone()]);
        let failed = AuditQuery {
            outcome: Some(AuditOutcome::Failure),
            ..Default::default()
        };
        assert_eq!(q(failed).await, vec![b.id.clone()]);
        let after = AuditQuery {
            after: Some(a.id.clone()),
            ..Default::default()
        };
        assert_eq!(q(after).await, vec![b.id.clone(), c.id.clone()]);
    }
}

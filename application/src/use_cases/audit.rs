//! The audit trail: recording security-relevant actions without ever failing the request that
//! caused them, and reading them back (`GET /api/v1/audit`).
//!
//! # Who sees what
//! An admin sees the records of its own tenant. Admins of the `default` tenant are the
//! operators of the installation: they may pass `tenant_id` to read another tenant's records
//! (or `tenant_id=*` for every tenant). Anyone else naming a tenant other than their own gets
//! a 403.

use std::sync::Arc;

use allsource_domain::TenantId;

use crate::Caller;
use crate::ports::{AuditError, AuditLog, AuditOutcome, AuditQuery, AuditRecord};

use super::FieldError;
use super::params::{Errors, limit, timestamp};

/// Records per page when `limit` is not given.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// Largest page.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// The raw filters of `GET /api/v1/audit`, as they came in the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQueryInput {
    pub tenant_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// One page of audit records, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// More records match after the last one; pass `next_cursor` as `after`.
    pub has_more: bool,
    /// The id of the last record, when there are more.
    pub next_cursor: Option<String>,
}

/// Why an audit query failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditQueryError {
    /// 400: invalid filters.
    #[error("invalid audit filters")]
    Invalid(Vec<FieldError>),
    /// 403: another tenant's records, asked by someone who is not an operator.
    #[error("{0}")]
    Forbidden(String),
    /// 503.
    #[error("audit storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<AuditError> for AuditQueryError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Unavailable(why) => Self::Unavailable(why),
            AuditError::Internal(e) => Self::Internal(e),
        }
    }
}

/// The audit trail use cases (cheap to clone).
#[derive(Clone)]
pub struct AuditTrail {
    log: Arc<dyn AuditLog>,
}

impl AuditTrail {
    pub fn new(log: Arc<dyn AuditLog>) -> Self {
        Self { log }
    }

    /// The port, for other use cases that record.
    pub fn log(&self) -> &Arc<dyn AuditLog> {
        &self.log
    }

    /// Records an action. A failure is logged, never returned: the audit log must not turn a
    /// refused request into a 500, nor undo an action that has happened.
    pub async fn record(&self, record: AuditRecord) {
        record_or_log(self.log.as_ref(), record).await;
    }

    /// Records matching the filters, oldest first.
    ///
    /// # Errors
    /// `Invalid` (400) for bad filters, `Forbidden` (403) for another tenant's records when the
    /// caller is not an operator, `Unavailable`/`Internal` from the log.
    pub async fn query(
        &self,
        caller: &Caller,
        input: AuditQueryInput,
    ) -> Result<AuditPage, AuditQueryError> {
        let mut errors = Errors::default();
        let operator = caller.is_operator();
        let tenant_id = match input.tenant_id.as_deref() {
            None => Some(caller.tenant().as_str().to_owned()),
            Some(t) if t == caller.tenant().as_str() => Some(t.to_owned()),
            Some(_) if !operator => {
                return Err(AuditQueryError::Forbidden(
                    "only admins of the 'default' tenant may read another tenant's audit log"
                        .into(),
                ));
            }
            Some("*") => None,
            Some(t) => errors.check(
                "tenant_id",
                TenantId::parse(t).map(|t| t.as_str().to_owned()),
            ),
        };
        let outcome = errors.optional("outcome", input.outcome.as_deref(), |raw| {
            Ok(match raw {
                "success" => AuditOutcome::Success,
                "failure" => AuditOutcome::Failure,
                "denied" => AuditOutcome::Denied,
                "warned" => AuditOutcome::Warned,
                _ => {
                    return Err(allsource_domain::InvalidValue(
                        "must be one of success, failure, denied, warned".into(),
                    ));
                }
            })
        });
        let since = errors.optional("since", input.since.as_deref(), timestamp);
        let until = errors.optional("until", input.until.as_deref(), timestamp);
        let after = errors.optional("after", input.after.as_deref(), |raw| {
            uuid::Uuid::parse_str(raw)
                .map(|id| id.to_string())
                .map_err(|_| {
                    allsource_domain::InvalidValue(
                        "must be the id of an audit record (next_cursor of the last page)".into(),
                    )
                })
        });
        let page_size = errors
            .optional("limit", input.limit.as_deref(), |raw| {
                limit(raw, MAX_AUDIT_LIMIT)
            })
            .unwrap_or(DEFAULT_AUDIT_LIMIT);
        for (field, value) in [("actor", &input.actor), ("action", &input.action)] {
            if value
                .as_ref()
                .is_some_and(|v| v.is_empty() || v.len() > 256)
            {
                errors.push(field, "must be 1-256 characters");
            }
        }
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            errors.push("until", "must be after since");
        }
        if !errors.is_empty() {
            return Err(AuditQueryError::Invalid(errors.0));
        }
        let mut records = self
            .log
            .query(AuditQuery {
                tenant_id,
                actor: input.actor,
                action: input.action,
                outcome,
                since,
                until,
                after,
                // One more, to know whether there is a next page.
                limit: page_size + 1,
            })
            .await?;
        let has_more = records.len() > page_size;
        records.truncate(page_size);
        let next_cursor = if has_more {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(AuditPage {
            records,
            has_more,
            next_cursor,
        })
    }
}

/// Records to `log`, logging (never returning) a failure.
pub async fn record_or_log(log: &dyn AuditLog, record: AuditRecord) {
    let action = record.action.clone();
    if let Err(error) = log.record(record).await {
        tracing::error!(%action, %error, "cannot write to the audit log");
    }
}

#[cfg(test)]
mod tests {
    use allsource_domain::Role;

    use super::*;
    use crate::Principal;
    use crate::ports::MockAuditLog;

    fn admin_of(tenant: &str) -> Caller {
        Caller::authenticated(
            TenantId::parse(tenant).unwrap(),
            Role::Admin,
            Principal::User {
                user_id: "u1".into(),
                username: "ann".into(),
            },
        )
    }

    fn trail(expect: impl FnOnce(&mut MockAuditLog)) -> AuditTrail {
        let mut log = MockAuditLog::new();
        expect(&mut log);
        AuditTrail::new(Arc::new(log))
    }

    fn records(n: usize) -> Vec<AuditRecord> {
        (0..n)
            .map(|_| AuditRecord::new("acme", "user:u1", "auth.login", AuditOutcome::Success))
            .collect()
    }

    #[tokio::test]
    async fn an_admin_reads_its_own_tenant_with_every_filter() {
        let trail = trail(|log| {
            log.expect_query()
                .withf(|q| {
                    q.tenant_id.as_deref() == Some("acme")
                        && q.actor.as_deref() == Some("user:u1")
                        && q.action.as_deref() == Some("auth.")
                        && q.outcome == Some(AuditOutcome::Denied)
                        && q.since.is_some()
                        && q.until.is_some()
                        && q.limit == 3
                })
                .times(1)
                .returning(|_| Ok(records(3)));
        });
        let page = trail
            .query(
                &admin_of("acme"),
                AuditQueryInput {
                    actor: Some("user:u1".into()),
                    action: Some("auth.".into()),
                    outcome: Some("denied".into()),
                    since: Some("2026-01-01T00:00:00Z".into()),
                    until: Some("2026-02-01T00:00:00Z".into()),
                    limit: Some("2".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.records.len(), 2);
        assert!(page.has_more);
        assert_eq!(page.next_cursor.as_ref(), Some(&page.records[1].id));
    }

    #[tokio::test]
    async fn the_last_page_has_no_cursor() {
        let trail = trail(|log| {
            log.expect_query()
                .withf(|q| q.limit == DEFAULT_AUDIT_LIMIT + 1)
                .returning(|_| Ok(records(1)));
        });
        let page = trail
            .query(&admin_of("acme"), AuditQueryInput::default())
            .await
            .unwrap();
        assert!(!page.has_more);
        assert_eq!(page.next_cursor, None);
    }

    #[tokio::test]
    async fn only_operators_read_other_tenants() {
        let never = || {
            trail(|log| {
                log.expect_query().never();
            })
        };
        let other = AuditQueryInput {
            tenant_id: Some("globex".into()),
            ..Default::default()
        };
        let err = never()
            .query(&admin_of("acme"), other.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, AuditQueryError::Forbidden(_)), "{err:?}");
        let all = AuditQueryInput {
            tenant_id: Some("*".into()),
            ..Default::default()
        };
        assert!(matches!(
            never().query(&admin_of("acme"), all.clone()).await,
            Err(AuditQueryError::Forbidden(_))
        ));
        let operator = trail(|log| {
            log.expect_query()
                .withf(|q| q.tenant_id.as_deref() == Some("globex"))
                .returning(|_| Ok(vec![]));
            log.expect_query()
                .withf(|q| q.tenant_id.is_none())
                .returning(|_| Ok(vec![]));
        });
        operator.query(&admin_of("default"), other).await.unwrap();
        operator.query(&admin_of("default"), all).await.unwrap();
    }

    #[tokio::test]
    async fn bad_filters_name_their_fields() {
        let trail = trail(|log| {
            log.expect_query().never();
        });
        let err = trail
            .query(
                &admin_of("default"),
                AuditQueryInput {
                    tenant_id: Some("no such/tenant".into()),
                    actor: Some(String::new()),
                    outcome: Some("meh".into()),
                    since: Some("yesterday".into()),
                    after: Some("not-a-uuid".into()),
                    limit: Some("1001".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        let AuditQueryError::Invalid(errors) = err else {
            panic!("{err:?}")
        };
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["actor", "after", "limit", "outcome", "since", "tenant_id"]
        );
        let err = trail
            .query(
                &admin_of("acme"),
                AuditQueryInput {
                    since: Some("2026-02-01T00:00:00Z".into()),
                    until: Some("2026-01-01T00:00:00Z".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AuditQueryError::Invalid(e) if e[0].field == "until"));
    }

    #[tokio::test]
    async fn a_failing_log_never_fails_the_recorder() {
        let trail = trail(|log| {
            log.expect_record()
                .times(1)
                .returning(|_| Err(AuditError::Unavailable("disk".into())));
            log.expect_query()
                .returning(|_| Err(AuditError::Unavailable("disk".into())));
        });
        trail
            .record(AuditRecord::new(
                "acme",
                "system",
                "x",
                AuditOutcome::Success,
            ))
            .await;
        assert!(matches!(
            trail
                .query(&admin_of("acme"), AuditQueryInput::default())
                .await,
            Err(AuditQueryError::Unavailable(_))
        ));
    }
}

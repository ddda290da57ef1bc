//! The `AuditLog` port: an append-only, durable record of security-relevant actions (logins and
//! their failures, users, API keys, tenants, quota changes, denials, policy decisions).
//!
//! # Contract
//! - `record` is durable when it returns `Ok` (under the adapter's durability); records are never
//!   changed or removed through this port.
//! - `query` returns records matching every given filter, oldest first, after the `after`
//!   cursor (a record id), at most `limit`.
//! - Record ids sort in the order records were written (UUIDv7).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Success,
    Failure,
    Denied,
    Warned,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Warned => "warned",
        }
    }
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// UUIDv7, so ids sort by time.
    pub id: String,
    pub timestamp: DateTime<Utc>,
    /// The tenant the action concerns.
    pub tenant_id: String,
    /// Who acted: `user:<id>`, `api_key:<id>`, `system`, or `anonymous` (failed logins).
    pub actor: String,
    /// What was done, dotted: `auth.login`, `user.create`, `api_key.revoke`, `tenant.update`,
    /// `quota.update`, `access.denied`, `policy.decision`, ...
    pub action: String,
    pub outcome: AuditOutcome,
    /// What it was done to (a user id, key id, tenant id, route), if anything.
    pub resource: Option<String>,
    /// Free-form details (never secrets).
    pub details: serde_json::Value,
    /// The request's `x-request-id`, when the action came over HTTP.
    pub request_id: Option<String>,
}

impl AuditRecord {
    /// A record stamped now with a fresh UUIDv7 id, no resource, details or request id.
    pub fn new(
        tenant_id: impl Into<String>,
        actor: impl Into<String>,
        action: impl Into<String>,
        outcome: AuditOutcome,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            timestamp: Utc::now(),
            tenant_id: tenant_id.into(),
            actor: actor.into(),
            action: action.into(),
            outcome,
            resource: None,
            details: serde_json::Value::Null,
            request_id: None,
        }
    }

    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    #[must_use]
    pub fn request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }
}

/// Filters of [`AuditLog::query`]; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub tenant_id: Option<String>,
    pub actor: Option<String>,
    /// Exact action, or a prefix when it ends with `.` (`auth.` matches `auth.login`).
    pub action: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only records after this id.
    pub after: Option<String>,
    pub limit: usize,
}

/// Why the audit log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The audit log.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends a record.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` only.
    async fn record(&self, record: AuditRecord) -> Result<(), AuditError>;

    /// Records matching the query, oldest first.
    ///
    /// # Errors
    /// `Unavailable`/`Internal` only.
    async fn query(&self, query: AuditQuery) -> Result<Vec<AuditRecord>, AuditError>;
}

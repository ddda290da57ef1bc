//! The `SqlEngine` port: read-only SQL over one tenant's events.
//!
//! # Contract (checked by the engine's tests in `allsource-infrastructure` for every source)
//! - The statement sees exactly one table, `events`, holding the tenant's events and no one
//!   else's, whatever the statement says (`OR 1=1`, subqueries, `UNION`, other table names).
//!   The tenant is part of the scan, not of the statement.
//! - Columns of `events`: `id` (UUID text), `entity_id`, `event_type`, `version`, `position`
//!   (unsigned integers), `timestamp` (microseconds, UTC), `payload` (the client's JSON text),
//!   `metadata` (JSON text or NULL). JSON path functions (`json_get_str(payload, 'a', 'b')`,
//!   `json_get_float`, `json_get_int`, `json_get_bool`, `json_get_json`, `json_as_text`,
//!   `json_contains`, `json_length`, and the `->`, `->>` operators) read the JSON columns.
//! - Only queries run: DDL, DML and other statements are refused with [`SqlError::Refused`].
//! - A statement that would return more than `limits.max_rows` rows fails with
//!   [`SqlError::TooManyRows`]; one running longer than `limits.timeout` is cancelled and fails
//!   with [`SqlError::Timeout`]; one needing more memory than the engine's pool fails with
//!   [`SqlError::ResourcesExhausted`]. None of them changes anything.
//! - The answer is a consistent cut of the log: every event at or below some position, none
//!   above it.

use std::time::Duration;

use allsource_domain::TenantId;
use async_trait::async_trait;

/// Bounds of one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Most rows the answer may have.
    pub max_rows: usize,
    /// Longest a statement may run.
    pub timeout: Duration,
}

/// The answer of a statement: column names, and rows as JSON values in column order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

impl Table {
    /// The index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement does not parse or plan (the engine's message, for the client).
    #[error("{0}")]
    Invalid(String),
    /// The statement is not a query (DDL, DML, SET, ...).
    #[error("{0}")]
    Refused(String),
    /// The answer would have more than this many rows.
    #[error("the result has more than {0} rows")]
    TooManyRows(usize),
    /// The statement ran longer than this.
    #[error("the statement ran longer than {0:?}")]
    Timeout(Duration),
    /// The statement needed more memory than the engine may use.
    #[error("{0}")]
    ResourcesExhausted(String),
    /// The storage cannot answer now.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Read-only SQL over a tenant's events.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SqlEngine: Send + Sync {
    /// Runs one statement over the tenant's `events` table.
    async fn run(&self, tenant: &TenantId, sql: &str, limits: SqlLimits)
    -> Result<Table, SqlError>;
}

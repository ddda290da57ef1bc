//! Analytics, the query DSL and SQL: the use cases behind `/api/v1/analytics/*`,
//! `POST /api/v1/query` and `POST /api/v1/sql`.
//!
//! One engine answers all three: every analytics route and every DSL query is a statement run
//! by the [`SqlEngine`] port (DataFusion in production) over the caller's tenant's `events`,
//! with what SQL cannot say well (calendar buckets with gaps filled, funnels, cohort offsets,
//! trends, anomaly scores, exact percentiles) computed afterwards by [`compute`].
//!
//! - [`compute`]: the pure computations.
//! - [`sql`]: SQL text — quoted literals, JSON paths, the DSL's conditions.
//! - [`routes`]: one function per route, parameters validated with field-named errors.

pub mod compute;
mod routes;
pub mod sql;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::Caller;
use crate::ports::{Clock, SqlEngine, SqlError, SqlLimits, Table};
use crate::use_cases::params::FieldError;

pub use routes::{CorrelationInput, DslAnswer, FrequencyInput, SummaryInput};

/// Bounds of the analytics, the DSL and SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyticsConfig {
    /// Longest time range a bucketed analysis may cover, in days.
    pub max_range_days: u32,
    /// Most buckets one answer may have (after gap filling).
    pub max_buckets: usize,
    /// Most rows a client's SQL statement may return.
    pub sql_max_rows: usize,
    /// Most rows an analysis may read back from the engine (the (bucket, group) rows of a
    /// series, the (cohort, period) rows of cohorts).
    pub scan_max_rows: usize,
    /// Longest a statement (the client's or an analysis's) may run.
    pub timeout: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            max_range_days: 3660,
            max_buckets: 10_000,
            sql_max_rows: 10_000,
            scan_max_rows: 1_000_000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why an analysis, a DSL query or a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// 400: invalid parameters, each named.
    #[error("invalid parameters")]
    Invalid(Vec<FieldError>),
    /// 400: the statement does not parse or plan, or is not a query.
    #[error("{0}")]
    BadStatement(String),
    /// 422: a row or memory bound was hit.
    #[error("{0}")]
    TooLarge(String),
    /// 408: the statement ran past the time limit.
    #[error("{0}")]
    Timeout(String),
    /// 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl AnalyticsError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<SqlError> for AnalyticsError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Invalid(why) | SqlError::Refused(why) => Self::BadStatement(why),
            SqlError::TooManyRows(n) => Self::TooLarge(format!(
                "the result has more than {n} rows: add a LIMIT or narrow the query"
            )),
            SqlError::ResourcesExhausted(why) => Self::TooLarge(why),
            SqlError::Timeout(limit) => Self::Timeout(format!(
                "the statement ran longer than the limit of {} ms and was cancelled",
                limit.as_millis()
            )),
            SqlError::Unavailable(why) => Self::Unavailable(why),
            SqlError::Internal(e) => Self::Internal(e),
        }
    }
}

/// The analytics use cases.
#[derive(Clone)]
pub struct Analytics {
    engine: Arc<dyn SqlEngine>,
    clock: Arc<dyn Clock>,
    config: AnalyticsConfig,
}

/// The answer of `POST /api/v1/sql`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlAnswer {
    pub columns: Vec<String>,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Analytics {
    pub fn new(engine: Arc<dyn SqlEngine>, clock: Arc<dyn Clock>, config: AnalyticsConfig) -> Self {
        Self {
            engine,
            clock,
            config,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs an internal statement with the scan bound.
    async fn scan(&self, caller: &Caller, statement: &str) -> Result<Table, AnalyticsError> {
        self.run(caller, statement, self.config.scan_max_rows).await
    }

    async fn run(
        &self,
        caller: &Caller,
        statement: &str,
        max_rows: usize,
    ) -> Result<Table, AnalyticsError> {
        let limits = SqlLimits {
            max_rows,
            timeout: self.config.timeout,
        };
        tracing::debug!(statement, "analytics statement");
        Ok(self.engine.run(caller.tenant(), statement, limits).await?)
    }

    /// `POST /api/v1/sql`: the client's statement, read-only, over its tenant's events.
    ///
    /// # Errors
    /// [`AnalyticsError::Invalid`] for an empty or missing query; [`AnalyticsError::BadStatement`]
    /// with the parser's message; `TooLarge`/`Timeout` at the bounds.
    pub async fn sql(
        &self,
        caller: &Caller,
        query: Option<&str>,
    ) -> Result<SqlAnswer, AnalyticsError> {
        let Some(query) = query.map(str::trim).filter(|q| !q.is_empty()) else {
            return Err(AnalyticsError::invalid(
                "query",
                "must be an SQL SELECT statement",
            ));
        };
        let table = self.run(caller, query, self.config.sql_max_rows).await?;
        let rows = table
            .rows
            .into_iter()
            .map(|row| table.columns.iter().cloned().zip(row).collect())
            .collect();
        Ok(SqlAnswer {
            columns: table.columns,
            rows,
        })
    }
}

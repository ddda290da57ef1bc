//! SQL over events with Apache DataFusion: the [`SqlEngine`] adapter.
//!
//! Each statement gets its own DataFusion session holding one table, `events`, opened for the
//! caller's tenant ([`table::EventsTable`]): the tenant is a property of the scan, so nothing in
//! the statement can widen it. Sessions refuse DDL, DML and other statements, have no
//! `information_schema` and no URL tables, and share one memory pool (the engine's bound).
//! Statements run on the engine's own runtime, so a heavy query competes for CPU with other
//! queries, not with appends on the server's runtime; a statement past its time limit is
//! cancelled (its task aborted, its streams dropped).
//!
//! - [`table`]: the `events` table (sealed Parquet files read directly, plus the tail read
//!   through the [`EventStore`] port).
//! - [`values`]: Arrow values as JSON.

pub mod table;
pub mod values;

use std::sync::Arc;

use allsource_application::ports::{EventStore, SqlEngine, SqlError, SqlLimits, Table};
use allsource_domain::TenantId;
use anyhow::Context;
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

pub use table::{SealedCut, SealedFiles};

/// How the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlEngineConfig {
    /// Threads of the engine's runtime (and partitions of a plan).
    pub threads: usize,
    /// Memory all running statements may hold together, in bytes.
    pub memory_bytes: usize,
}

impl Default for SqlEngineConfig {
    fn default() -> Self {
        Self {
            threads: 2,
            memory_bytes: 512 * 1024 * 1024,
        }
    }
}

/// The DataFusion engine.
pub struct DataFusionEngine {
    store: Arc<dyn EventStore>,
    sealed: Option<Arc<dyn SealedFiles>>,
    runtime: Option<tokio::runtime::Runtime>,
    env: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    config: SqlEngineConfig,
}

impl DataFusionEngine {
    /// An engine over `store`, reading `sealed` files directly where the store has them.
    ///
    /// # Errors
    /// When the engine's runtime or memory pool cannot be created.
    pub fn new(
        store: Arc<dyn EventStore>,
        sealed: Option<Arc<dyn SealedFiles>>,
        config: SqlEngineConfig,
    ) -> anyhow::Result<Self> {
        let threads = config.threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("allsource-sql")
            .enable_all()
            .build()
            .context("cannot start the SQL engine's runtime")?;
        let env = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_bytes.max(1024 * 1024), 1.0)
            .build_arc()
            .context("cannot create the SQL engine's memory pool")?;
        Ok(Self {
            store,
            sealed,
            runtime: Some(runtime),
            env,
            config: SqlEngineConfig { threads, ..config },
        })
    }

    fn session(&self) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(self.config.threads)
            .with_information_schema(false)
            .with_default_catalog_and_schema("allsource", "public");
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.env))
            .with_default_features()
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        if let Err(error) = datafusion_functions_json::register_all(&mut ctx) {
            tracing::warn!(%error, "cannot register the JSON functions");
        }
        ctx
    }
}

impl Drop for DataFusionEngine {
    fn drop(&mut self) {
        // Dropping a runtime blocks; the engine may be dropped inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait]
impl SqlEngine for DataFusionEngine {
    async fn run(
        &self,
        tenant: &TenantId,
        sql: &str,
        limits: SqlLimits,
    ) -> Result<Table, SqlError> {
        let Some(runtime) = &self.runtime else {
            return Err(SqlError::Unavailable("the SQL engine is shut down".into()));
        };
        let ctx = self.session();
        let table = table::EventsTable::open(
            tenant.clone(),
            Arc::clone(&self.store),
            self.sealed.as_deref(),
        )
        .await
        .map_err(|e| match e {
            allsource_application::ports::StoreError::Unavailable(why) => {
                SqlError::Unavailable(why)
            }
            allsource_application::ports::StoreError::Internal(e) => SqlError::Internal(e),
        })?;
        ctx.register_table("events", Arc::new(table))
            .map_err(|e| SqlError::Internal(anyhow::anyhow!("{e}")))?;
        let sql = sql.to_owned();
        let max_rows = limits.max_rows;
        let task = runtime.spawn(async move {
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let frame = ctx
                .sql_with_options(&sql, options)
                .await
                .map_err(|e| classify(&e))?;
            // Rows are pulled until one more than the bound has come: the plan itself is left
            // as the client wrote it (EXPLAIN must stay its root), and a huge answer is never
            // held whole.
            let schema = frame.schema().as_arrow().clone();
            let mut stream = frame.execute_stream().await.map_err(|e| classify(&e))?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| classify(&e))?;
                rows += batch.num_rows();
                batches.push(batch);
                if rows > max_rows {
                    return Err(SqlError::TooManyRows(max_rows));
                }
            }
            values::table_of(&schema, &batches, max_rows)
        });
        let abort = task.abort_handle();
        match tokio::time::timeout(limits.timeout, task).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(join)) => Err(SqlError::Internal(anyhow::anyhow!(
                "the statement's task failed: {join}"
            ))),
            Err(_) => {
                abort.abort();
                Err(SqlError::Timeout(limits.timeout))
            }
        }
    }
}

/// Sorts DataFusion's errors into the port's: the client's mistakes, refusals, bounds, and the
/// engine's own failures.
fn classify(error: &DataFusionError) -> SqlError {
    let root = error.find_root();
    match root {
        DataFusionError::ResourcesExhausted(why) => SqlError::ResourcesExhausted(format!(
            "the statement needs more memory than the engine may use: {why}"
        )),
        DataFusionError::External(inner) => {
            if let Some(unavailable) = inner.downcast_ref::<table::Unavailable>() {
                SqlError::Unavailable(unavailable.0.clone())
            } else {
                SqlError::Internal(anyhow::anyhow!("{inner}"))
            }
        }
        DataFusionError::IoError(e) => SqlError::Internal(anyhow::anyhow!("{e}")),
        DataFusionError::ObjectStore(e) => SqlError::Internal(anyhow::anyhow!("{e}")),
        DataFusionError::ParquetError(e) => SqlError::Internal(anyhow::anyhow!("{e}")),
        // An internal error of the planner reached by a statement is the statement's to fix
        // (a 400 naming it), not a failure of the server; it is logged for the engine's sake.
        DataFusionError::Internal(why) => {
            tracing::warn!(error = %why, "the SQL engine reported an internal error");
            SqlError::Invalid(why.clone())
        }
        DataFusionError::Plan(why) if is_refusal(why) => SqlError::Refused(why.clone()),
        other => SqlError::Invalid(other.strip_backtrace()),
    }
}

/// DataFusion's messages for statements its options refuse.
fn is_refusal(message: &str) -> bool {
    message.contains("not supported") && message.contains("DDL")
        || message.contains("DML not supported")
        || message.contains("Statement not supported")
}

#[cfg(test)]
mod analytics_tests;
#[cfg(test)]
mod tests;

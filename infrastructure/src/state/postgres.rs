//! `PostgresStateStore`: the state store in the table `allsource_state` (migration 0002), on
//! the same pool as [`PostgresStore`](crate::postgres::PostgresStore). Expectations are checked
//! by the `UPDATE ... WHERE version = $expected` itself, so concurrent writers on several nodes
//! cannot both win.
//!
//! A value nesting deeper than the reader parses ([`READABLE_NESTING`](super::READABLE_NESTING))
//! is refused on write. A row that cannot be read anyway (written by an older version, or by
//! hand) does not fail the reads of the others: a listing skips it, reporting it as an error
//! with its tenant, namespace and key, and a read of that key is an error naming it; the row
//! stays in the table for the operator to inspect.

use allsource_application::ports::{StateEntry, StateError, StateStore};
use allsource_domain::TenantId;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::{PgPool, Row};

use super::storable_text;
use crate::postgres::is_unavailable;

/// State in PostgreSQL.
#[derive(Clone)]
pub struct PostgresStateStore {
    pool: PgPool,
}

impl PostgresStateStore {
    /// Uses a pool whose database has the AllSource migrations applied
    /// (see [`PostgresStore::connect`](crate::postgres::PostgresStore::connect)).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn current_version(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<u64, StateError> {
        Ok(self
            .get(tenant, namespace, key)
            .await?
            .map_or(0, |e| e.version))
    }
}

fn state_error(e: sqlx::Error) -> StateError {
    if is_unavailable(&e) {
        StateError::Unavailable(format!("PostgreSQL is unavailable: {e}"))
    } else {
        StateError::Internal(anyhow::Error::new(e).context("postgres state store"))
    }
}

/// A row's entry (`value::text`, `version` at `offset`); `Ok(Err(reason))` when the value is
/// not readable JSON.
fn entry(
    row: &sqlx::postgres::PgRow,
    offset: usize,
) -> Result<Result<StateEntry, String>, StateError> {
    let text: String = row.try_get(offset).map_err(state_error)?;
    let version: i64 = row.try_get(offset + 1).map_err(state_error)?;
    Ok(serde_json::from_str::<Value>(&text)
        .map(|value| StateEntry {
            value,
            version: version as u64,
        })
        .map_err(|e| e.to_string()))
}

fn unreadable(tenant: &TenantId, namespace: &str, key: &str, reason: &str) -> String {
    format!("the state entry {tenant}/{namespace}/{key} cannot be read: {reason}")
}

#[async_trait]
impl StateStore for PostgresStateStore {
    async fn get(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StateEntry>, StateError> {
        let row = sqlx::query(
            "SELECT value::text, version FROM allsource_state \
             WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
        )
        .bind(tenant.as_str())
        .bind(namespace)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(state_error)?;
        let Some(row) = row else { return Ok(None) };
        match entry(&row, 0)? {
            Ok(entry) => Ok(Some(entry)),
            Err(reason) => Err(StateError::Internal(anyhow::anyhow!(unreadable(
                tenant, namespace, key, &reason
            )))),
        }
    }

    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
        value: Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let value = storable_text(&value, tenant.as_str(), namespace, key)?;
        let written: Option<i64> = match expected {
            None => sqlx::query_scalar(
                "INSERT INTO allsource_state (tenant_id, namespace, key, value, version) \
                 VALUES ($1, $2, $3, $4::jsonb, 1) \
                 ON CONFLICT (tenant_id, namespace, key) DO UPDATE \
                 SET value = EXCLUDED.value, version = allsource_state.version + 1, updated_at = now() \
                 RETURNING version",
            )
            .bind(tenant.as_str())
            .bind(namespace)
            .bind(key)
            .bind(&value)
            .fetch_optional(&self.pool)
            .await
            .map_err(state_error)?,
            Some(0) => sqlx::query_scalar(
                "INSERT INTO allsource_state (tenant_id, namespace, key, value, version) \
                 VALUES ($1, $2, $3, $4::jsonb, 1) ON CONFLICT DO NOTHING RETURNING version",
            )
            .bind(tenant.as_str())
            .bind(namespace)
            .bind(key)
            .bind(&value)
            .fetch_optional(&self.pool)
            .await
            .map_err(state_error)?,
            Some(v) => sqlx::query_scalar(
                "UPDATE allsource_state SET value = $4::jsonb, version = version + 1, updated_at = now() \
                 WHERE tenant_id = $1 AND namespace = $2 AND key = $3 AND version = $5 \
                 RETURNING version",
            )
            .bind(tenant.as_str())
            .bind(namespace)
            .bind(key)
            .bind(&value)
            .bind(i64::try_from(v).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool)
            .await
            .map_err(state_error)?,
        };
        match (written, expected) {
            (Some(version), _) => Ok(version as u64),
            (None, Some(expected)) => Err(StateError::VersionConflict {
                expected,
                current: self.current_version(tenant, namespace, key).await?,
            }),
            (None, None) => Err(StateError::Internal(anyhow::anyhow!(
                "unconditional state write returned no version"
            ))),
        }
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<bool, StateError> {
        let deleted = sqlx::query(
            "DELETE FROM allsource_state WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
        )
        .bind(tenant.as_str())
        .bind(namespace)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(state_error)?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        let rows = sqlx::query(
            "SELECT key, value::text, version FROM allsource_state \
             WHERE tenant_id = $1 AND namespace = $2 \
               AND ($3::text IS NULL OR starts_with(key, $3)) \
               AND ($4::text IS NULL OR key COLLATE \"C\" > $4) \
             ORDER BY key COLLATE \"C\" LIMIT $5",
        )
        .bind(tenant.as_str())
        .bind(namespace)
        .bind(prefix)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(state_error)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: String = row.try_get(0).map_err(state_error)?;
            match entry(row, 1)? {
                Ok(entry) => entries.push((key, entry)),
                Err(reason) => tracing::error!(
                    tenant = %tenant,
                    namespace,
                    key,
                    "{}; the listing leaves it out",
                    unreadable(tenant, namespace, &key, &reason)
                ),
            }
        }
        Ok(entries)
    }
}

//! `PostgresStateStore`: the state store in the table `allsource_state` (migration 0002), on
//! the same pool as [`PostgresStore`](crate::postgres::PostgresStore). Expectations are checked
//! by the `UPDATE ... WHERE version = $expected` itself, so concurrent writers on several nodes
//! cannot both win.

use allsource_application::ports::{StateEntry, StateError, StateStore};
use allsource_domain::TenantId;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::{PgPool, Row};

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

fn entry(row: &sqlx::postgres::PgRow, offset: usize) -> Result<StateEntry, StateError> {
    let value: Value = row.try_get(offset).map_err(state_error)?;
    let version: i64 = row.try_get(offset + 1).map_err(state_error)?;
    Ok(StateEntry {
        value,
        version: version as u64,
    })
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
            "SELECT value, version FROM allsource_state \
             WHERE tenant_id = $1 AND namespace = $2 AND key = $3",
        )
        .bind(tenant.as_str())
        .bind(namespace)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(state_error)?;
        row.map(|r| entry(&r, 0)).transpose()
    }

    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
        value: Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let written: Option<i64> = match expected {
            None => sqlx::query_scalar(
                "INSERT INTO allsource_state (tenant_id, namespace, key, value, version) \
                 VALUES ($1, $2, $3, $4, 1) \
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
                 VALUES ($1, $2, $3, $4, 1) ON CONFLICT DO NOTHING RETURNING version",
            )
            .bind(tenant.as_str())
            .bind(namespace)
            .bind(key)
            .bind(&value)
            .fetch_optional(&self.pool)
            .await
            .map_err(state_error)?,
            Some(v) => sqlx::query_scalar(
                "UPDATE allsource_state SET value = $4, version = version + 1, updated_at = now() \
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
            "SELECT key, value, version FROM allsource_state \
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
        rows.iter()
            .map(|row| {
                let key: String = row.try_get(0).map_err(state_error)?;
                Ok((key, entry(row, 1)?))
            })
            .collect()
    }
}

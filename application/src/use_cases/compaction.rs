//! [`Compaction`]: merging the store's small files on demand, and its figures, for callers
//! allowed to do it (the `admin` permission: compaction works on the whole node's files).
//! Backends without files (memory, postgres) answer through a
//! [`NoCompaction`](crate::ports::NoCompaction).

use std::sync::Arc;

use allsource_domain::Permission;

use crate::ports::{CompactionError, CompactionReport, CompactionStats, Compactor};
use crate::tenancy::Caller;

/// Why a compaction request failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactionRequestError {
    /// 403: the caller's role lacks `admin`.
    #[error("{0}")]
    Forbidden(String),
    /// The compactor's own failures (503, 500).
    #[error(transparent)]
    Compaction(#[from] CompactionError),
}

/// The compaction use case.
#[derive(Clone)]
pub struct Compaction {
    compactor: Arc<dyn Compactor>,
}

impl Compaction {
    pub fn new(compactor: Arc<dyn Compactor>) -> Self {
        Self { compactor }
    }

    /// Compacts now and reports what was done (also when nothing was merged).
    ///
    /// # Errors
    /// `Forbidden` without `admin`; the compactor's errors.
    pub async fn trigger(
        &self,
        caller: &Caller,
    ) -> Result<CompactionReport, CompactionRequestError> {
        Self::allowed(caller)?;
        let report = self.compactor.trigger().await?;
        tracing::info!(
            tenant = %caller.tenant().as_str(),
            compacted = report.compacted,
            files_before = report.files_before,
            files_after = report.files_after,
            "compaction triggered"
        );
        Ok(report)
    }

    /// Figures since the process started.
    ///
    /// # Errors
    /// `Forbidden` without `admin`; the compactor's errors.
    pub async fn stats(&self, caller: &Caller) -> Result<CompactionStats, CompactionRequestError> {
        Self::allowed(caller)?;
        Ok(self.compactor.stats().await?)
    }

    fn allowed(caller: &Caller) -> Result<(), CompactionRequestError> {
        if caller.can(Permission::Admin) {
            Ok(())
        } else {
            Err(CompactionRequestError::Forbidden(format!(
                "role '{}' may not compact the store's files",
                caller.role()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;
    use crate::ports::MockCompactor;
    use allsource_domain::{Role, TenantId};

    fn reader() -> Caller {
        Caller::authenticated(
            TenantId::parse("acme").unwrap(),
            Role::Readonly,
            Principal::User {
                user_id: "u".into(),
                username: "r".into(),
            },
        )
    }

    #[tokio::test]
    async fn callers_without_admin_reach_no_compactor() {
        let mut compactor = MockCompactor::new();
        compactor.expect_trigger().never();
        compactor.expect_stats().never();
        let compaction = Compaction::new(Arc::new(compactor));
        assert!(matches!(
            compaction.trigger(&reader()).await,
            Err(CompactionRequestError::Forbidden(_))
        ));
        assert!(matches!(
            compaction.stats(&reader()).await,
            Err(CompactionRequestError::Forbidden(_))
        ));
    }

    #[tokio::test]
    async fn admins_get_the_compactors_answers_and_errors() {
        let mut compactor = MockCompactor::new();
        compactor
            .expect_trigger()
            .times(1)
            .returning(|| Err(CompactionError::Unavailable("recovering".into())));
        let compaction = Compaction::new(Arc::new(compactor));
        assert!(matches!(
            compaction.trigger(&Caller::default_tenant()).await,
            Err(CompactionRequestError::Compaction(
                CompactionError::Unavailable(_)
            ))
        ));
    }
}

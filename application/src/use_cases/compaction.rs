//! [`Compaction`]: merging the store's small files on demand, and its figures, for operators
//! only ([`Caller::is_operator`]): compaction works on the whole node's files, every tenant's,
//! so an admin of another tenant may neither trigger it nor read its figures.
//! Backends without files (memory, postgres) answer through a
//! [`NoCompaction`](crate::ports::NoCompaction).

use std::sync::Arc;

use crate::ports::{CompactionError, CompactionReport, CompactionStats, Compactor};
use crate::tenancy::Caller;

/// Why a compaction request failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactionRequestError {
    /// 403: the caller is not an operator.
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
    /// `Forbidden` for a caller who is not an operator; the compactor's errors.
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
    /// `Forbidden` for a caller who is not an operator; the compactor's errors.
    pub async fn stats(&self, caller: &Caller) -> Result<CompactionStats, CompactionRequestError> {
        Self::allowed(caller)?;
        Ok(self.compactor.stats().await?)
    }

    fn allowed(caller: &Caller) -> Result<(), CompactionRequestError> {
        if caller.is_operator() {
            Ok(())
        } else {
            Err(CompactionRequestError::Forbidden(
                "compaction works on every tenant's files: only operators (admins of tenant \
                 'default') may trigger it or read its figures"
                    .into(),
            ))
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

    fn admin_of(tenant: &str) -> Caller {
        Caller::authenticated(
            TenantId::parse(tenant).unwrap(),
            Role::Admin,
            Principal::User {
                user_id: "a".into(),
                username: "a".into(),
            },
        )
    }

    #[tokio::test]
    async fn callers_who_are_not_operators_reach_no_compactor() {
        let mut compactor = MockCompactor::new();
        compactor.expect_trigger().never();
        compactor.expect_stats().never();
        let compaction = Compaction::new(Arc::new(compactor));
        for caller in [reader(), admin_of("acme")] {
            assert!(matches!(
                compaction.trigger(&caller).await,
                Err(CompactionRequestError::Forbidden(_))
            ));
            assert!(matches!(
                compaction.stats(&caller).await,
                Err(CompactionRequestError::Forbidden(_))
            ));
        }
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
            compaction.trigger(&admin_of("default")).await,
            Err(CompactionRequestError::Compaction(
                CompactionError::Unavailable(_)
            ))
        ));
    }
}

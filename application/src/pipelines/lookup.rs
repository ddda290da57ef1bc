//! What `enrich` looks up: an entity's current state, or a projection's state at a key.
//!
//! [`Lookups`] is the seam (mocked in the worker's tests); [`ReadLookups`] answers through the
//! same use cases as `GET /api/v1/entities/{id}/state` and
//! `GET /api/v1/projections/{name}/state/{key}`, as an internal caller of the pipeline's own
//! tenant, so a pipeline sees exactly what its tenant's API shows and nothing of another tenant.

use allsource_domain::TenantId;
use async_trait::async_trait;
use serde_json::Value;

use crate::Caller;
use crate::projections::{ProjectionError, Projections};
use crate::use_cases::{EntityStateInput, ReadError, ReadEvents};

/// Why a lookup could not answer. "Not found" is not an error: it is `Ok(None)`.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Storage cannot answer now: the worker retries from its checkpoint later.
    #[error("lookup unavailable: {0}")]
    Unavailable(String),
    /// The lookup is wrong for good (a projection that does not exist): the record fails.
    #[error("{0}")]
    Failed(String),
}

/// Answers the lookups of `enrich`.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Lookups: Send + Sync {
    /// The current state of `entity_id` in `tenant` (`None`: no such entity).
    ///
    /// # Errors
    /// See [`LookupError`].
    async fn entity_state(
        &self,
        tenant: &TenantId,
        entity_id: &str,
    ) -> Result<Option<Value>, LookupError>;

    /// The state of projection `name` at `key` (`None`: no such key).
    ///
    /// # Errors
    /// `Failed` when the projection does not exist; see [`LookupError`].
    async fn projection_state(
        &self,
        tenant: &TenantId,
        name: &str,
        key: &str,
    ) -> Result<Option<Value>, LookupError>;
}

/// [`Lookups`] through the read and projection use cases.
#[derive(Clone)]
pub struct ReadLookups {
    reads: ReadEvents,
    projections: Projections,
}

impl ReadLookups {
    pub fn new(reads: ReadEvents, projections: Projections) -> Self {
        Self { reads, projections }
    }
}

#[async_trait]
impl Lookups for ReadLookups {
    async fn entity_state(
        &self,
        tenant: &TenantId,
        entity_id: &str,
    ) -> Result<Option<Value>, LookupError> {
        let caller = Caller::new(tenant.clone());
        match self
            .reads
            .entity_state(&caller, entity_id, EntityStateInput::default())
            .await
        {
            Ok(view) => Ok(Some(view.state.state.clone())),
            // An id that is not an entity id names no entity.
            Err(ReadError::NotFound(_) | ReadError::Invalid(_)) => Ok(None),
            Err(ReadError::Unavailable(why)) => Err(LookupError::Unavailable(why)),
            Err(ReadError::Internal(e)) => Err(LookupError::Unavailable(e.to_string())),
        }
    }

    async fn projection_state(
        &self,
        tenant: &TenantId,
        name: &str,
        key: &str,
    ) -> Result<Option<Value>, LookupError> {
        let caller = Caller::new(tenant.clone());
        // The projection must exist; a missing key is "nothing found".
        match self.projections.get(&caller, name).await {
            Ok(_) => {}
            Err(ProjectionError::NotFound(_) | ProjectionError::Invalid(_)) => {
                return Err(LookupError::Failed(format!(
                    "no projection named '{name}' to enrich from"
                )));
            }
            Err(e) => return Err(LookupError::Unavailable(e.to_string())),
        }
        match self.projections.state_of(&caller, name, key).await {
            Ok(view) => Ok(Some(view.state)),
            Err(ProjectionError::NotFound(_)) => Ok(None),
            Err(ProjectionError::Invalid(e)) => Err(LookupError::Failed(format!("{e:?}"))),
            Err(e) => Err(LookupError::Unavailable(e.to_string())),
        }
    }
}

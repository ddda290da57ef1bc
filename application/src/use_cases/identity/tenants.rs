//! What identity lets go of when a tenant goes: [`Identity::purge_tenant`] deletes the
//! tenant's users (their access tokens go on the revocation list, their logins are revoked)
//! and its API keys. The tenant use cases call it through [`TenantMembers`] when a tenant is
//! deleted and before a tenant is created, so a re-created tenant of the same id inherits no
//! identities.

use std::sync::{Arc, Weak};

use allsource_domain::TenantId;
use async_trait::async_trait;

use super::service::{Identity, IdentityError, Inner};
use super::store::FamilyRecord;
use crate::quota::GateError;
use crate::use_cases::TenantMembers;

impl Identity {
    /// Deletes every user, API key and login of the tenant. Idempotent.
    ///
    /// # Errors
    /// Storage errors (what was done stays done; a retry finishes the rest).
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<(), IdentityError> {
        let store = &self.inner.store;
        for user in store.users(tenant.as_str()).await? {
            self.forget_user(&user).await?;
        }
        for (digest, key) in store.api_keys(tenant.as_str()).await? {
            store.delete_api_key(&digest, &key).await?;
        }
        let now = self.now();
        for (index_key, family_id) in store.families_of(tenant.as_str(), None).await? {
            if let Some(family) = store.family(&family_id).await? {
                store
                    .put_family(
                        &family_id,
                        &FamilyRecord {
                            revoked_at: Some(family.revoked_at.unwrap_or(now)),
                            ..family
                        },
                    )
                    .await?;
            }
            store.delete_family_index(&index_key).await?;
        }
        Ok(())
    }

    /// This identity as a [`TenantMembers`] for the tenant use cases. It holds the use cases
    /// weakly: the tenant use cases are a dependency of identity, not the other way round.
    pub fn tenant_members(&self) -> Arc<dyn TenantMembers> {
        Arc::new(IdentityMembers(Arc::downgrade(&self.inner)))
    }
}

struct IdentityMembers(Weak<Inner>);

#[async_trait]
impl TenantMembers for IdentityMembers {
    async fn purge_tenant(&self, tenant: &TenantId) -> Result<(), GateError> {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        Identity { inner }
            .purge_tenant(tenant)
            .await
            .map_err(|e| match e {
                IdentityError::Unavailable(why) => GateError::Unavailable(why),
                other => GateError::Internal(anyhow::anyhow!(other.to_string())),
            })
    }
}

//! API keys (`ask_...`, stored only as SHA-256 digests): created in the caller's tenant with a
//! role the caller may grant, listed, revoked.
//!
//! A key created by another key never outlives it and never exceeds it: its role is one the
//! parent may grant (so at most the parent's), its expiry is clamped to the parent's (a later
//! or missing `expires_at` becomes the parent's), and revoking the parent revokes its children.
//! A key created for a user who is deleted meanwhile is revoked before it is handed out.

use allsource_domain::{Permission, Role, TenantId};
use chrono::{DateTime, Utc};

use super::service::{API_KEY_PREFIX, Identity, IdentityError, parse_stored_role};
use super::store::ApiKeyRecord;
use crate::ports::{AuditOutcome, AuditRecord};
use crate::quota::QuotaKind;
use crate::use_cases::FieldError;
use crate::{Caller, Principal};

/// An API key as shown over the API (never the key or its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub tenant_id: String,
    pub role: Role,
    pub owner_user_id: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKeyView {
    fn of(key: &ApiKeyRecord) -> Result<Self, IdentityError> {
        Ok(Self {
            id: key.id.clone(),
            name: key.name.clone(),
            tenant_id: key.tenant_id.clone(),
            role: parse_stored_role(&key.role)?,
            owner_user_id: key.owner_user_id.clone(),
            prefix: key.prefix.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
        })
    }
}

/// A freshly created key: the only time the key itself is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedApiKey {
    pub key: String,
    pub view: ApiKeyView,
}

/// Input of API key creation, raw.
#[derive(Debug, Clone, Default)]
pub struct CreateApiKeyInput {
    pub name: String,
    /// Defaults to the caller's role.
    pub role: Option<String>,
    /// RFC 3339; must be in the future. `None`: the key does not expire.
    pub expires_at: Option<String>,
}

impl Identity {
    /// Creates an API key in the caller's tenant, with a role the caller may grant (default:
    /// the caller's own), counted against the tenant's `max_api_keys` quota.
    ///
    /// # Errors
    /// 400 invalid fields, 403 role above the caller's, 429 quota, storage errors.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        input: CreateApiKeyInput,
    ) -> Result<CreatedApiKey, IdentityError> {
        let mut errors = Vec::new();
        let name = input.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "name",
                "must be 1 to 128 characters without control characters",
            ));
        }
        let role = match input.role.as_deref() {
            None => Some(caller.role()),
            Some(raw) => Role::parse(raw)
                .map_err(|e| errors.push(FieldError::new("role", e.0)))
                .ok(),
        };
        let now = self.now();
        let expires_at = match input.expires_at.as_deref() {
            None => Some(None),
            Some(raw) => match DateTime::parse_from_rfc3339(raw) {
                Ok(t) if t.with_timezone(&Utc) > now => Some(Some(t.with_timezone(&Utc))),
                Ok(_) => {
                    errors.push(FieldError::new("expires_at", "must be in the future"));
                    None
                }
                Err(_) => {
                    errors.push(FieldError::new(
                        "expires_at",
                        "must be an RFC 3339 timestamp",
                    ));
                    None
                }
            },
        };
        let (Some(role), Some(expires_at), true) = (role, expires_at, errors.is_empty()) else {
            return Err(IdentityError::Validation(errors));
        };
        if !caller.role().can_grant(role) {
            return Err(IdentityError::Forbidden(format!(
                "role '{}' may not create an API key with role '{role}'",
                caller.role()
            )));
        }
        let tenant = caller.tenant().clone();
        // A key made by a key: no later than its parent (a child never outlives it).
        let parent = match caller.principal() {
            Principal::ApiKey { key_id, .. } => Some(self.parent_key(&tenant, key_id).await?),
            _ => None,
        };
        let expires_at = match parent.as_ref().and_then(|p| p.expires_at) {
            Some(limit) => Some(expires_at.map_or(limit, |t| t.min(limit))),
            None => expires_at,
        };
        // The user the key acts for must not be deleted (a leftover token of a deleted user
        // mints nothing, whichever node it reaches).
        if let Some(user_id) = caller.user_id()
            && self.user_revoked(tenant.as_str(), user_id).await?
        {
            return Err(IdentityError::Unauthorized(
                "the user of this credential no longer exists".into(),
            ));
        }
        self.inner
            .deps
            .quotas
            .consume(&tenant, QuotaKind::ApiKeys, 1)
            .await?;
        let key = format!("{API_KEY_PREFIX}{}", self.inner.deps.secrets.random_token());
        let digest = self.inner.deps.secrets.digest(&key);
        let record = ApiKeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name,
            tenant_id: tenant.as_str().to_owned(),
            role: role.as_str().to_owned(),
            owner_user_id: caller.user_id().unwrap_or("system").to_owned(),
            prefix: key.chars().take(API_KEY_PREFIX.len() + 6).collect(),
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            parent_key_id: parent.as_ref().map(|p| p.id.clone()),
        };
        if let Err(e) = self.inner.store.insert_api_key(&digest, &record).await {
            self.inner
                .deps
                .quotas
                .release(&tenant, QuotaKind::ApiKeys, 1)
                .await;
            return Err(e.into());
        }
        // Checked again once the key is stored: a deletion of the user (or a revocation of
        // the parent) that ran meanwhile did not see this key, so it is revoked here.
        let orphan = match (caller.user_id(), &parent) {
            (Some(user_id), _) if self.user_revoked(tenant.as_str(), user_id).await? => true,
            (_, Some(parent)) => self.parent_key(&tenant, &parent.id).await.is_err(),
            _ => false,
        };
        if orphan {
            self.revoke_record(caller, &digest, record).await?;
            return Err(IdentityError::Unauthorized(
                "the credential was revoked while the key was created".into(),
            ));
        }
        self.audit(
            AuditRecord::new(
                tenant.as_str(),
                caller.actor(),
                "api_key.create",
                AuditOutcome::Success,
            )
            .resource(record.id.clone())
            .details(serde_json::json!({"name": record.name, "role": record.role})),
        )
        .await;
        Ok(CreatedApiKey {
            key,
            view: ApiKeyView::of(&record)?,
        })
    }

    fn sees_key(caller: &Caller, key: &ApiKeyRecord) -> bool {
        caller.can(Permission::Admin) || caller.user_id() == Some(key.owner_user_id.as_str())
    }

    /// The caller's tenant's keys: all of them for admins, one's own otherwise.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list_api_keys(&self, caller: &Caller) -> Result<Vec<ApiKeyView>, IdentityError> {
        self.inner
            .store
            .api_keys(caller.tenant().as_str())
            .await?
            .iter()
            .filter(|(_, k)| Self::sees_key(caller, k))
            .map(|(_, k)| ApiKeyView::of(k))
            .collect()
    }

    /// Revokes a key of the caller's tenant (one's own, or any as admin). Idempotent.
    ///
    /// # Errors
    /// 404 unknown key (or someone else's, for non-admins); storage errors.
    pub async fn revoke_api_key(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ApiKeyView, IdentityError> {
        let not_found = || IdentityError::NotFound(format!("no API key '{id}'"));
        let digest = self
            .inner
            .store
            .api_key_digest(caller.tenant().as_str(), id)
            .await?
            .ok_or_else(not_found)?;
        let key = self
            .inner
            .store
            .api_key(&digest)
            .await?
            .ok_or_else(not_found)?
            .value;
        if !Self::sees_key(caller, &key) {
            return Err(not_found());
        }
        self.revoke_record(caller, &digest, key).await
    }

    /// Revokes the key and the keys it created.
    pub(super) async fn revoke_record(
        &self,
        caller: &Caller,
        digest: &str,
        key: ApiKeyRecord,
    ) -> Result<ApiKeyView, IdentityError> {
        let view = self.revoke_one(caller, digest, key).await?;
        let parent = self.inner.store.api_key(digest).await?.map(|v| v.value);
        if let Some(parent) = parent {
            self.revoke_children(caller, &parent).await?;
        }
        Ok(view)
    }

    async fn revoke_one(
        &self,
        caller: &Caller,
        digest: &str,
        mut key: ApiKeyRecord,
    ) -> Result<ApiKeyView, IdentityError> {
        loop {
            let Some(current) = self.inner.store.api_key(digest).await? else {
                return ApiKeyView::of(&key);
            };
            key = current.value;
            if key.revoked_at.is_some() {
                return ApiKeyView::of(&key);
            }
            key.revoked_at = Some(self.now());
            if self
                .inner
                .store
                .update_api_key(digest, &key, current.version)
                .await?
            {
                break;
            }
        }
        if let Ok(tenant) = TenantId::parse(&key.tenant_id) {
            self.inner
                .deps
                .quotas
                .release(&tenant, QuotaKind::ApiKeys, 1)
                .await;
        }
        self.audit(
            AuditRecord::new(
                key.tenant_id.as_str(),
                caller.actor(),
                "api_key.revoke",
                AuditOutcome::Success,
            )
            .resource(key.id.clone()),
        )
        .await;
        ApiKeyView::of(&key)
    }

    /// Revokes the keys created by `parent`, and theirs.
    async fn revoke_children(
        &self,
        caller: &Caller,
        parent: &ApiKeyRecord,
    ) -> Result<(), IdentityError> {
        let mut parents = vec![parent.id.clone()];
        while let Some(parent_id) = parents.pop() {
            for (digest, key) in self.inner.store.api_keys(&parent.tenant_id).await? {
                if key.parent_key_id.as_deref() == Some(parent_id.as_str())
                    && key.revoked_at.is_none()
                {
                    parents.push(key.id.clone());
                    self.revoke_one(caller, &digest, key).await?;
                }
            }
        }
        Ok(())
    }

    /// The record of the caller's own key (the parent of a key it creates), if not revoked.
    async fn parent_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
    ) -> Result<ApiKeyRecord, IdentityError> {
        let gone = || IdentityError::Unauthorized("the API key has been revoked".into());
        let digest = self
            .inner
            .store
            .api_key_digest(tenant.as_str(), key_id)
            .await?
            .ok_or_else(gone)?;
        let key = self
            .inner
            .store
            .api_key(&digest)
            .await?
            .ok_or_else(gone)?
            .value;
        if key.revoked_at.is_some() {
            return Err(gone());
        }
        Ok(key)
    }
}

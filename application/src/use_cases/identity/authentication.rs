//! Authentication: a credential from a request becomes a [`Caller`] ([`Authenticate`]).
//!
//! - An access token (JWT) is verified by the signer, then checked against the revocation list
//!   (its user and its login) and its tenant's status: a deleted user, a revoked login or a
//!   deactivated or deleted tenant is refused at once, not when the token expires.
//! - An API key is looked up by digest on every request (revocation and expiry take effect at
//!   once), and refused when its owner is on the revocation list or its tenant is inactive.

use allsource_domain::{Permission, Role, TenantId};
use async_trait::async_trait;
use chrono::Duration;

use super::ports::TokenError;
use super::revocations::{family_key, user_key};
use super::service::{API_KEY_PREFIX, Identity, gate_to_auth, state_to_auth};
use crate::auth::{AuthError, Authenticate, Credential};
use crate::{Caller, Principal};

/// `last_used_at` of an API key is written at most this often.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// Who the caller is, for `/auth/me`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeView {
    pub tenant_id: String,
    pub role: Role,
    pub permissions: Vec<Permission>,
    /// `user`, `api_key` or `system`.
    pub kind: &'static str,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub api_key_id: Option<String>,
    pub api_key_name: Option<String>,
}

impl Identity {
    /// Who the caller is.
    pub fn me(caller: &Caller) -> MeView {
        let mut view = MeView {
            tenant_id: caller.tenant().as_str().to_owned(),
            role: caller.role(),
            permissions: caller.role().permissions().to_vec(),
            kind: "system",
            user_id: None,
            username: None,
            api_key_id: None,
            api_key_name: None,
        };
        match caller.principal() {
            Principal::System => {}
            Principal::User { user_id, username } => {
                view.kind = "user";
                view.user_id = Some(user_id.clone());
                view.username = Some(username.clone());
            }
            Principal::ApiKey {
                key_id,
                name,
                owner_user_id,
            } => {
                view.kind = "api_key";
                view.user_id = Some(owner_user_id.clone());
                view.api_key_id = Some(key_id.clone());
                view.api_key_name = Some(name.clone());
            }
        }
        view
    }

    async fn authenticate_key(&self, key: &str) -> Result<Caller, AuthError> {
        let bad = || AuthError::Unauthorized("invalid API key".into());
        if !key.starts_with(API_KEY_PREFIX) || key.len() > 128 {
            return Err(bad());
        }
        let digest = self.inner.deps.secrets.digest(key);
        let entry = self
            .inner
            .store
            .api_key(&digest)
            .await
            .map_err(state_to_auth)?
            .ok_or_else(bad)?;
        let mut record = entry.value;
        if record.revoked_at.is_some() {
            return Err(AuthError::Unauthorized(
                "the API key has been revoked".into(),
            ));
        }
        let now = self.now();
        if record.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Unauthorized("the API key has expired".into()));
        }
        let role = Role::parse(&record.role).map_err(|_| bad())?;
        let tenant = TenantId::parse(&record.tenant_id).map_err(|_| bad())?;
        let owner = user_key(&record.tenant_id, &record.owner_user_id);
        if self
            .inner
            .revocations
            .any_revoked(&[owner.as_str()], now)
            .await
            .map_err(state_to_auth)?
        {
            return Err(AuthError::Unauthorized(
                "the API key has been revoked".into(),
            ));
        }
        self.inner
            .deps
            .tenants
            .check_active(&tenant)
            .await
            .map_err(gate_to_auth)?;
        let stale = record
            .last_used_at
            .is_none_or(|t| now - t >= Duration::seconds(LAST_USED_RESOLUTION_SECS));
        let caller = Caller::authenticated(
            tenant,
            role,
            Principal::ApiKey {
                key_id: record.id.clone(),
                name: record.name.clone(),
                owner_user_id: record.owner_user_id.clone(),
            },
        );
        if stale {
            record.last_used_at = Some(now);
            // Best effort: a conflict means someone else wrote (a revocation wins).
            let _ = self
                .inner
                .store
                .update_api_key(&digest, &record, entry.version)
                .await;
        }
        Ok(caller)
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Caller, AuthError> {
        let claims = self.inner.deps.signer.verify(token).map_err(|e| match e {
            TokenError::Expired => AuthError::Unauthorized("the access token has expired".into()),
            TokenError::Invalid(why) => {
                AuthError::Unauthorized(format!("invalid access token: {why}"))
            }
        })?;
        let bad = |what: &str| AuthError::Unauthorized(format!("invalid access token: bad {what}"));
        let role = Role::parse(&claims.role).map_err(|_| bad("role"))?;
        let tenant = TenantId::parse(&claims.tenant_id).map_err(|_| bad("tenant_id"))?;
        let user = user_key(&claims.tenant_id, &claims.sub);
        let family = claims.fid.as_deref().map(family_key);
        let mut keys = vec![user.as_str()];
        keys.extend(family.as_deref());
        if self
            .inner
            .revocations
            .any_revoked(&keys, self.now())
            .await
            .map_err(state_to_auth)?
        {
            return Err(AuthError::Unauthorized(
                "the access token has been revoked".into(),
            ));
        }
        self.inner
            .deps
            .tenants
            .check_active(&tenant)
            .await
            .map_err(gate_to_auth)?;
        Ok(Caller::authenticated(
            tenant,
            role,
            Principal::User {
                user_id: claims.sub,
                username: claims.username,
            },
        ))
    }
}

#[async_trait]
impl Authenticate for Identity {
    async fn authenticate(&self, credential: Credential) -> Result<Caller, AuthError> {
        match credential {
            Credential::ApiKey(key) => self.authenticate_key(&key).await,
            Credential::Bearer(token) if token.starts_with(API_KEY_PREFIX) => {
                self.authenticate_key(&token).await
            }
            Credential::Bearer(token) => self.authenticate_jwt(&token).await,
        }
    }
}

//! Users: created only by admins (no self-registration), listed, read and deleted within the
//! caller's tenant. Deleting a user revokes everything derived from it: its API keys, its
//! logins (refresh-token families) and, through the revocation list, its access tokens.

use allsource_domain::{Password, Permission, Role, TenantId, Username};
use chrono::{DateTime, Utc};

use super::revocations::user_key;
use super::service::{Identity, IdentityError, parse_stored_role, require_admin};
use super::store::{FamilyRecord, UserRecord, UsernameRecord};
use crate::Caller;
use crate::ports::{AuditOutcome, AuditRecord};
use crate::use_cases::FieldError;

/// A user as shown over the API (never the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub tenant_id: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl UserView {
    pub(super) fn of(user: &UserRecord) -> Result<Self, IdentityError> {
        Ok(Self {
            id: user.id.clone(),
            username: user.username.clone(),
            tenant_id: user.tenant_id.clone(),
            role: parse_stored_role(&user.role)?,
            created_at: user.created_at,
        })
    }
}

/// Input of user creation, raw.
#[derive(Debug, Clone, Default)]
pub struct CreateUserInput {
    pub username: String,
    pub password: String,
    pub role: String,
    /// Defaults to the caller's tenant.
    pub tenant_id: Option<String>,
}

/// Lower-cased username of 1–64 characters of `[a-z0-9._@-]` ([`Username::parse`]).
///
/// # Errors
/// The message for the client.
pub fn normalize_username(raw: &str) -> Result<String, String> {
    Username::parse(raw)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| e.0)
}

/// A password of 12 characters to 1024 bytes ([`Password::parse`]).
///
/// # Errors
/// The message for the client.
pub fn check_password(raw: &str) -> Result<(), String> {
    Password::parse(raw).map(|_| ()).map_err(|e| e.0)
}

impl Identity {
    /// Creates the first admin when no user exists at all. `true` if it was created.
    ///
    /// # Errors
    /// Invalid username or password (named by field), storage errors.
    pub async fn bootstrap_admin(
        &self,
        username: &str,
        password: &str,
        tenant: &TenantId,
    ) -> Result<bool, IdentityError> {
        if self.inner.store.has_users().await? {
            return Ok(false);
        }
        self.create_user(
            &Caller::new(tenant.clone()),
            CreateUserInput {
                username: username.into(),
                password: password.into(),
                role: Role::Admin.as_str().into(),
                tenant_id: None,
            },
        )
        .await?;
        Ok(true)
    }

    /// Creates a user. Only admins; the role must be one the caller may grant; the tenant is
    /// the caller's unless the caller is an admin of the operator tenant (or the system).
    ///
    /// # Errors
    /// 400 invalid fields, 403 not allowed, 409 username taken, storage errors.
    pub async fn create_user(
        &self,
        caller: &Caller,
        input: CreateUserInput,
    ) -> Result<UserView, IdentityError> {
        if !caller.can(Permission::Admin) {
            return Err(IdentityError::Forbidden(
                "only admins create users; there is no self-registration".into(),
            ));
        }
        let mut errors = Vec::new();
        let username = Username::parse(&input.username)
            .map_err(|e| errors.push(FieldError::new("username", e.0)))
            .ok();
        let password = Password::parse(&input.password)
            .map_err(|e| errors.push(FieldError::new("password", e.0)))
            .ok();
        let role = Role::parse(&input.role)
            .map_err(|e| errors.push(FieldError::new("role", e.0)))
            .ok();
        let tenant = match input.tenant_id.as_deref() {
            None => Some(caller.tenant().clone()),
            Some(raw) => match TenantId::parse(raw) {
                Ok(t) if t.is_reserved() => {
                    errors.push(FieldError::new(
                        "tenant_id",
                        "is reserved: ids starting with '_' belong to the installation",
                    ));
                    None
                }
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(FieldError::new("tenant_id", e.0));
                    None
                }
            },
        };
        let (Some(username), Some(password), Some(role), Some(tenant), true) =
            (username, password, role, tenant, errors.is_empty())
        else {
            return Err(IdentityError::Validation(errors));
        };
        if !caller.role().can_grant(role) {
            return Err(IdentityError::Forbidden(format!(
                "role '{}' may not create a user with role '{role}'",
                caller.role()
            )));
        }
        if &tenant != caller.tenant() {
            if !caller.is_operator() {
                return Err(IdentityError::Forbidden(
                    "users can only be created in your own tenant".into(),
                ));
            }
            self.inner.deps.tenants.check_active(&tenant).await?;
        }
        let password_hash = self.inner.deps.hasher.hash(password.expose()).await?;
        let user = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            username: username.as_str().to_owned(),
            tenant_id: tenant.as_str().to_owned(),
            role: role.as_str().to_owned(),
            password_hash,
            created_at: self.now(),
            created_by: caller.actor(),
        };
        let claimed = self
            .inner
            .store
            .claim_username(
                username.as_str(),
                &UsernameRecord {
                    tenant_id: user.tenant_id.clone(),
                    user_id: user.id.clone(),
                },
            )
            .await?;
        if !claimed {
            return Err(IdentityError::Conflict(format!(
                "the username '{username}' is taken"
            )));
        }
        self.inner.store.put_user(&user).await?;
        self.audit(
            AuditRecord::new(
                tenant.as_str(),
                caller.actor(),
                "user.create",
                AuditOutcome::Success,
            )
            .resource(user.id.clone())
            .details(serde_json::json!({"username": username.as_str(), "role": role.as_str()})),
        )
        .await;
        UserView::of(&user)
    }

    /// The users of the caller's tenant.
    ///
    /// # Errors
    /// 403 for non-admins; storage errors.
    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<UserView>, IdentityError> {
        require_admin(caller)?;
        self.inner
            .store
            .users(caller.tenant().as_str())
            .await?
            .iter()
            .map(UserView::of)
            .collect()
    }

    /// A user of the caller's tenant.
    ///
    /// # Errors
    /// 403 for non-admins; 404 unknown (or of another tenant).
    pub async fn get_user(&self, caller: &Caller, id: &str) -> Result<UserView, IdentityError> {
        require_admin(caller)?;
        let user = self.find_user(caller, id).await?;
        UserView::of(&user)
    }

    async fn find_user(&self, caller: &Caller, id: &str) -> Result<UserRecord, IdentityError> {
        self.inner
            .store
            .user(caller.tenant().as_str(), id)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("no user '{id}' in this tenant")))
    }

    /// Deletes a user of the caller's tenant and revokes the user's API keys.
    ///
    /// # Errors
    /// 403 for non-admins or for deleting oneself; 404 unknown.
    pub async fn delete_user(&self, caller: &Caller, id: &str) -> Result<(), IdentityError> {
        require_admin(caller)?;
        if caller.user_id() == Some(id) {
            return Err(IdentityError::Forbidden(
                "you cannot delete yourself".into(),
            ));
        }
        let user = self.find_user(caller, id).await?;
        if !caller.role().can_grant(parse_stored_role(&user.role)?) {
            return Err(IdentityError::Forbidden(
                "you may not delete a user above your role".into(),
            ));
        }
        self.remove_user(caller, &user).await?;
        self.audit(
            AuditRecord::new(
                caller.tenant().as_str(),
                caller.actor(),
                "user.delete",
                AuditOutcome::Success,
            )
            .resource(user.id.clone())
            .details(serde_json::json!({"username": user.username})),
        )
        .await;
        Ok(())
    }

    /// Deletes the user and revokes what derives from it: its access tokens (revocation list,
    /// written first so that no token works once the user is gone), the user record and the
    /// username, its logins (refresh-token families) and its API keys.
    pub(super) async fn remove_user(
        &self,
        caller: &Caller,
        user: &UserRecord,
    ) -> Result<(), IdentityError> {
        self.forget_user(user).await?;
        for (digest, key) in self.inner.store.api_keys(&user.tenant_id).await? {
            if key.owner_user_id == user.id && key.revoked_at.is_none() {
                self.revoke_record(caller, &digest, key).await?;
            }
        }
        Ok(())
    }

    /// Revokes the user's access tokens and logins and deletes the user (not its keys).
    pub(super) async fn forget_user(&self, user: &UserRecord) -> Result<(), IdentityError> {
        let now = self.now();
        self.inner
            .revocations
            .revoke(
                user_key(&user.tenant_id, &user.id),
                self.inner.config.access_ttl_secs,
                now,
            )
            .await?;
        self.inner.store.delete_user(user).await?;
        for (index_key, family_id) in self
            .inner
            .store
            .families_of(&user.tenant_id, Some(&user.id))
            .await?
        {
            self.inner
                .store
                .put_family(
                    &family_id,
                    &FamilyRecord {
                        user_id: user.id.clone(),
                        tenant_id: user.tenant_id.clone(),
                        revoked_at: Some(now),
                    },
                )
                .await?;
            self.inner.store.delete_family_index(&index_key).await?;
        }
        Ok(())
    }

    /// Whether the user has been revoked (deleted), read from the store, not from this node's
    /// copy of the revocation list: a deletion that runs at the same time on another node is
    /// seen as soon as it started.
    pub(super) async fn user_revoked(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<bool, IdentityError> {
        Ok(self
            .inner
            .store
            .revocation(&user_key(tenant, user_id))
            .await?
            .is_some())
    }
}

//! Sessions: login with username and password (throttled per username), short-lived access
//! tokens, rotating single-use refresh tokens, and revocation of a whole login (a refresh-token
//! family) when a used refresh token comes back.

use allsource_domain::{TenantId, Username};
use chrono::Duration;

use super::ports::AccessClaims;
use super::revocations::family_key;
use super::service::{Identity, IdentityError, REFRESH_TOKEN_PREFIX};
use super::store::{FamilyRecord, RefreshRecord, UserRecord};
use super::throttle::LoginThrottle;
use super::users::UserView;
use crate::ports::{AuditOutcome, AuditRecord};

/// What login and refresh hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
    pub user: UserView,
}

/// Input of login, raw.
#[derive(Debug, Clone, Default)]
pub struct LoginInput {
    pub username: String,
    pub password: String,
    /// When given, the user must belong to it.
    pub tenant_id: Option<String>,
}

impl Identity {
    async fn decoy_hash(&self) -> String {
        if let Some(hash) = self.inner.decoy_hash.get() {
            return hash.clone();
        }
        let hash = self
            .inner
            .deps
            .hasher
            .hash("decoy password, never valid")
            .await
            .unwrap_or_default();
        let _ = self.inner.decoy_hash.set(hash.clone());
        hash
    }

    /// Logs in with username and password.
    ///
    /// # Errors
    /// 401 for any bad combination (one message: no user enumeration), 429 after too many
    /// failures of the username within the window, 403 for a deactivated tenant.
    pub async fn login(&self, input: LoginInput) -> Result<TokenPair, IdentityError> {
        const BAD: &str = "invalid username or password";
        let now = self.now();
        let key = LoginThrottle::key(&input.username);
        // Records of refused logins go to the user's tenant when the user exists, else to the
        // operator tenant: never to a tenant the anonymous request names.
        let operator = TenantId::default_tenant().as_str().to_owned();
        // The slot is taken before the password is checked: parallel guesses cannot all pass
        // the check before any of them is counted.
        if let Err(retry_after_secs) = self.inner.throttle.reserve(&key, now) {
            self.audit(
                AuditRecord::new(operator, "anonymous", "auth.login", AuditOutcome::Denied)
                    .details(serde_json::json!({"username": key, "reason": "throttled"})),
            )
            .await;
            return Err(IdentityError::Throttled { retry_after_secs });
        }
        let user = match Username::parse(&input.username) {
            Ok(name) => match self.inner.store.username(name.as_str()).await? {
                Some(entry) => {
                    self.inner
                        .store
                        .user(&entry.tenant_id, &entry.user_id)
                        .await?
                }
                None => None,
            },
            Err(_) => None,
        };
        let ok = match &user {
            Some(user) => {
                let matches = self
                    .inner
                    .deps
                    .hasher
                    .verify(&input.password, &user.password_hash)
                    .await;
                matches
                    && input
                        .tenant_id
                        .as_deref()
                        .is_none_or(|t| t == user.tenant_id)
            }
            None => {
                let decoy = self.decoy_hash().await;
                let _ = self.inner.deps.hasher.verify(&input.password, &decoy).await;
                false
            }
        };
        let user_tenant = user.as_ref().map(|u| u.tenant_id.clone());
        let Some(user) = user.filter(|_| ok) else {
            // The slot taken above stays: it is the recorded failure.
            let tenant = user_tenant.unwrap_or(operator);
            self.audit(
                AuditRecord::new(tenant, "anonymous", "auth.login", AuditOutcome::Failure)
                    .details(serde_json::json!({"username": key})),
            )
            .await;
            return Err(IdentityError::Unauthorized(BAD.into()));
        };
        self.inner.throttle.succeeded(&key);
        let tenant = TenantId::parse(&user.tenant_id)
            .map_err(|e| anyhow::anyhow!("stored user has a bad tenant: {}", e.0))?;
        self.inner.deps.tenants.check_active(&tenant).await?;
        let family_id = uuid::Uuid::now_v7().to_string();
        self.inner
            .store
            .index_family(&user.tenant_id, &user.id, &family_id)
            .await?;
        self.inner
            .store
            .put_family(
                &family_id,
                &FamilyRecord {
                    user_id: user.id.clone(),
                    tenant_id: user.tenant_id.clone(),
                    revoked_at: None,
                },
            )
            .await?;
        let pair = self.issue(&user, &family_id).await?;
        self.audit(
            AuditRecord::new(
                user.tenant_id.as_str(),
                format!("user:{}", user.id),
                "auth.login",
                AuditOutcome::Success,
            )
            .resource(user.id.clone()),
        )
        .await;
        Ok(pair)
    }

    async fn issue(&self, user: &UserRecord, family_id: &str) -> Result<TokenPair, IdentityError> {
        let now = self.now();
        let config = &self.inner.config;
        let claims = AccessClaims {
            sub: user.id.clone(),
            tenant_id: user.tenant_id.clone(),
            role: user.role.clone(),
            username: user.username.clone(),
            exp: now.timestamp() + config.access_ttl_secs,
            iat: now.timestamp(),
            iss: config.issuer.clone(),
            jti: uuid::Uuid::now_v7().to_string(),
            fid: Some(family_id.to_owned()),
        };
        let access_token = self.inner.deps.signer.sign(&claims)?;
        let refresh_token = format!(
            "{REFRESH_TOKEN_PREFIX}{}",
            self.inner.deps.secrets.random_token()
        );
        let digest = self.inner.deps.secrets.digest(&refresh_token);
        self.inner
            .store
            .insert_refresh(
                &digest,
                &RefreshRecord {
                    family_id: family_id.to_owned(),
                    user_id: user.id.clone(),
                    tenant_id: user.tenant_id.clone(),
                    expires_at: now + Duration::seconds(config.refresh_ttl_secs),
                    used_at: None,
                },
            )
            .await?;
        Ok(TokenPair {
            access_token,
            expires_in: config.access_ttl_secs,
            refresh_token,
            refresh_expires_in: config.refresh_ttl_secs,
            user: UserView::of(user)?,
        })
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        record: &RefreshRecord,
    ) -> Result<(), IdentityError> {
        // Its access tokens first: they stop working at once.
        self.inner
            .revocations
            .revoke(
                family_key(family_id),
                self.inner.config.access_ttl_secs,
                self.now(),
            )
            .await?;
        self.inner
            .store
            .put_family(
                family_id,
                &FamilyRecord {
                    user_id: record.user_id.clone(),
                    tenant_id: record.tenant_id.clone(),
                    revoked_at: Some(self.now()),
                },
            )
            .await?;
        self.audit(
            AuditRecord::new(
                record.tenant_id.as_str(),
                format!("user:{}", record.user_id),
                "token.reuse_detected",
                AuditOutcome::Denied,
            )
            .resource(family_id.to_owned())
            .details(serde_json::json!({"revoked": "refresh token family"})),
        )
        .await;
        Ok(())
    }

    /// Exchanges a refresh token for a new pair. The token is single-use: presenting a used
    /// one again revokes its whole family (the legitimate holder must log in again).
    ///
    /// # Errors
    /// 401 unknown, expired, reused or revoked token, or a deleted user.
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, IdentityError> {
        const BAD: &str = "invalid or expired refresh token";
        let unauthorized = || IdentityError::Unauthorized(BAD.into());
        if !token.starts_with(REFRESH_TOKEN_PREFIX) || token.len() > 256 {
            return Err(unauthorized());
        }
        let digest = self.inner.deps.secrets.digest(token);
        let Some(entry) = self.inner.store.refresh(&digest).await? else {
            return Err(unauthorized());
        };
        let mut record = entry.value;
        let family = self.inner.store.family(&record.family_id).await?;
        if family.is_none_or(|f| f.revoked_at.is_some()) {
            return Err(unauthorized());
        }
        if record.used_at.is_some() {
            self.revoke_family(&record.family_id.clone(), &record)
                .await?;
            return Err(IdentityError::Unauthorized(
                "refresh token reused: every token of this login is revoked; log in again".into(),
            ));
        }
        let now = self.now();
        if record.expires_at <= now {
            return Err(unauthorized());
        }
        record.used_at = Some(now);
        if !self
            .inner
            .store
            .mark_refresh_used(&digest, &record, entry.version)
            .await?
        {
            // Someone exchanged it at the same moment: one of the two is a thief.
            self.revoke_family(&record.family_id.clone(), &record)
                .await?;
            return Err(unauthorized());
        }
        let Some(user) = self
            .inner
            .store
            .user(&record.tenant_id, &record.user_id)
            .await?
        else {
            return Err(unauthorized());
        };
        let tenant = TenantId::parse(&user.tenant_id)
            .map_err(|e| anyhow::anyhow!("stored user has a bad tenant: {}", e.0))?;
        self.inner.deps.tenants.check_active(&tenant).await?;
        self.issue(&user, &record.family_id).await
    }
}

//! The identity use cases: users, login, refresh-token rotation, API keys, and
//! [`Authenticate`] for the HTTP layer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use allsource_domain::{Permission, Role, TenantId};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::ports::{AccessClaims, PasswordHasher, Secrets, TokenError, TokenSigner};
use super::store::{
    ApiKeyRecord, FamilyRecord, IdentityStore, RefreshRecord, UserRecord, UsernameRecord,
};
use crate::auth::{AuthError, Authenticate, Credential};
use crate::ports::{AuditLog, AuditOutcome, AuditRecord, Clock, StateError, StateStore};
use crate::quota::{GateError, QuotaExceeded, QuotaGate, QuotaKind, TenantGate};
use crate::use_cases::FieldError;
use crate::{Caller, Principal};

/// The prefix of every API key.
pub const API_KEY_PREFIX: &str = "ask_";
/// The prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "rt_";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (hashing cost must stay bounded).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// `last_used_at` of an API key is written at most this often.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

/// Why an identity use case failed. Each variant names its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// 400 `validation_failed`.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    /// 401: bad credentials (never says whether the user exists).
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 429 `rate_limited` with `Retry-After`.
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// 429 `quota_exceeded`.
    #[error(transparent)]
    Quota(QuotaExceeded),
    /// 503.
    #[error("identity storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StateError> for IdentityError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Unavailable(why) => Self::Unavailable(why),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<GateError> for IdentityError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::QuotaExceeded(q) => Self::Quota(q),
            GateError::TenantInactive(why) => Self::Forbidden(why),
            GateError::Unavailable(why) => Self::Unavailable(why),
            GateError::Internal(cause) => Self::Internal(cause),
        }
    }
}

/// Token lifetimes and login throttling.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `iss` of issued tokens (the signer checks it on the way in).
    pub issuer: String,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// Failed logins of one username allowed within `login_window_secs` before 429.
    pub max_login_failures: usize,
    pub login_window_secs: i64,
    /// The operator tenant: its admins may create users in other tenants.
    pub operator_tenant: TenantId,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            issuer: "allsource".into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 14 * 24 * 3600,
            max_login_failures: 5,
            login_window_secs: 900,
            operator_tenant: TenantId::default_tenant(),
        }
    }
}

/// The ports the identity use cases need.
#[derive(Clone)]
pub struct IdentityDeps {
    pub state: Arc<dyn StateStore>,
    pub hasher: Arc<dyn PasswordHasher>,
    pub signer: Arc<dyn TokenSigner>,
    pub secrets: Arc<dyn Secrets>,
    pub audit: Arc<dyn AuditLog>,
    pub clock: Arc<dyn Clock>,
    pub quotas: Arc<dyn QuotaGate>,
    pub tenants: Arc<dyn TenantGate>,
}

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
    fn of(user: &UserRecord) -> Result<Self, IdentityError> {
        Ok(Self {
            id: user.id.clone(),
            username: user.username.clone(),
            tenant_id: user.tenant_id.clone(),
            role: parse_stored_role(&user.role)?,
            created_at: user.created_at,
        })
    }
}

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

/// What login and refresh hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
    pub user: UserView,
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

/// Input of login, raw.
#[derive(Debug, Clone, Default)]
pub struct LoginInput {
    pub username: String,
    pub password: String,
    /// When given, the user must belong to it.
    pub tenant_id: Option<String>,
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

fn parse_stored_role(raw: &str) -> Result<Role, IdentityError> {
    Role::parse(raw).map_err(|_| anyhow::anyhow!("stored record has unknown role '{raw}'").into())
}

/// Lower-cased username of 1–64 characters of `[a-z0-9._@-]`.
pub fn normalize_username(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_ascii_lowercase();
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters long".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
    {
        return Err("may only contain letters, digits, '.', '_', '@' and '-'".into());
    }
    Ok(name)
}

/// A password of 12 to 1024 characters.
pub fn check_password(raw: &str) -> Result<(), String> {
    let chars = raw.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Err(format!(
            "must be at least {MIN_PASSWORD_LEN} characters long"
        ));
    }
    if raw.len() > MAX_PASSWORD_LEN {
        return Err(format!("must be at most {MAX_PASSWORD_LEN} bytes long"));
    }
    Ok(())
}

/// The identity use cases (cheap to clone).
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    deps: IdentityDeps,
    store: IdentityStore,
    config: IdentityConfig,
    /// Failed logins per username, oldest first (per node).
    failures: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
    /// A hash checked when the user does not exist, so that unknown and known usernames cost
    /// the same time.
    decoy_hash: OnceLock<String>,
}

impl Identity {
    pub fn new(deps: IdentityDeps, config: IdentityConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: IdentityStore::new(deps.state.clone()),
                deps,
                config,
                failures: Mutex::new(HashMap::new()),
                decoy_hash: OnceLock::new(),
            }),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.deps.clock.now()
    }

    async fn audit(&self, record: AuditRecord) {
        // The audit log must not turn a done action into a failure; its adapter logs errors.
        let _ = self.inner.deps.audit.record(record).await;
    }

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
        let username = normalize_username(&input.username)
            .map_err(|m| errors.push(FieldError::new("username", m)))
            .ok();
        if let Err(m) = check_password(&input.password) {
            errors.push(FieldError::new("password", m));
        }
        let role = Role::parse(&input.role)
            .map_err(|e| errors.push(FieldError::new("role", e.0)))
            .ok();
        let tenant = match input.tenant_id.as_deref() {
            None => Some(caller.tenant().clone()),
            Some(raw) => TenantId::parse(raw)
                .map_err(|e| errors.push(FieldError::new("tenant_id", e.0)))
                .ok(),
        };
        let (Some(username), Some(role), Some(tenant), true) =
            (username, role, tenant, errors.is_empty())
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
            let operator = caller.tenant() == &self.inner.config.operator_tenant;
            if !(operator && caller.can(Permission::ManageTenants)) {
                return Err(IdentityError::Forbidden(
                    "users can only be created in your own tenant".into(),
                ));
            }
            self.inner.deps.tenants.check_active(&tenant).await?;
        }
        let password_hash = self.inner.deps.hasher.hash(&input.password).await?;
        let user = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            username: username.clone(),
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
                &username,
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
            .details(serde_json::json!({"username": username, "role": role.as_str()})),
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
        self.inner.store.delete_user(&user).await?;
        for (digest, key) in self.inner.store.api_keys(&user.tenant_id).await? {
            if key.owner_user_id == user.id && key.revoked_at.is_none() {
                self.revoke_record(caller, &digest, key).await?;
            }
        }
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

    fn failures_key(username: &str) -> String {
        username.trim().to_ascii_lowercase()
    }

    /// Seconds until the username may try again, if it is throttled now.
    fn throttled(&self, key: &str, now: DateTime<Utc>) -> Option<u64> {
        let window = Duration::seconds(self.inner.config.login_window_secs);
        let mut failures = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let list = failures.get_mut(key)?;
        while list.front().is_some_and(|t| *t + window <= now) {
            list.pop_front();
        }
        if list.len() >= self.inner.config.max_login_failures {
            let oldest = *list.front()?;
            let wait = (oldest + window - now).num_seconds().max(1);
            return Some(wait as u64);
        }
        None
    }

    fn record_failure(&self, key: String, now: DateTime<Utc>) {
        let mut failures = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Bound memory under a spray of random usernames: drop the failures that are out of
        // the window. Never the whole table: a spray must not reset a guessed account's count.
        if failures.len() > 100_000 {
            let window = Duration::seconds(self.inner.config.login_window_secs);
            failures.retain(|_, list| list.back().is_some_and(|t| *t + window > now));
        }
        failures.entry(key).or_default().push_back(now);
    }

    fn clear_failures(&self, key: &str) {
        let mut failures = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }

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
        let key = Self::failures_key(&input.username);
        // Records of refused logins go to the user's tenant when the user exists, else to the
        // operator tenant: never to a tenant the anonymous request names.
        let operator = self.inner.config.operator_tenant.as_str().to_owned();
        if let Some(retry_after_secs) = self.throttled(&key, now) {
            self.audit(
                AuditRecord::new(operator, "anonymous", "auth.login", AuditOutcome::Denied)
                    .details(serde_json::json!({"username": key, "reason": "throttled"})),
            )
            .await;
            return Err(IdentityError::Throttled { retry_after_secs });
        }
        let user = match normalize_username(&input.username) {
            Ok(name) => match self.inner.store.username(&name).await? {
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
            self.record_failure(key.clone(), now);
            let tenant = user_tenant.unwrap_or(operator);
            self.audit(
                AuditRecord::new(tenant, "anonymous", "auth.login", AuditOutcome::Failure)
                    .details(serde_json::json!({"username": key})),
            )
            .await;
            return Err(IdentityError::Unauthorized(BAD.into()));
        };
        self.clear_failures(&key);
        let tenant = TenantId::parse(&user.tenant_id)
            .map_err(|e| anyhow::anyhow!("stored user has a bad tenant: {}", e.0))?;
        self.inner.deps.tenants.check_active(&tenant).await?;
        let family_id = uuid::Uuid::now_v7().to_string();
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
        };
        if let Err(e) = self.inner.store.insert_api_key(&digest, &record).await {
            self.inner
                .deps
                .quotas
                .release(&tenant, QuotaKind::ApiKeys, 1)
                .await;
            return Err(e.into());
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
        if key.revoked_at.is_some() {
            return ApiKeyView::of(&key);
        }
        self.revoke_record(caller, &digest, key).await
    }

    async fn revoke_record(
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

fn require_admin(caller: &Caller) -> Result<(), IdentityError> {
    if caller.can(Permission::Admin) {
        Ok(())
    } else {
        Err(IdentityError::Forbidden("only admins manage users".into()))
    }
}

fn state_to_auth(e: StateError) -> AuthError {
    match e {
        StateError::Unavailable(why) => AuthError::Unavailable(why),
        other => AuthError::Internal(anyhow::Error::new(other)),
    }
}

fn gate_to_auth(e: GateError) -> AuthError {
    match e {
        GateError::TenantInactive(why) => AuthError::Forbidden(why),
        GateError::QuotaExceeded(q) => AuthError::Forbidden(q.to_string()),
        GateError::Unavailable(why) => AuthError::Unavailable(why),
        GateError::Internal(cause) => AuthError::Internal(cause),
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

//! The core of the identity use cases: [`Identity`] (the use cases hang off it, one module
//! per seam: `users`, `sessions`, `api_keys`, `authentication`), its ports and settings
//! ([`IdentityDeps`], [`IdentityConfig`]) and its errors ([`IdentityError`]).

use std::sync::{Arc, OnceLock};

use allsource_domain::{Password, Permission, Role};
use chrono::{DateTime, Utc};

use super::ports::{PasswordHasher, Secrets, TokenSigner};
use super::revocations::Revocations;
use super::store::IdentityStore;
use super::throttle::LoginThrottle;
use crate::Caller;
use crate::auth::AuthError;
use crate::ports::{AuditLog, AuditRecord, Clock, StateError, StateStore};
use crate::quota::{GateError, QuotaExceeded, QuotaGate, TenantGate};
use crate::use_cases::FieldError;

/// The prefix of every API key.
pub const API_KEY_PREFIX: &str = "ask_";
/// The prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "rt_";
/// Shortest password accepted ([`Password::MIN_CHARS`]).
pub const MIN_PASSWORD_LEN: usize = Password::MIN_CHARS;
/// Longest password accepted, in bytes ([`Password::MAX_BYTES`]).
pub const MAX_PASSWORD_LEN: usize = Password::MAX_BYTES;

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
    /// Logins of one username allowed to fail within `login_window_secs` before 429. Each
    /// attempt takes its slot before the password is checked, so parallel guesses cannot
    /// exceed it.
    pub max_login_failures: usize,
    pub login_window_secs: i64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            issuer: "allsource".into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 14 * 24 * 3600,
            max_login_failures: 5,
            login_window_secs: 900,
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

/// The identity use cases (cheap to clone).
#[derive(Clone)]
pub struct Identity {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) deps: IdentityDeps,
    pub(super) store: IdentityStore,
    pub(super) config: IdentityConfig,
    /// Login attempts per username (per node).
    pub(super) throttle: LoginThrottle,
    /// Revoked users and logins whose access tokens are refused before they expire.
    pub(super) revocations: Revocations,
    /// A hash checked when the user does not exist, so that unknown and known usernames cost
    /// the same time.
    pub(super) decoy_hash: OnceLock<String>,
}

impl Identity {
    pub fn new(deps: IdentityDeps, config: IdentityConfig) -> Self {
        let store = IdentityStore::new(deps.state.clone());
        Self {
            inner: Arc::new(Inner {
                throttle: LoginThrottle::new(config.max_login_failures, config.login_window_secs),
                revocations: Revocations::new(store.clone()),
                store,
                deps,
                config,
                decoy_hash: OnceLock::new(),
            }),
        }
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        self.inner.deps.clock.now()
    }

    pub(super) async fn audit(&self, record: AuditRecord) {
        // The audit log must not turn a done action into a failure; its adapter logs errors.
        let _ = self.inner.deps.audit.record(record).await;
    }
}

pub(super) fn parse_stored_role(raw: &str) -> Result<Role, IdentityError> {
    Role::parse(raw).map_err(|_| anyhow::anyhow!("stored record has unknown role '{raw}'").into())
}

pub(super) fn require_admin(caller: &Caller) -> Result<(), IdentityError> {
    if caller.can(Permission::Admin) {
        Ok(())
    } else {
        Err(IdentityError::Forbidden("only admins manage users".into()))
    }
}

pub(super) fn state_to_auth(e: StateError) -> AuthError {
    match e {
        StateError::Unavailable(why) => AuthError::Unavailable(why),
        other => AuthError::Internal(anyhow::Error::new(other)),
    }
}

pub(super) fn gate_to_auth(e: GateError) -> AuthError {
    match e {
        GateError::TenantInactive(why) => AuthError::Forbidden(why),
        GateError::QuotaExceeded(q) => AuthError::Forbidden(q.to_string()),
        GateError::Unavailable(why) => AuthError::Unavailable(why),
        GateError::Internal(cause) => AuthError::Internal(cause),
    }
}

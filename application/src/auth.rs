//! Authentication as the HTTP layer sees it: a [`Credential`] taken from the request goes in,
//! a [`Caller`] comes out. The implementation (JWTs, API keys, tenants' status) lives in the
//! identity use cases; the HTTP layer only knows this trait.

use async_trait::async_trait;

use crate::Caller;

/// A credential as it arrived.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`: a JWT access token, or an API key (`ask_...`).
    Bearer(String),
    /// `X-API-Key: ask_...`.
    ApiKey(String),
}

impl std::fmt::Debug for Credential {
    // Credentials are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
        }
    }
}

/// Why a credential was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: invalid, expired, revoked or unknown credential. The message may be shown.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid credential that may not act now (its tenant is deactivated).
    #[error("{0}")]
    Forbidden(String),
    /// 503.
    #[error("authentication storage unavailable: {0}")]
    Unavailable(String),
    /// 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Turns credentials into callers.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Authenticate: Send + Sync {
    /// The caller the credential stands for.
    ///
    /// # Errors
    /// See [`AuthError`].
    async fn authenticate(&self, credential: Credential) -> Result<Caller, AuthError>;
}

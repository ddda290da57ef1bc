//! Ports of the identity use cases: what needs cryptography. Adapters live in
//! `allsource-infrastructure::identity` (Argon2id, HS256 JWTs with `kid` rotation, SHA-256 and
//! the operating system's random source).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The claims of an access token (a JWT; its header carries the signing key's `kid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user's id.
    pub sub: String,
    pub tenant_id: String,
    /// The role name (`admin`, `developer`, `readonly`, `service_account`).
    pub role: String,
    pub username: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    pub iss: String,
    /// A unique token id.
    pub jti: String,
    /// The refresh-token family (the login) the token was issued in: revoking the family
    /// (reuse detected) refuses its access tokens at once. Absent in tokens of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid: Option<String>,
}

/// Why a token was refused. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    /// Bad signature, unknown or retired `kid`, wrong algorithm or issuer, malformed claims.
    #[error("invalid access token: {0}")]
    Invalid(String),
}

/// Signs and verifies access tokens.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TokenSigner: Send + Sync {
    /// A signed token for the claims, with the newest key.
    ///
    /// # Errors
    /// Only when the claims cannot be encoded (internal).
    fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String>;

    /// The claims of a token signed by one of the configured, non-retired keys, with the
    /// pinned algorithm, the configured issuer and an expiry in the future.
    ///
    /// # Errors
    /// [`TokenError::Expired`] or [`TokenError::Invalid`]; adapters MUST refuse `alg: none`
    /// and every algorithm but the pinned one.
    fn verify(&self, token: &str) -> Result<AccessClaims, TokenError>;
}

/// Hashes and checks passwords (slow on purpose).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    /// A self-describing hash (PHC string) of the password with a fresh salt.
    ///
    /// # Errors
    /// Internal only.
    async fn hash(&self, password: &str) -> anyhow::Result<String>;

    /// Whether the password matches the hash. A malformed hash is `false`, never a panic.
    async fn verify(&self, password: &str, hash: &str) -> bool;
}

/// Random secrets and their digests (API keys and refresh tokens are stored only as digests).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Secrets: Send + Sync {
    /// 32 random bytes from a cryptographically secure source, base64url without padding.
    fn random_token(&self) -> String;

    /// The SHA-256 digest of the secret, lowercase hex.
    fn digest(&self, secret: &str) -> String;
}

//! Identity: users (Argon2id password hashes, created only by admins), login with short-lived
//! JWT access tokens and rotating refresh tokens (reuse revokes the family), API keys
//! (`ask_...`, stored as SHA-256 digests), and the [`Authenticate`](crate::auth::Authenticate)
//! implementation the HTTP layer calls.
//!
//! # Layout
//! - [`ports`]: `PasswordHasher`, `TokenSigner`, `Secrets` (crypto lives in infrastructure).
//! - `store`: the records and their keys in the `StateStore` (reserved tenant `_identity`).
//! - `service`: [`Identity`], the use cases.

pub mod ports;
mod service;
mod store;
#[cfg(test)]
mod tests;

pub use service::{
    API_KEY_PREFIX, ApiKeyView, CreateApiKeyInput, CreateUserInput, CreatedApiKey, Identity,
    IdentityConfig, IdentityDeps, IdentityError, LoginInput, MIN_PASSWORD_LEN, MeView,
    REFRESH_TOKEN_PREFIX, TokenPair, UserView, check_password, normalize_username,
};
pub use store::IDENTITY_TENANT;

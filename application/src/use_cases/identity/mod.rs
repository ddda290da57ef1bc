//! Identity: users (Argon2id password hashes, created only by admins), login with short-lived
//! JWT access tokens and rotating refresh tokens (reuse revokes the family), API keys
//! (`ask_...`, stored as SHA-256 digests), the revocation list that stops access tokens of
//! deleted users and revoked logins at once, and the
//! [`Authenticate`](crate::auth::Authenticate) implementation the HTTP layer calls.
//!
//! # Layout
//! - [`ports`]: `PasswordHasher`, `TokenSigner`, `Secrets` (crypto lives in infrastructure).
//! - `store`: the records and their keys in the `StateStore` (reserved tenant `_identity`).
//! - `service`: [`Identity`] itself, its dependencies, settings and errors.
//! - `users`: create, list, read and delete users ([`Username`](allsource_domain::Username) and
//!   [`Password`](allsource_domain::Password) are the domain's value objects).
//! - `sessions`: login, refresh-token rotation and reuse detection.
//! - `throttle`: the login throttle (check and count in one step).
//! - `api_keys`: create, list and revoke API keys (a key's children never outlive it).
//! - `authentication`: credentials to callers, `/auth/me`.
//! - `revocations`: the revocation list checked on every authenticated request.
//! - `tenants`: what goes when a tenant is deleted.

mod api_keys;
mod authentication;
pub mod ports;
mod revocations;
mod service;
mod sessions;
mod store;
mod tenants;
#[cfg(test)]
mod tests;
mod throttle;
mod users;

pub use api_keys::{ApiKeyView, CreateApiKeyInput, CreatedApiKey};
pub use authentication::MeView;
pub use revocations::REVOCATION_RELOAD_MILLIS;
pub use service::{
    API_KEY_PREFIX, Identity, IdentityConfig, IdentityDeps, IdentityError, MAX_PASSWORD_LEN,
    MIN_PASSWORD_LEN, REFRESH_TOKEN_PREFIX,
};
pub use sessions::{LoginInput, TokenPair};
pub use store::IDENTITY_TENANT;
pub use users::{CreateUserInput, UserView, check_password, normalize_username};

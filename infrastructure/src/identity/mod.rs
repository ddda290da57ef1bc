//! Adapters of the identity ports: [`Argon2Hasher`] (Argon2id, PHC strings),
//! [`JwtSigner`] (HS256 only, several keys by `kid`: the newest signs, the others verify until
//! retired), [`OsSecrets`] (the operating system's CSPRNG, SHA-256 digests).

use std::collections::HashMap;

use allsource_application::use_cases::identity::ports::{
    AccessClaims, PasswordHasher, Secrets, TokenError, TokenSigner,
};
use anyhow::Context;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::{Digest as _, Sha256};

/// Shortest signing secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Argon2id with the crate's default (OWASP-recommended) parameters. Hashing runs on a
/// blocking thread: it takes tens of milliseconds on purpose, and ~19 MiB of memory each, so
/// at most [`ARGON2_AT_ONCE`] run at a time and the others wait (a spray of logins queues
/// instead of exhausting memory).
#[derive(Debug, Clone, Copy, Default)]
pub struct Argon2Hasher;

/// Argon2 computations that may run at once, in the whole process.
pub const ARGON2_AT_ONCE: usize = 4;
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(ARGON2_AT_ONCE);

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

impl Argon2Hasher {
    /// Hashes on the current thread (CLI use, outside a runtime).
    ///
    /// # Errors
    /// No random source, or an argon2 failure.
    pub fn hash_now(password: &str) -> anyhow::Result<String> {
        hash_blocking(password)
    }
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let password = password.to_owned();
        let slot = ARGON2_SLOTS
            .acquire()
            .await
            .context("password hashing is shut down")?;
        // The slot moves into the task: it is held until the computation ends, even when the
        // request that asked for it is gone.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            hash_blocking(&password)
        })
        .await
        .context("password hashing task failed")?
    }

    async fn verify(&self, password: &str, hash: &str) -> bool {
        let (password, hash) = (password.to_owned(), hash.to_owned());
        let Ok(slot) = ARGON2_SLOTS.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            verify_blocking(&password, &hash)
        })
        .await
        .unwrap_or(false)
    }
}

/// Random tokens from the OS and SHA-256 digests.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsSecrets;

impl Secrets for OsSecrets {
    fn random_token(&self) -> String {
        let mut bytes = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut bytes) {
            // Without a random source no secret can be made safely: stop rather than issue a
            // guessable one.
            panic!("the operating system's random source failed: {e}");
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn digest(&self, secret: &str) -> String {
        let digest = Sha256::digest(secret.as_bytes());
        let mut out = String::with_capacity(64);
        for byte in digest {
            use std::fmt::Write as _;
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

/// A signing key: its id and secret.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// HS256 JWTs. The first key signs; every key verifies tokens carrying its `kid`; a token
/// whose `kid` is retired or unknown is refused.
pub struct JwtSigner {
    signing_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    retired: Vec<String>,
    validation: Validation,
}

impl JwtSigner {
    /// Keys newest first; `retired` kids are refused even if still listed.
    ///
    /// # Errors
    /// No usable key, an empty or duplicate kid, or a secret shorter than
    /// [`MIN_SECRET_BYTES`].
    pub fn new(keys: Vec<SigningKey>, retired: Vec<String>, issuer: &str) -> anyhow::Result<Self> {
        let mut decoding = HashMap::new();
        for key in &keys {
            if key.kid.trim().is_empty() {
                anyhow::bail!("a signing key has an empty kid");
            }
            if key.secret.len() < MIN_SECRET_BYTES {
                anyhow::bail!(
                    "the signing key '{}' is {} bytes long; at least {MIN_SECRET_BYTES} are needed",
                    key.kid,
                    key.secret.len()
                );
            }
            if retired.contains(&key.kid) {
                continue;
            }
            if decoding
                .insert(key.kid.clone(), DecodingKey::from_secret(&key.secret))
                .is_some()
            {
                anyhow::bail!("the signing key id '{}' appears twice", key.kid);
            }
        }
        let Some(newest) = keys.iter().find(|k| !retired.contains(&k.kid)) else {
            anyhow::bail!("no signing key is configured (or every key is retired)");
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        Ok(Self {
            signing_kid: newest.kid.clone(),
            encoding: EncodingKey::from_secret(&newest.secret),
            decoding,
            retired,
            validation,
        })
    }

    /// The kid new tokens are signed with.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }
}

impl TokenSigner for JwtSigner {
    fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("cannot sign a token")
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        // The header is read only to pick the key; the algorithm is pinned by the validation.
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.alg != Algorithm::HS256 {
            return Err(invalid("algorithm not allowed"));
        }
        let kid = header.kid.ok_or_else(|| invalid("no kid in the header"))?;
        if self.retired.contains(&kid) {
            return Err(invalid("the signing key has been retired"));
        }
        let key = self
            .decoding
            .get(&kid)
            .ok_or_else(|| invalid("unknown signing key"))?;
        match jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidAlgorithm => invalid("algorithm not allowed"),
                ErrorKind::MissingRequiredClaim(_) => invalid("a required claim is missing"),
                _ => invalid("malformed token"),
            }),
        }
    }
}

#[cfg(test)]
mod tests;

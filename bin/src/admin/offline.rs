//! The offline admin command: administration on a stopped server's data, without HTTP.
//!
//! `admin create-user` creates a user (any role, including the first admin) directly in the
//! state store: the embedded data dir (refused while a server holds it) or, with
//! `storage.backend = "postgres"` from `--config`/the environment, the database.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use allsource_application::Caller;
use allsource_application::ports::StateStore;
use allsource_application::use_cases::identity::{
    CreateUserInput, Identity, IdentityConfig, IdentityDeps, IdentityError,
};
use allsource_domain::TenantId;
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::audit::MemoryAuditLog;
use allsource_infrastructure::embedded::{DataDirLock, LockError};
use allsource_infrastructure::identity::{Argon2Hasher, JwtSigner, OsSecrets, SigningKey};
use allsource_infrastructure::postgres::{PostgresConfig, PostgresStore};
use allsource_infrastructure::state::FileStateStore;
use anyhow::Context;
use clap::Args;

use crate::settings::{Backend, Overrides, Settings};

/// The flags of `admin create-user`.
#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// Data directory of the embedded store (storage.data_dir). Must not be in use.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Config file (TOML), e.g. for storage.backend = "postgres" and storage.postgres.url.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Username (1–64 of a-z 0-9 . _ @ -; stored lower-case, unique per deployment).
    #[arg(long)]
    pub username: String,
    /// Password (at least 12 characters). Prefer --password-stdin: arguments are visible
    /// to other users of the machine.
    #[arg(
        long,
        conflicts_with = "password_stdin",
        required_unless_present = "password_stdin"
    )]
    pub password: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Role: admin, developer, readonly or service_account.
    #[arg(long)]
    pub role: String,
    /// Tenant of the user.
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

/// `admin create-user`: writes the user straight into the state store.
///
/// # Errors
/// Invalid input (naming the flag), a data dir in use, storage failures.
pub fn create_user(args: CreateUserArgs) -> anyhow::Result<()> {
    let password = match (&args.password, args.password_stdin) {
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_to_string(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
        _ => anyhow::bail!("give exactly one of --password and --password-stdin"),
    };
    let tenant = TenantId::parse(&args.tenant)
        .map_err(|e| anyhow::anyhow!("--tenant {}: {}", args.tenant, e.0))?;
    // `dev` only skips the signing-secret check: this command signs no token.
    let settings = Settings::load(
        args.config.as_deref(),
        Overrides {
            data_dir: args.data_dir.clone(),
            dev: true,
            ..Overrides::default()
        },
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Held until the user is written, so no server opens the dir meanwhile.
        let mut _lock = None;
        let state: Arc<dyn StateStore> = match settings.storage.backend {
            Backend::Memory => anyhow::bail!(
                "storage.backend = memory keeps no users across restarts; use the embedded or \
                 postgres backend"
            ),
            Backend::Embedded => {
                let dir = settings.storage.data_dir.clone();
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
                let lock = match DataDirLock::acquire(&dir) {
                    Ok(lock) => lock,
                    Err(LockError::InUse { .. }) => anyhow::bail!(
                        "the data dir {} is in use by a running server: stop it first, or \
                         create the user over HTTP (POST /api/v1/auth/users as an admin)",
                        dir.display()
                    ),
                    Err(e) => return Err(e.into()),
                };
                _lock = Some(lock);
                let state_dir = dir.join("state");
                Arc::new(
                    tokio::task::spawn_blocking(move || FileStateStore::open(&state_dir))
                        .await
                        .context("opening the state store panicked")??,
                )
            }
            Backend::Postgres => {
                let config = PostgresConfig {
                    url: settings.storage.postgres.url.clone(),
                    max_connections: 2,
                    acquire_timeout: std::time::Duration::from_millis(
                        settings.storage.postgres.acquire_timeout_ms,
                    ),
                    // Offline commands read and write the primary only.
                    ..PostgresConfig::default()
                };
                let store = PostgresStore::connect(&config, Arc::new(SystemClock)).await?;
                Arc::new(allsource_infrastructure::state::PostgresStateStore::new(
                    store.pool().clone(),
                ))
            }
        };
        let identity = offline_identity(state)?;
        let user = identity
            .create_user(
                &Caller::new(tenant),
                CreateUserInput {
                    username: args.username,
                    password,
                    role: args.role,
                    tenant_id: None,
                },
            )
            .await
            .map_err(|e| match e {
                IdentityError::Validation(errors) => anyhow::anyhow!(
                    "{}",
                    errors
                        .iter()
                        .map(|e| format!("--{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                other => anyhow::Error::new(other),
            })?;
        println!(
            "{}",
            serde_json::json!({
                "id": user.id,
                "username": user.username,
                "tenant_id": user.tenant_id,
                "role": user.role.as_str(),
            })
        );
        Ok(())
    })
}

/// Identity use cases for offline administration: they never sign a token, so the signer gets
/// a throwaway random key.
fn offline_identity(state: Arc<dyn StateStore>) -> anyhow::Result<Identity> {
    use allsource_application::use_cases::identity::ports::Secrets as _;
    let throwaway = SigningKey {
        kid: "offline".into(),
        secret: OsSecrets.random_token().into_bytes(),
    };
    Ok(Identity::new(
        IdentityDeps {
            state,
            hasher: Arc::new(Argon2Hasher),
            signer: Arc::new(JwtSigner::new(vec![throwaway], vec![], "allsource")?),
            secrets: Arc::new(OsSecrets),
            audit: Arc::new(MemoryAuditLog::new()),
            clock: Arc::new(SystemClock),
            quotas: Arc::new(allsource_application::quota::Unlimited),
            tenants: Arc::new(allsource_application::quota::Unlimited),
        },
        IdentityConfig::default(),
    ))
}

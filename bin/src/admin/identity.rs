//! `allsource admin users|keys|whoami`: `/api/v1/auth/users`, `/api/v1/auth/api-keys` and
//! `/api/v1/auth/me`. Nobody creates a user or a key with a role above their own; a new key
//! is shown once.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{CliError, Client, Conn, EXIT_CODES_HELP};
use super::output::{OBJECT, Output, View, col, note};
use super::{emit, read_password};

/// `admin users`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin users list
  printf '%s\\n' 'a long password 123' | allsource admin users create --username bob --password-stdin --role developer
  allsource admin users delete USER_ID

", exit_codes!()))]
pub struct UsersArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// The user subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users (the caller's tenant; operators: all)
    List,
    /// Show one user
    Show { id: String },
    /// Create a user (role at most the caller's)
    Create {
        /// 1-64 of a-z 0-9 . _ @ - (unique per deployment).
        #[arg(long)]
        username: String,
        /// Password (12-1024 characters). Prefer --password-stdin: arguments are visible to
        /// other users of the machine.
        #[arg(
            long,
            conflicts_with = "password_stdin",
            required_unless_present = "password_stdin"
        )]
        password: Option<String>,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// admin, developer, readonly or service_account.
        #[arg(long)]
        role: String,
        /// Tenant of the user (default: the caller's; only operators may name another).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a user: its tokens and API keys stop working at once
    Delete { id: String },
}

/// `admin keys`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin keys create --name ci --role service_account
  KEY=$(allsource admin keys create --name ci --output json | jq -r .key)
  allsource admin keys list
  allsource admin keys revoke KEY_ID

", exit_codes!()))]
pub struct KeysArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The API-key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List API keys (admins: the tenant's; others: their own)
    List,
    /// Create an API key; the key itself is shown this once
    Create {
        #[arg(long)]
        name: String,
        /// Role (default: the caller's; never above it).
        #[arg(long)]
        role: Option<String>,
        /// Expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z); default: none.
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// Revoke an API key: it stops working at once (so do keys it made)
    Revoke { id: String },
}

/// `admin whoami`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub conn: Conn,
}

const USERS: View = View::List {
    key: "users",
    noun: "users",
    columns: &[
        col("ID", "/id"),
        col("USERNAME", "/username"),
        col("TENANT", "/tenant_id"),
        col("ROLE", "/role"),
        col("CREATED", "/created_at"),
    ],
};

const KEYS: View = View::List {
    key: "api_keys",
    noun: "API keys",
    columns: &[
        col("ID", "/id"),
        col("NAME", "/name"),
        col("TENANT", "/tenant_id"),
        col("ROLE", "/role"),
        col("PREFIX", "/prefix"),
        col("EXPIRES", "/expires_at"),
        col("REVOKED", "/revoked_at"),
        col("LAST USED", "/last_used_at"),
    ],
};

/// Runs a user subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn users(client: &Client, command: UsersCommand) -> Result<(), CliError> {
    match command {
        UsersCommand::List => emit(client, &client.get(&["auth", "users"], &[]).await?, USERS),
        UsersCommand::Show { id } => emit(
            client,
            &client.get(&["auth", "users", &id], &[]).await?,
            OBJECT,
        ),
        UsersCommand::Create {
            username,
            password,
            password_stdin,
            role,
            tenant,
        } => {
            let password = read_password(password, password_stdin)?;
            let mut body = json!({"username": username, "password": password, "role": role});
            if let Some(tenant) = tenant {
                body["tenant_id"] = json!(tenant);
            }
            emit(
                client,
                &client.post(&["auth", "users"], Some(&body)).await?,
                OBJECT,
            )
        }
        UsersCommand::Delete { id } => emit(
            client,
            &client.delete(&["auth", "users", &id]).await?,
            OBJECT,
        ),
    }
}

/// Runs an API-key subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn keys(client: &Client, command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::List => emit(client, &client.get(&["auth", "api-keys"], &[]).await?, KEYS),
        KeysCommand::Create {
            name,
            role,
            expires_at,
        } => {
            let mut body = json!({"name": name});
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            if let Some(expires_at) = expires_at {
                body["expires_at"] = json!(expires_at);
            }
            let answer = client.post(&["auth", "api-keys"], Some(&body)).await?;
            emit(client, &answer, OBJECT)?;
            if client.output == Output::Table
                && answer.body.get("key").is_some_and(Value::is_string)
            {
                note("Store the key now: the server keeps only a digest and never shows it again.");
            }
            Ok(())
        }
        KeysCommand::Revoke { id } => emit(
            client,
            &client.delete(&["auth", "api-keys", &id]).await?,
            OBJECT,
        ),
    }
}

/// `admin whoami`.
///
/// # Errors
/// See [`CliError`].
pub async fn whoami(client: &Client) -> Result<(), CliError> {
    emit(client, &client.get(&["auth", "me"], &[]).await?, OBJECT)
}

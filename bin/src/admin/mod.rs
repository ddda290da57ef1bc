//! `allsource admin ...`: administration of AllSource.
//!
//! Online commands talk to a running server over its REST API, with the credential of
//! `--token`/`ALLSOURCE_TOKEN` (an access token or an API key) at `--url`/`ALLSOURCE_URL`:
//! tenants, users, API keys, stats, schemas, projections, consumers and consumer groups,
//! backups, compaction, and `tail`, which follows the log through the WebSocket. They change
//! what the server holds, through the same checks as any client (roles, tenancy, policies,
//! audit). The offline command `create-user` writes into a stopped server's data dir (or
//! PostgreSQL), e.g. for the first admin.
//!
//! # Layout
//! - [`client`] — the shared flags ([`Conn`]), the HTTP client, problem documents, and the
//!   mapping of every failure to a message and an exit code.
//! - [`output`] — `--output table|json`.
//! - one module per resource group: [`tenants`], [`identity`] (users, keys, whoami),
//!   [`schemas`], [`projections`], [`consumers`] (consumers and consumer groups), [`backups`],
//!   [`store`] (stats, compaction), [`tail`].
//! - [`offline`] — `create-user`.
//! - [`postgres`] — `postgres-partition`, straight on the postgres backend's database.

/// The exit codes as help text (a macro, so that `concat!` can put it into long help).
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success
  1  other failure (a local file cannot be read, an unexpected answer, a stream cut off)
  2  usage error (unknown flag, missing argument, invalid local input)
  3  server unreachable (not running, wrong --url, no answer within --timeout)
  4  credential refused (401) or not allowed (403)
  5  not found (404)
  6  other client error (400 invalid input, 409 conflict, 429 rate limit or quota)
  7  server error (5xx)"
    };
}

pub mod backups;
pub mod client;
pub mod consumers;
pub mod identity;
pub mod offline;
pub mod output;
pub mod postgres;
pub mod projections;
pub mod schemas;
pub mod store;
pub mod tail;
pub mod tenants;

use std::io::Read as _;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

pub use client::{CliError, Client, Conn, EXIT_CODES_HELP};
use output::View;

/// The long help of `allsource admin`.
pub const ADMIN_HELP: &str = concat!(
    "\
Online commands talk to a running server:
  --url URL       or ALLSOURCE_URL    (default http://127.0.0.1:3900)
  --token TOKEN   or ALLSOURCE_TOKEN  (an access token or an API key ask_...; not needed
                                       against `serve --dev`)
  --output table|json, or ALLSOURCE_OUTPUT (json: the server's JSON, unchanged)
  --timeout SECONDS (default 30)
These flags may follow the subcommand.

Examples:
  export ALLSOURCE_URL=http://127.0.0.1:3900 ALLSOURCE_TOKEN=ask_...
  allsource admin whoami
  allsource admin tenants create acme --name 'Acme Corp' --tier professional
  allsource admin keys create --name ci --role service_account --output json
  allsource admin tail --filter 'order.*' --from-position 0

",
    exit_codes!(),
    "

Offline: `create-user` works on a stopped server's data dir (or PostgreSQL), without HTTP;
`postgres-partition` works on the postgres backend's database."
);

/// Administration commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user with a role in a tenant (e.g. the first admin), offline
    ///
    /// Example (choose your own password, at least 12 characters; refused while a server
    /// uses the data dir):
    ///
    ///   printf '%s\n' 'correct horse battery' | allsource admin create-user --data-dir ./data --username alice --password-stdin --role admin --tenant default
    #[command(verbatim_doc_comment)]
    CreateUser(offline::CreateUserArgs),
    /// Partition the postgres backend's log by tenant (hash), on the database
    ///
    /// One transaction: appends and reads of every node wait until it commits; any failure
    /// leaves the log as it was. Running it again with the same --partitions changes nothing.
    ///
    /// Example:
    ///
    ///   allsource admin postgres-partition --url postgres://postgres@127.0.0.1:5432/allsource --partitions 16
    #[command(verbatim_doc_comment)]
    PostgresPartition(postgres::PartitionArgs),
    /// Tenants: list, show, create, update, delete, stats, quotas, activate, deactivate
    Tenants(tenants::TenantsArgs),
    /// Users: list, show, create, delete
    Users(identity::UsersArgs),
    /// API keys: list, create, revoke
    Keys(identity::KeysArgs),
    /// Who the credential is: tenant, role, permissions
    Whoami(identity::WhoamiArgs),
    /// Event figures of the caller's tenant and the storage backend
    Stats(store::StatsArgs),
    /// Schema registry: list, show, versions, register, compatibility
    Schemas(schemas::SchemasArgs),
    /// Projections: list, show, create, delete, state, rebuild
    Projections(projections::ProjectionsArgs),
    /// Durable consumers: list, show, create, delete, events, ack
    Consumers(consumers::ConsumersArgs),
    /// Consumer groups: list, show, stats, parked, replay-parked, delete
    ConsumerGroups(consumers::GroupsArgs),
    /// Backups: list, show, create, verify
    Backups(backups::BackupsArgs),
    /// Compaction of Parquet files (embedded backend): stats, trigger
    Compaction(store::CompactionArgs),
    /// Follow the log live (WebSocket), one line per event
    Tail(tail::TailArgs),
}

/// Runs an admin command and gives the process's exit code (see [`ADMIN_HELP`]).
pub fn run(command: AdminCommand) -> ExitCode {
    // The commands that work without HTTP, on the data themselves.
    let command = match command {
        AdminCommand::CreateUser(args) => return local_exit_code(offline::create_user(args)),
        AdminCommand::PostgresPartition(args) => {
            return local_exit_code(postgres::partition(args));
        }
        online => online,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(client::EXIT_FAILURE);
        }
    };
    match runtime.block_on(online(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The exit code of a command that works without HTTP: its error printed, exit code 1.
fn local_exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn online(command: AdminCommand) -> Result<(), CliError> {
    match command {
        AdminCommand::CreateUser(_) => Err(CliError::Other("create-user runs offline".to_owned())),
        AdminCommand::PostgresPartition(_) => Err(CliError::Other(
            "postgres-partition runs on the database".to_owned(),
        )),
        AdminCommand::Tenants(args) => tenants::run(&Client::new(&args.conn)?, args.command).await,
        AdminCommand::Users(args) => identity::users(&Client::new(&args.conn)?, args.command).await,
        AdminCommand::Keys(args) => identity::keys(&Client::new(&args.conn)?, args.command).await,
        AdminCommand::Whoami(args) => identity::whoami(&Client::new(&args.conn)?).await,
        AdminCommand::Stats(args) => store::stats(&Client::new(&args.conn)?).await,
        AdminCommand::Schemas(args) => schemas::run(&Client::new(&args.conn)?, args.command).await,
        AdminCommand::Projections(args) => {
            projections::run(&Client::new(&args.conn)?, args.command).await
        }
        AdminCommand::Consumers(args) => {
            consumers::consumers(&Client::new(&args.conn)?, args.command).await
        }
        AdminCommand::ConsumerGroups(args) => {
            consumers::groups(&Client::new(&args.conn)?, args.command).await
        }
        AdminCommand::Backups(args) => backups::run(&Client::new(&args.conn)?, args.command).await,
        AdminCommand::Compaction(args) => {
            store::compaction(&Client::new(&args.conn)?, args.command).await
        }
        AdminCommand::Tail(args) => tail::run(&Client::new(&args.conn)?, args).await,
    }
}

/// Prints an answer in the client's `--output` format.
fn emit(client: &Client, answer: &client::Answer, view: View) -> Result<(), CliError> {
    output::print(&output::render(client.output, answer, view))
}

/// A JSON argument: inline JSON (starting with `{` or `[`), `-` for standard input, or the
/// path of a file.
///
/// # Errors
/// A file that cannot be read (1), text that is not JSON (2, naming the flag).
fn read_json(flag: &str, arg: &str) -> Result<Value, CliError> {
    let trimmed = arg.trim_start();
    let (text, from) = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        (arg.to_owned(), "the argument".to_owned())
    } else if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Other(format!("{flag}: cannot read standard input: {e}")))?;
        (text, "standard input".to_owned())
    } else {
        let text = std::fs::read_to_string(arg)
            .map_err(|e| CliError::Other(format!("{flag} {arg}: cannot read the file: {e}")))?;
        (text, arg.to_owned())
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{flag}: {from} is not valid JSON: {e}")))
}

/// A password from `--password` or one line of standard input (`--password-stdin`).
fn read_password(password: Option<String>, from_stdin: bool) -> Result<String, CliError> {
    match (password, from_stdin) {
        (Some(p), false) => Ok(p),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().read_to_string(&mut line).map_err(|e| {
                CliError::Other(format!("cannot read the password from standard input: {e}"))
            })?;
            Ok(line.trim_end_matches(['\r', '\n']).to_owned())
        }
        _ => Err(CliError::Usage(
            "give exactly one of --password and --password-stdin".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AdminCommand,
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_flags_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
            "admin",
            "tenants",
            "list",
            "--url",
            "http://h:1",
            "--output",
            "json",
            "--timeout",
            "5",
            "--token",
            "ask_x",
        ])
        .unwrap();
        let AdminCommand::Tenants(args) = cli.command else {
            panic!("tenants");
        };
        assert_eq!(args.conn.url, "http://h:1");
        assert_eq!(args.conn.output, output::Output::Json);
        assert_eq!(args.conn.timeout, 5);
        assert_eq!(args.conn.token.as_deref(), Some("ask_x"));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            vec!["admin", "tenants", "list", "--output", "yaml"],
            vec!["admin", "tenants", "list", "--timeout", "0"],
            vec!["admin", "tenants", "frobnicate"],
            vec!["admin", "tail", "--limit", "many"],
        ] {
            let e = Cli::try_parse_from(&args).err().expect("refused");
            assert_eq!(e.exit_code(), i32::from(client::EXIT_USAGE), "{args:?}");
        }
    }

    #[test]
    fn json_arguments_are_inline_files_or_refused_by_flag() {
        assert_eq!(
            read_json("--schema", r#"{"type":"object"}"#).unwrap()["type"],
            "object"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("def.json");
        std::fs::write(&path, r#"{"name": "event_counter"}"#).unwrap();
        let path = path.to_str().unwrap();
        assert_eq!(
            read_json("--definition", path).unwrap()["name"],
            "event_counter"
        );
        let e = read_json("--schema", "{not json").unwrap_err();
        assert_eq!(e.exit_code(), client::EXIT_USAGE);
        assert!(
            e.to_string()
                .starts_with("--schema: the argument is not valid JSON"),
            "{e}"
        );
        let e = read_json("--schema", "/no/such/file.json").unwrap_err();
        assert_eq!(e.exit_code(), client::EXIT_FAILURE);
        assert!(e.to_string().contains("/no/such/file.json"), "{e}");
    }
}

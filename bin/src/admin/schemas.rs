//! `allsource admin schemas ...`: the schema registry (`/api/v1/schemas`): subjects, their
//! versions, registering a JSON Schema, and a subject's compatibility mode and enforcement.

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{CliError, Client, Conn, EXIT_CODES_HELP};
use super::output::{View, col};
use super::{emit, read_json};

/// `admin schemas`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin schemas register order.placed --schema '{\"type\": \"object\", \"required\": [\"total\"]}' --enforce true
  allsource admin schemas register order.placed --schema order-placed.schema.json
  allsource admin schemas list
  allsource admin schemas show order.placed --version 1
  allsource admin schemas compatibility order.placed --mode FULL

", exit_codes!()))]
pub struct SchemasArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: SchemasCommand,
}

/// The schema subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// List subjects with their latest version and mode
    List,
    /// Show a subject's schema (the latest version unless --version)
    Show {
        subject: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// List a subject's versions
    Versions { subject: String },
    /// Register a schema as the subject's next version (checked for compatibility)
    Register {
        /// The subject, usually an event type.
        subject: String,
        /// The JSON Schema (draft 2020-12): inline JSON, a file, or - for standard input.
        #[arg(long, value_name = "JSON|FILE|-")]
        schema: String,
        /// NONE, BACKWARD, FORWARD or FULL.
        #[arg(long, value_name = "MODE")]
        compatibility: Option<String>,
        /// Refuse appends of this type whose payload fails the schema (422).
        #[arg(long, value_name = "true|false")]
        enforce: Option<bool>,
    },
    /// Change a subject's compatibility mode or enforcement
    Compatibility {
        subject: String,
        /// NONE, BACKWARD, FORWARD or FULL.
        #[arg(long, value_name = "MODE")]
        mode: Option<String>,
        #[arg(long, value_name = "true|false")]
        enforce: Option<bool>,
    },
}

const LIST: View = View::List {
    key: "subjects",
    noun: "subjects",
    columns: &[
        col("SUBJECT", "/subject"),
        col("LATEST", "/latest_version"),
        col("VERSIONS", "/versions"),
        col("COMPATIBILITY", "/compatibility"),
        col("ENFORCE", "/enforce"),
    ],
};

const ONE: View = View::Object {
    compact: &["schema"],
};

/// Runs a schema subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn run(client: &Client, command: SchemasCommand) -> Result<(), CliError> {
    match command {
        SchemasCommand::List => emit(client, &client.get(&["schemas"], &[]).await?, LIST),
        SchemasCommand::Show { subject, version } => {
            let query: Vec<(&str, String)> = version
                .map(|v| ("version", v.to_string()))
                .into_iter()
                .collect();
            emit(
                client,
                &client.get(&["schemas", &subject], &query).await?,
                ONE,
            )
        }
        SchemasCommand::Versions { subject } => emit(
            client,
            &client.get(&["schemas", &subject, "versions"], &[]).await?,
            ONE,
        ),
        SchemasCommand::Register {
            subject,
            schema,
            compatibility,
            enforce,
        } => {
            let mut body = json!({"subject": subject, "schema": read_json("--schema", &schema)?});
            if let Some(mode) = compatibility {
                body["compatibility"] = json!(mode);
            }
            if let Some(enforce) = enforce {
                body["enforce"] = json!(enforce);
            }
            emit(client, &client.post(&["schemas"], Some(&body)).await?, ONE)
        }
        SchemasCommand::Compatibility {
            subject,
            mode,
            enforce,
        } => {
            if mode.is_none() && enforce.is_none() {
                return Err(CliError::Usage(
                    "compatibility: give --mode or --enforce (or both)".into(),
                ));
            }
            let mut body = json!({});
            if let Some(mode) = mode {
                body["compatibility"] = json!(mode);
            }
            if let Some(enforce) = enforce {
                body["enforce"] = json!(enforce);
            }
            emit(
                client,
                &client
                    .put(&["schemas", &subject, "compatibility"], &body)
                    .await?,
                ONE,
            )
        }
    }
}

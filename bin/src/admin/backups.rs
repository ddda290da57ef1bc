//! `allsource admin backups ...`: online backups through `/api/v1/backups` — start one
//! (`full`, or `incremental` since an earlier backup; the server answers 202 with the job),
//! list them, show one, and verify one (the server re-reads it and checks every digest).
//! Restoring is offline, into a data dir: `allsource backup restore` (see docs/OPERATIONS.md).

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::client::{CliError, Client, Conn, EXIT_CODES_HELP};
use super::emit;
use super::output::{OBJECT, View, col};

/// `admin backups`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin backups create
  allsource admin backups create --kind incremental --since-backup BACKUP_ID
  allsource admin backups list
  allsource admin backups show BACKUP_ID
  allsource admin backups verify BACKUP_ID

", exit_codes!()))]
pub struct BackupsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: BackupsCommand,
}

/// The backup subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// List backups
    List,
    /// Show one backup: kind, positions, size, checksum, state
    Show { id: String },
    /// Start an online backup (a consistent cut at one position; appends go on)
    Create {
        #[arg(long, value_enum, default_value_t = Kind::Full)]
        kind: Kind,
        /// For an incremental backup: the backup it continues (default: the server's choice).
        #[arg(long, value_name = "BACKUP_ID")]
        since_backup: Option<String>,
    },
    /// Re-read a backup and check every file's digest
    Verify { id: String },
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Everything up to the cut.
    Full,
    /// What came after an earlier backup.
    Incremental,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }
}

/// The body of `POST /api/v1/backups`.
///
/// # Errors
/// `--since-backup` with a full backup (a usage error).
pub fn create_body(kind: Kind, since_backup: Option<&str>) -> Result<Value, CliError> {
    let mut body = json!({"kind": kind.as_str()});
    match (kind, since_backup) {
        (Kind::Full, Some(_)) => {
            return Err(CliError::Usage(
                "--since-backup goes with --kind incremental".into(),
            ));
        }
        (Kind::Incremental, Some(id)) => body["since_backup"] = json!(id),
        _ => {}
    }
    Ok(body)
}

const LIST: View = View::List {
    key: "backups",
    noun: "backups",
    columns: &[
        col("ID", "/backup_id"),
        col("KIND", "/kind"),
        col("STATE", "/state"),
        col("CREATED", "/created_at"),
        col("FROM", "/from_position"),
        col("TO", "/to_position"),
        col("EVENTS", "/event_count"),
        col("BYTES", "/size_bytes"),
    ],
};

/// Runs a backup subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn run(client: &Client, command: BackupsCommand) -> Result<(), CliError> {
    match command {
        BackupsCommand::List => emit(client, &client.get(&["backups"], &[]).await?, LIST),
        BackupsCommand::Show { id } => {
            emit(client, &client.get(&["backups", &id], &[]).await?, OBJECT)
        }
        BackupsCommand::Create { kind, since_backup } => {
            let body = create_body(kind, since_backup.as_deref())?;
            emit(
                client,
                &client.post(&["backups"], Some(&body)).await?,
                OBJECT,
            )
        }
        BackupsCommand::Verify { id } => emit(
            client,
            &client.post(&["backups", &id, "verify"], None).await?,
            OBJECT,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::{Answer, EXIT_USAGE};
    use super::super::output::{Output, render};
    use super::*;

    #[test]
    fn create_sends_the_kind_and_the_base_backup() {
        assert_eq!(
            create_body(Kind::Full, None).unwrap(),
            json!({"kind": "full"})
        );
        assert_eq!(
            create_body(Kind::Incremental, Some("b1")).unwrap(),
            json!({"kind": "incremental", "since_backup": "b1"})
        );
        assert_eq!(
            create_body(Kind::Incremental, None).unwrap(),
            json!({"kind": "incremental"})
        );
        assert_eq!(
            create_body(Kind::Full, Some("b1")).unwrap_err().exit_code(),
            EXIT_USAGE
        );
    }

    #[test]
    fn the_list_shows_the_contracts_fields() {
        let body = json!({"backups": [{"backup_id": "b1", "created_at": "2026-12-02T00:00:00.000000Z",
            "kind": "full", "event_count": 10, "size_bytes": 2048, "checksum": "sha256:ab",
            "from_position": 0, "to_position": 10, "state": "completed"}], "total": 1});
        let answer = Answer {
            status: 200,
            text: body.to_string(),
            body,
        };
        let text = render(Output::Table, &answer, LIST);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ID  KIND  STATE      CREATED                      FROM  TO  EVENTS  BYTES",
                "b1  full  completed  2026-12-02T00:00:00.000000Z  0     10  10      2048",
            ]
        );
    }

    #[test]
    fn a_list_given_as_a_bare_array_is_not_lost() {
        // The list's envelope is not in the contract; a server answering a bare array still
        // shows every backup (as one JSON value) rather than nothing.
        let body = json!([{"backup_id": "b1"}]);
        let answer = Answer {
            status: 200,
            text: body.to_string(),
            body,
        };
        assert!(render(Output::Table, &answer, LIST).contains("b1"));
    }
}

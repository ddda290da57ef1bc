//! `allsource admin backups ...`: online backups through `/api/v1/backups` — start one
//! (`full`, or `incremental` since an earlier backup; the server answers 202 with the job),
//! list them, show one, and verify one (the server re-reads it and checks every digest).
//! Restoring is offline, into a data dir: `allsource backup restore` (see docs/OPERATIONS.md).
//!
//! For scripts: `create --wait` returns when the job has finished (exit 1 if it failed), and
//! `verify` exits 1 when the backup is damaged (the report is printed either way).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::client::{Answer, CliError, Client, Conn, EXIT_CODES_HELP};
use super::emit;
use super::output::{OBJECT, View, col};

/// `admin backups`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin backups create --wait
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
        /// Wait until the backup has completed (exit 1 if it failed) and print it then,
        /// instead of printing the running job at once.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait at most, in seconds (exit 1 past it; the backup goes
        /// on on the server).
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 3600,
            requires = "wait"
        )]
        wait_timeout: u64,
    },
    /// Re-read a backup and check every file's digest (exit 1 when a problem is found)
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
        BackupsCommand::Create {
            kind,
            since_backup,
            wait,
            wait_timeout,
        } => {
            let body = create_body(kind, since_backup.as_deref())?;
            let started = client.post(&["backups"], Some(&body)).await?;
            if !wait {
                return emit(client, &started, OBJECT);
            }
            let id = started
                .body
                .get("backup_id")
                .and_then(Value::as_str)
                .ok_or_else(|| CliError::Other("the server's answer names no backup_id".into()))?
                .to_owned();
            let finished =
                wait_for(client, &id, started, Duration::from_secs(wait_timeout)).await?;
            emit(client, &finished, OBJECT)?;
            match state_of(&finished) {
                "completed" => Ok(()),
                _ => Err(CliError::Other(format!(
                    "backup {id} failed: {}",
                    finished
                        .body
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                ))),
            }
        }
        BackupsCommand::Verify { id } => {
            let report = client.post(&["backups", &id, "verify"], None).await?;
            emit(client, &report, OBJECT)?;
            match report.body.get("ok").and_then(Value::as_bool) {
                Some(true) => Ok(()),
                _ => Err(CliError::Other(format!(
                    "backup {id} is damaged: see its problems above"
                ))),
            }
        }
    }
}

fn state_of(answer: &Answer) -> &str {
    answer
        .body
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Polls the backup until it is no longer `running`; its last answer.
async fn wait_for(
    client: &Client,
    id: &str,
    mut answer: Answer,
    timeout: Duration,
) -> Result<Answer, CliError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    while state_of(&answer) == "running" {
        if started.elapsed() > timeout {
            return Err(CliError::Other(format!(
                "backup {id} still running after {}s (it goes on on the server: \
                 `allsource admin backups show {id}`)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        answer = client.get(&["backups", id], &[]).await?;
    }
    Ok(answer)
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

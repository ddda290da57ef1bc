//! `allsource admin stats|compaction`: the caller's tenant's figures (`GET /api/v1/stats`)
//! and the compaction of the embedded backend's Parquet files (`/api/v1/compaction/*`,
//! operators only; the other backends answer that there is nothing to compact).

use clap::{Args, Subcommand};

use super::client::{CliError, Client, Conn, EXIT_CODES_HELP};
use super::emit;
use super::output::OBJECT;

/// `admin stats`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin stats
  allsource admin stats --output json | jq .total_events

", exit_codes!()))]
pub struct StatsArgs {
    #[command(flatten)]
    pub conn: Conn,
}

/// `admin compaction`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin compaction stats
  allsource admin compaction trigger

", exit_codes!()))]
pub struct CompactionArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: CompactionCommand,
}

/// The compaction subcommands.
#[derive(Debug, Subcommand)]
pub enum CompactionCommand {
    /// The policy, the current files and past runs
    Stats,
    /// Merge every run of adjacent small Parquet files now
    Trigger,
}

/// `admin stats`.
///
/// # Errors
/// See [`CliError`].
pub async fn stats(client: &Client) -> Result<(), CliError> {
    emit(client, &client.get(&["stats"], &[]).await?, OBJECT)
}

/// Runs a compaction subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn compaction(client: &Client, command: CompactionCommand) -> Result<(), CliError> {
    let answer = match command {
        CompactionCommand::Stats => client.get(&["compaction", "stats"], &[]).await?,
        CompactionCommand::Trigger => client.post(&["compaction", "trigger"], None).await?,
    };
    emit(client, &answer, OBJECT)
}

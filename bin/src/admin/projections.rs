//! `allsource admin projections ...`: declarative projections (`/api/v1/projections`):
//! definitions with their status (checkpoint, lag), their state per key, and rebuilds.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Answer, CliError, Client, Conn, EXIT_CODES_HELP};
use super::output::{self, Output, View, col};
use super::{emit, read_json};

/// `admin projections`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin projections create --definition '{\"name\": \"event_counter\"}'
  allsource admin projections create --definition revenue.json
  allsource admin projections list
  allsource admin projections state event_counter
  allsource admin projections state event_counter --key order.placed
  allsource admin projections rebuild event_counter

", exit_codes!()))]
pub struct ProjectionsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: ProjectionsCommand,
}

/// The projection subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// List projections with their checkpoint and lag
    List,
    /// Show a projection: its definition and status
    Show { name: String },
    /// Create a projection from its definition (see docs/PROJECTIONS.md)
    Create {
        /// The definition: inline JSON, a file, or - for standard input.
        #[arg(long, value_name = "JSON|FILE|-")]
        definition: String,
    },
    /// Delete a projection and its state
    Delete { name: String },
    /// A projection's state: one page of keys, or one key
    State {
        name: String,
        /// Only this key.
        #[arg(long, conflicts_with_all = ["limit", "after"])]
        key: Option<String>,
        /// Keys per page (1-10000; the server's default is 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this key (the previous page's next_after).
        #[arg(long)]
        after: Option<String>,
    },
    /// Rebuild a projection from the log aside, then swap it in (a replay job)
    Rebuild { name: String },
}

const LIST: View = View::List {
    key: "projections",
    noun: "projections",
    columns: &[
        col("NAME", "/name"),
        col("BUILTIN", "/builtin"),
        col("GENERATION", "/generation"),
        col("CHECKPOINT", "/status/checkpoint"),
        col("LAG", "/status/lag_events"),
        col("KEYS", "/status/keys"),
        col("LAST ERROR", "/status/last_error"),
    ],
};

const ONE: View = View::Object {
    compact: &["definition", "state"],
};

/// A page of state as rows of key and value.
fn state_table(body: &Value) -> String {
    let rows: Vec<Value> = body
        .get("state")
        .and_then(Value::as_object)
        .map(|state| {
            state
                .iter()
                .map(|(key, value)| json!({"key": key, "state": value}))
                .collect()
        })
        .unwrap_or_default();
    let mut text = output::list(&rows, "keys", &[col("KEY", "/key"), col("STATE", "/state")]);
    if body.get("has_more").and_then(Value::as_bool) == Some(true)
        && let Some(next) = body.get("next_after").and_then(Value::as_str)
    {
        text.push_str(&format!("(more: --after {})\n", output::clean(next)));
    }
    text
}

fn emit_state(client: &Client, answer: &Answer) -> Result<(), CliError> {
    match client.output {
        Output::Json => output::print(&output::json_text(&answer.text, &answer.body)),
        Output::Table => output::print(&state_table(&answer.body)),
    }
}

/// Runs a projection subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn run(client: &Client, command: ProjectionsCommand) -> Result<(), CliError> {
    match command {
        ProjectionsCommand::List => emit(client, &client.get(&["projections"], &[]).await?, LIST),
        ProjectionsCommand::Show { name } => emit(
            client,
            &client.get(&["projections", &name], &[]).await?,
            ONE,
        ),
        ProjectionsCommand::Create { definition } => {
            let body = read_json("--definition", &definition)?;
            emit(
                client,
                &client.post(&["projections"], Some(&body)).await?,
                ONE,
            )
        }
        ProjectionsCommand::Delete { name } => {
            emit(client, &client.delete(&["projections", &name]).await?, ONE)
        }
        ProjectionsCommand::State {
            name,
            key: Some(key),
            ..
        } => emit(
            client,
            &client
                .get(&["projections", &name, "state", &key], &[])
                .await?,
            ONE,
        ),
        ProjectionsCommand::State {
            name,
            key: None,
            limit,
            after,
        } => {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(after) = after {
                query.push(("after", after));
            }
            emit_state(
                client,
                &client.get(&["projections", &name, "state"], &query).await?,
            )
        }
        ProjectionsCommand::Rebuild { name } => emit(
            client,
            &client
                .post(&["projections", &name, "rebuild"], None)
                .await?,
            ONE,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_pages_are_rows_of_key_and_value() {
        let body = json!({"name": "event_counter", "checkpoint": 3,
            "state": {"order.placed": {"count": 2}, "user.signed_up": {"count": 1}},
            "count": 2, "has_more": true, "next_after": "user.signed_up"});
        assert_eq!(
            state_table(&body),
            "KEY             STATE\n\
             order.placed    {\"count\":2}\n\
             user.signed_up  {\"count\":1}\n\
             (more: --after user.signed_up)\n"
        );
    }
}

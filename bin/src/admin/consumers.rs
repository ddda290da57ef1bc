//! `allsource admin consumers|consumer-groups ...`: durable consumers (`/api/v1/consumers`:
//! named cursors over the log, acked over HTTP) and consumer groups
//! (`/api/v1/consumer-groups`: competing members, leases, parked messages).

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Answer, CliError, Client, Conn, EXIT_CODES_HELP};
use super::emit;
use super::output::{OBJECT, Output, View, col};
use super::tail::event_line;

/// `admin consumers`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin consumers create orders-projection --filter 'order.*'
  allsource admin consumers list
  allsource admin consumers events orders-projection --limit 10
  allsource admin consumers ack orders-projection --position 42

", exit_codes!()))]
pub struct ConsumersArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: ConsumersCommand,
}

/// The consumer subcommands.
#[derive(Debug, Subcommand)]
pub enum ConsumersCommand {
    /// List consumers with their cursors
    List,
    /// Show one consumer
    Show { id: String },
    /// Create a consumer, or change its filters (the cursor is kept)
    Create {
        /// 1-128 of A-Z a-z 0-9 . _ : -
        id: String,
        /// An event type or a pattern such as `order.*`; repeat for several (none: every type).
        #[arg(long = "filter", value_name = "TYPE")]
        filters: Vec<String>,
    },
    /// Delete a consumer
    Delete { id: String },
    /// The events after the consumer's cursor (the cursor does not move)
    Events {
        id: String,
        /// At most this many (1-10000; the server's default is 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Move the consumer's cursor forward to a position (older positions change nothing)
    Ack {
        id: String,
        #[arg(long)]
        position: u64,
    },
}

/// `admin consumer-groups`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin consumer-groups list
  allsource admin consumer-groups stats billing-workers
  allsource admin consumer-groups parked billing-workers
  allsource admin consumer-groups replay-parked billing-workers

", exit_codes!()))]
pub struct GroupsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: GroupsCommand,
}

/// The consumer-group subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List groups
    List,
    /// Show a group's configuration
    Show { group: String },
    /// A group's lag, messages in flight, parked messages and members
    Stats { group: String },
    /// Parked messages (delivered max_deliveries times without an ack)
    Parked {
        group: String,
        /// 1-1000; the server's default is 100.
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this position (the previous page's next_after).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Put every parked message back to be delivered again
    ReplayParked { group: String },
    /// Delete a group, its leases and parked messages
    Delete { group: String },
}

const CONSUMERS: View = View::List {
    key: "consumers",
    noun: "consumers",
    columns: &[
        col("CONSUMER", "/consumer_id"),
        col("FILTERS", "/event_type_filters"),
        col("CURSOR", "/cursor_position"),
        col("UPDATED", "/updated_at"),
    ],
};

const GROUPS: View = View::List {
    key: "groups",
    noun: "consumer groups",
    columns: &[
        col("GROUP", "/group"),
        col("FILTERS", "/event_type_filters"),
        col("START", "/start_position"),
        col("ACK TIMEOUT MS", "/ack_timeout_ms"),
        col("MAX IN FLIGHT", "/max_in_flight"),
        col("MAX DELIVERIES", "/max_deliveries"),
    ],
};

const PARKED: View = View::List {
    key: "parked",
    noun: "parked messages",
    columns: &[
        col("POSITION", "/position"),
        col("ATTEMPTS", "/attempts"),
        col("PARKED AT", "/parked_at"),
        col("LAST MEMBER", "/last_member"),
        col("TYPE", "/event/event_type"),
        col("ENTITY", "/event/entity_id"),
    ],
};

/// Runs a consumer subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn consumers(client: &Client, command: ConsumersCommand) -> Result<(), CliError> {
    match command {
        ConsumersCommand::List => emit(client, &client.get(&["consumers"], &[]).await?, CONSUMERS),
        ConsumersCommand::Show { id } => {
            emit(client, &client.get(&["consumers", &id], &[]).await?, OBJECT)
        }
        ConsumersCommand::Create { id, filters } => {
            let body = json!({"consumer_id": id, "event_type_filters": filters});
            emit(
                client,
                &client.post(&["consumers"], Some(&body)).await?,
                OBJECT,
            )
        }
        ConsumersCommand::Delete { id } => {
            let mut answer = client.delete(&["consumers", &id]).await?;
            // 204 has no body; say what happened as the other deletes do.
            if answer.text.trim().is_empty() {
                answer.body = json!({"consumer_id": id, "deleted": true});
            }
            emit(client, &answer, OBJECT)
        }
        ConsumersCommand::Events { id, limit } => {
            let query: Vec<(&str, String)> = limit
                .map(|l| ("limit", l.to_string()))
                .into_iter()
                .collect();
            let answer = client.get(&["consumers", &id, "events"], &query).await?;
            emit_events(client, &answer)
        }
        ConsumersCommand::Ack { id, position } => {
            let body = json!({"position": position});
            emit(
                client,
                &client.post(&["consumers", &id, "ack"], Some(&body)).await?,
                OBJECT,
            )
        }
    }
}

/// A page of events: one line each in a table, the server's JSON otherwise.
fn emit_events(client: &Client, answer: &Answer) -> Result<(), CliError> {
    if client.output == Output::Json {
        return emit(client, answer, OBJECT);
    }
    let mut text = String::new();
    let events = answer.body.get("events").and_then(Value::as_array);
    for event in events.into_iter().flatten() {
        text.push_str(&event_line(event, Output::Table));
    }
    if events.is_none_or(Vec::is_empty) {
        text.push_str("(no events after the cursor)\n");
    } else if answer.body.get("has_more").and_then(Value::as_bool) == Some(true) {
        text.push_str("(more after these: ack, then ask again)\n");
    }
    super::output::print(&text)
}

/// Runs a consumer-group subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn groups(client: &Client, command: GroupsCommand) -> Result<(), CliError> {
    match command {
        GroupsCommand::List => emit(
            client,
            &client.get(&["consumer-groups"], &[]).await?,
            GROUPS,
        ),
        GroupsCommand::Show { group } => emit(
            client,
            &client.get(&["consumer-groups", &group], &[]).await?,
            OBJECT,
        ),
        GroupsCommand::Stats { group } => emit(
            client,
            &client
                .get(&["consumer-groups", &group, "stats"], &[])
                .await?,
            View::Object {
                compact: &["members"],
            },
        ),
        GroupsCommand::Parked {
            group,
            limit,
            after,
        } => {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(after) = after {
                query.push(("after", after.to_string()));
            }
            emit(
                client,
                &client
                    .get(&["consumer-groups", &group, "parked"], &query)
                    .await?,
                PARKED,
            )
        }
        GroupsCommand::ReplayParked { group } => emit(
            client,
            &client
                .post(&["consumer-groups", &group, "parked", "replay"], None)
                .await?,
            OBJECT,
        ),
        GroupsCommand::Delete { group } => emit(
            client,
            &client.delete(&["consumer-groups", &group]).await?,
            OBJECT,
        ),
    }
}

//! `allsource admin tenants ...`: `/api/v1/tenants`. Operators (admins of tenant `default`)
//! manage every tenant; an admin of another tenant reads its own.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{CliError, Client, Conn, EXIT_CODES_HELP};
use super::emit;
use super::output::{OBJECT, View, col};

/// `admin tenants`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = concat!("\
Examples:
  allsource admin tenants list
  allsource admin tenants create acme --name 'Acme Corp' --tier professional
  allsource admin tenants set-quotas acme --max-events-per-day 5000000 --max-pipelines unlimited
  allsource admin tenants stats acme --output json
  allsource admin tenants deactivate acme

", exit_codes!()))]
pub struct TenantsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: TenantsCommand,
}

/// The tenant subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants (operators: all; admins: their own)
    List,
    /// Show one tenant: tier, state, quotas, rate limit
    Show { id: String },
    /// Create a tenant (operators only)
    Create {
        /// Tenant id: 1-64 of A-Z a-z 0-9 _ -, not starting with _.
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// Tier: free (default), professional or unlimited.
        #[arg(long)]
        tier: Option<String>,
    },
    /// Change a tenant's name or tier (operators only)
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        tier: Option<String>,
    },
    /// Delete a tenant: its users, keys and logins stop working at once; events stay
    Delete { id: String },
    /// Usage against quotas, and the tenant's event figures
    Stats { id: String },
    /// The tenant's effective quotas (- = unlimited)
    Quotas { id: String },
    /// Set quotas (operators only): a number or `unlimited`; those left out follow the tier
    SetQuotas(SetQuotas),
    /// Activate a tenant (operators only)
    Activate { id: String },
    /// Deactivate a tenant: its credentials get 403 at once (operators only)
    Deactivate { id: String },
}

/// `admin tenants set-quotas`.
#[derive(Debug, Args)]
pub struct SetQuotas {
    pub id: String,
    #[arg(long, value_name = "N|unlimited", value_parser = parse_quota)]
    pub max_events_per_day: Option<Quota>,
    #[arg(long, value_name = "N|unlimited", value_parser = parse_quota)]
    pub max_storage_bytes: Option<Quota>,
    #[arg(long, value_name = "N|unlimited", value_parser = parse_quota)]
    pub max_queries_per_hour: Option<Quota>,
    #[arg(long, value_name = "N|unlimited", value_parser = parse_quota)]
    pub max_api_keys: Option<Quota>,
    #[arg(long, value_name = "N|unlimited", value_parser = parse_quota)]
    pub max_projections: Option<Quota>,
    #[arg(long, value_name = "N|unlimited", value_parser = parse_quota)]
    pub max_pipelines: Option<Quota>,
}

/// A quota's value on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Limit(u64),
    Unlimited,
}

fn parse_quota(raw: &str) -> Result<Quota, String> {
    if raw.eq_ignore_ascii_case("unlimited") {
        return Ok(Quota::Unlimited);
    }
    raw.parse::<u64>()
        .map(Quota::Limit)
        .map_err(|_| format!("{raw:?} is neither a number nor `unlimited`"))
}

impl SetQuotas {
    /// The body of `PUT /api/v1/tenants/{id}/quotas`: only the quotas given.
    ///
    /// # Errors
    /// None given (a usage error).
    pub fn body(&self) -> Result<Value, CliError> {
        let mut body = Map::new();
        for (name, quota) in [
            ("max_events_per_day", self.max_events_per_day),
            ("max_storage_bytes", self.max_storage_bytes),
            ("max_queries_per_hour", self.max_queries_per_hour),
            ("max_api_keys", self.max_api_keys),
            ("max_projections", self.max_projections),
            ("max_pipelines", self.max_pipelines),
        ] {
            match quota {
                Some(Quota::Limit(n)) => {
                    body.insert(name.to_owned(), json!(n));
                }
                Some(Quota::Unlimited) => {
                    body.insert(name.to_owned(), Value::Null);
                }
                None => {}
            }
        }
        if body.is_empty() {
            return Err(CliError::Usage(
                "set-quotas: give at least one quota, e.g. --max-events-per-day 1000000".into(),
            ));
        }
        Ok(Value::Object(body))
    }
}

const LIST: View = View::List {
    key: "tenants",
    noun: "tenants",
    columns: &[
        col("ID", "/id"),
        col("NAME", "/name"),
        col("TIER", "/tier"),
        col("ACTIVE", "/active"),
        col("EVENTS/DAY", "/quotas/max_events_per_day"),
        col("REQ/S", "/rate_limit/requests_per_second"),
        col("CREATED", "/created_at"),
    ],
};

/// Optional members of a body, left out when absent.
fn members(pairs: &[(&str, &Option<String>)]) -> Value {
    let mut body = Map::new();
    for (name, value) in pairs {
        if let Some(value) = value {
            body.insert((*name).to_owned(), json!(value));
        }
    }
    Value::Object(body)
}

/// Runs a tenant subcommand.
///
/// # Errors
/// See [`CliError`].
pub async fn run(client: &Client, command: TenantsCommand) -> Result<(), CliError> {
    match command {
        TenantsCommand::List => emit(client, &client.get(&["tenants"], &[]).await?, LIST),
        TenantsCommand::Show { id } => {
            emit(client, &client.get(&["tenants", &id], &[]).await?, OBJECT)
        }
        TenantsCommand::Create { id, name, tier } => {
            let mut body = members(&[("name", &name), ("tier", &tier)]);
            body["id"] = json!(id);
            if name.is_none() {
                body["name"] = json!(id);
            }
            emit(
                client,
                &client.post(&["tenants"], Some(&body)).await?,
                OBJECT,
            )
        }
        TenantsCommand::Update { id, name, tier } => {
            if name.is_none() && tier.is_none() {
                return Err(CliError::Usage(
                    "update: give --name or --tier (or both)".into(),
                ));
            }
            let body = members(&[("name", &name), ("tier", &tier)]);
            emit(client, &client.put(&["tenants", &id], &body).await?, OBJECT)
        }
        TenantsCommand::Delete { id } => {
            emit(client, &client.delete(&["tenants", &id]).await?, OBJECT)
        }
        TenantsCommand::Stats { id } => emit(
            client,
            &client.get(&["tenants", &id, "stats"], &[]).await?,
            OBJECT,
        ),
        TenantsCommand::Quotas { id } => emit(
            client,
            &client.get(&["tenants", &id, "quotas"], &[]).await?,
            OBJECT,
        ),
        TenantsCommand::SetQuotas(args) => {
            let body = args.body()?;
            emit(
                client,
                &client.put(&["tenants", &args.id, "quotas"], &body).await?,
                OBJECT,
            )
        }
        TenantsCommand::Activate { id } => emit(
            client,
            &client.post(&["tenants", &id, "activate"], None).await?,
            OBJECT,
        ),
        TenantsCommand::Deactivate { id } => emit(
            client,
            &client.post(&["tenants", &id, "deactivate"], None).await?,
            OBJECT,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_numbers_or_unlimited() {
        assert_eq!(parse_quota("5000"), Ok(Quota::Limit(5000)));
        assert_eq!(parse_quota("Unlimited"), Ok(Quota::Unlimited));
        assert!(parse_quota("-1").is_err());
        assert!(parse_quota("lots").is_err());
    }

    #[test]
    fn the_quota_body_has_only_what_was_given() {
        let args = SetQuotas {
            id: "acme".into(),
            max_events_per_day: Some(Quota::Limit(5)),
            max_storage_bytes: None,
            max_queries_per_hour: None,
            max_api_keys: None,
            max_projections: None,
            max_pipelines: Some(Quota::Unlimited),
        };
        assert_eq!(
            args.body().unwrap(),
            json!({"max_events_per_day": 5, "max_pipelines": null})
        );
        let none = SetQuotas {
            max_events_per_day: None,
            max_pipelines: None,
            ..args
        };
        assert_eq!(
            none.body().unwrap_err().exit_code(),
            super::super::client::EXIT_USAGE
        );
    }
}

//! `allsource admin postgres-partition`: hash-partitions the postgres backend's log by tenant,
//! straight on the database (no server needed; running nodes wait while it works).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use allsource_application::ports::EventStore as _;
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::postgres::{MAX_PARTITIONS, PostgresConfig, PostgresStore};
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::settings::{Backend, Overrides, Settings};

/// The flags of `admin postgres-partition`.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// Config file (TOML) with storage.postgres.url; the environment works too
    /// (ALLSOURCE__STORAGE__POSTGRES__URL).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The database's URL (overrides storage.postgres.url).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// How many hash partitions of allsource_events (by tenant_id), 1 to 1024.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PARTITIONS)))]
    pub partitions: u32,
}

/// `admin postgres-partition`: converts the log in one transaction, with a progress bar on a
/// terminal, and prints what it did as JSON.
///
/// # Errors
/// No postgres URL, an unreachable database, or a refused or failed conversion (the log is
/// then unchanged).
pub fn partition(args: PartitionArgs) -> anyhow::Result<()> {
    let url = match args.url {
        Some(url) => url,
        None => {
            let settings = Settings::load(
                args.config.as_deref(),
                Overrides {
                    dev: true,
                    ..Overrides::default()
                },
            )?;
            if settings.storage.backend != Backend::Postgres {
                anyhow::bail!(
                    "storage.backend is not postgres: give --url, or a --config (or environment) \
                     with storage.backend = \"postgres\" and storage.postgres.url"
                );
            }
            settings.storage.postgres.url
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let config = PostgresConfig {
            url,
            max_connections: 2,
            ..PostgresConfig::default()
        };
        let store = PostgresStore::connect(&config, Arc::new(SystemClock))
            .await
            .context("cannot open the postgres backend")?;
        let bar = progress_bar();
        let outcome = store
            .partition_by_tenant(args.partitions, |copied, total| {
                bar.set_length(total);
                bar.set_position(copied);
            })
            .await;
        bar.finish_and_clear();
        store.shutdown().await.ok();
        let outcome = outcome?;
        println!(
            "{}",
            serde_json::json!({
                "layout": "by_tenant",
                "partitions": outcome.partitions,
                "events_copied": outcome.events,
                "unchanged": outcome.unchanged,
            })
        );
        Ok(())
    })
}

/// A progress bar of the copy on stderr (hidden when stderr is not a terminal).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("copying events [{bar:40}] {pos}/{len} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

//! The `allsource` binary: `serve` runs the server, `repair` fixes a corrupt WAL, `bench` runs
//! the HTTP load generator, `admin` administers a running server over HTTP (and creates users
//! offline). All logic lives in the `allsource` library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use allsource::settings::{Overrides, Settings};
use allsource::{Application, admin, bench, telemetry};
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: the request path allocates many small,
/// short-lived objects across threads, where glibc's malloc showed up as the largest single
/// cost in profiles (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// AllSource: an event store for event-sourced systems.
#[derive(Parser)]
#[command(name = "allsource", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded durable store under ./data by default).
    ///
    /// Settings come from built-in defaults, then the config file, then environment variables
    /// ALLSOURCE__SECTION__KEY (e.g. ALLSOURCE__SERVER__PORT=4000,
    /// ALLSOURCE__STORAGE__BACKEND=memory), then these flags. Authentication is on: set
    /// ALLSOURCE__AUTH__JWT__SECRET to at least 32 random bytes, or pass --dev for a local
    /// server without it.
    Serve {
        /// Config file (TOML). Default: ./allsource.toml if it exists.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Development mode: authentication off, loud warning. Never in production.
        #[arg(long)]
        dev: bool,
        /// Port to listen on (server.port; 0 = any free port).
        #[arg(long)]
        port: Option<u16>,
        /// Address to listen on (server.host).
        #[arg(long)]
        host: Option<String>,
        /// Data directory of the embedded store (storage.data_dir), created if missing.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Repair a data dir whose WAL the server refused as corrupt: cuts the WAL at the first bad
    /// record and moves the cut bytes aside (nothing is deleted). Refused while a server uses
    /// the data dir.
    Repair {
        /// Data directory of the embedded store.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// HTTP load generator and peer baselines (see docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Administration: of a running server over HTTP (tenants, users, keys, stats, schemas,
    /// projections, consumers, backups, compaction, tail), `create-user` offline on a
    /// stopped server's data dir or on PostgreSQL, and `postgres-partition` on the database.
    #[command(subcommand, after_long_help = admin::ADMIN_HELP)]
    Admin(admin::AdminCommand),
    /// Backups: create (of a stopped server's data dir), list, verify, restore (into a new
    /// data dir). A running server backs up online through POST /api/v1/backups.
    #[command(subcommand)]
    Backup(allsource::backup::BackupCommand),
    /// The MCP server over stdio, for AI agents: tools that query and append through a running
    /// server at --url with --api-key (see docs/MCP.md).
    Mcp(allsource::mcp::McpArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve {
            config,
            dev,
            port,
            host,
            data_dir,
        } => serve(
            config,
            Overrides {
                port,
                host,
                data_dir,
                dev,
            },
        ),
        Command::Repair { data_dir } => repair(data_dir),
        Command::Bench(args) => bench::run(args),
        // The admin and backup commands choose their own exit codes (see their --help).
        Command::Admin(command) => return admin::run(command),
        Command::Backup(command) => return allsource::backup::run(command),
        Command::Mcp(args) => return allsource::mcp::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let source = allsource::reload::SettingsSource {
        config_file: config,
        overrides,
    };
    let settings = Settings::load(source.config_file.as_deref(), source.overrides.clone())?;
    let telemetry = std::sync::Arc::new(telemetry::init(&settings.log, &settings.telemetry.otlp)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let app = Application::build(settings)
            .await?
            .reload_on_sighup(source, Some(telemetry.clone()));
        app.run_until_stopped().await
    });
    // The spans of the last requests are sent before the process ends.
    telemetry.shutdown();
    served
}

fn repair(data_dir: PathBuf) -> anyhow::Result<()> {
    let report = allsource_infrastructure::embedded::repair(&data_dir)?;
    println!("{report}");
    Ok(())
}

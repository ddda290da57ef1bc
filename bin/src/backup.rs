//! `allsource backup create|list|verify|restore`, and the wiring of backups into the server.
//!
//! - `create` takes a backup of a *stopped* server's data dir (it locks the data dir; while a
//!   server runs, use `POST /api/v1/backups`, which backs up online).
//! - `list` and `verify` read only the target (a directory or `s3://bucket/prefix`).
//! - `restore` writes a new data dir (missing or empty; anything else is refused) from a
//!   backup and the chain it continues, to its cut or to `--to-position` / `--to-time`.
//!
//! Progress bars go to stderr when it is a terminal; `--output json` prints one JSON document
//! on stdout. Exit codes: 0 done, 1 failed (the message on stderr), 2 bad usage, 3 `verify`
//! found a damaged or missing file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use allsource_application::ports::{BackupTarget, Clock, Progress, RestorePoint};
use allsource_application::use_cases::backups::{self, BackupKind, Backups};
use allsource_infrastructure::backup::s3::{ObjectStoreTarget, S3Options};
use allsource_infrastructure::backup::{DirectoryTarget, EmbeddedRestore, StartingBackupSource};
use allsource_infrastructure::clock::SystemClock;
use allsource_infrastructure::embedded::{CompactionConfig, EmbeddedConfig, EmbeddedStore};
use allsource_infrastructure::state::FileStateStore;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::settings::{Backend, BackupSettings, Overrides, Settings};

/// The backup source of a server with `backend`: the embedded store's once recovered; a
/// refusal naming what to use instead for the others.
pub fn starting_source(backend: Backend) -> Arc<StartingBackupSource> {
    Arc::new(match backend {
        Backend::Embedded => StartingBackupSource::new(),
        Backend::Postgres => StartingBackupSource::unsupported(
            "storage.backend = postgres keeps every event and all state in PostgreSQL: back it \
             up with PostgreSQL's own tools (pg_dump for a logical copy, base backups with WAL \
             archiving for point-in-time recovery); AllSource's backups cover the embedded \
             backend only",
        ),
        Backend::Memory => StartingBackupSource::unsupported(
            "storage.backend = memory keeps nothing durable: there is nothing to back up",
        ),
    })
}

/// The target named by `target` (a directory, or `s3://bucket/prefix` with the `backup.s3_*`
/// settings); `None` for an empty name.
///
/// # Errors
/// A bad `s3://` URL or S3 options.
pub fn target(
    target: &str,
    settings: &BackupSettings,
) -> anyhow::Result<Option<Arc<dyn BackupTarget>>> {
    if target.is_empty() {
        return Ok(None);
    }
    if target.starts_with("s3://") {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let options = S3Options {
            endpoint: nonempty(&settings.s3_endpoint),
            region: nonempty(&settings.s3_region),
            access_key_id: nonempty(&settings.s3_access_key_id),
            secret_access_key: nonempty(&settings.s3_secret_access_key),
            allow_http: settings.s3_allow_http,
        };
        let store = ObjectStoreTarget::s3(target, &options)
            .with_context(|| format!("cannot use {target} as a backup target (backup.*)"))?;
        return Ok(Some(Arc::new(store)));
    }
    Ok(Some(Arc::new(DirectoryTarget::new(target))))
}

/// The server's backup use cases (disabled without `backup.target`).
///
/// # Errors
/// As [`target`].
pub fn backups(settings: &Settings, source: Arc<StartingBackupSource>) -> anyhow::Result<Backups> {
    Ok(match target(&settings.backup.target, &settings.backup)? {
        Some(target) => Backups::new(source, target, Arc::new(SystemClock)),
        None => Backups::disabled(
            "no backup target is configured: set backup.target (a directory, or \
             s3://bucket/prefix) and restart",
        ),
    })
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Options every backup command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// Config file (TOML) for the backup.* and storage.* settings. Default: ./allsource.toml
    /// if it exists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// text (default) or json (one document on stdout, for scripts).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// `allsource backup ...`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a stopped server's data dir (while a server runs: POST /api/v1/backups).
    Create {
        #[command(flatten)]
        common: Common,
        /// Data directory (storage.data_dir).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Where to write: a directory or s3://bucket/prefix (backup.target).
        #[arg(long, value_name = "TARGET")]
        to: Option<String>,
        /// full (default) or incremental.
        #[arg(long, value_enum, default_value = "full")]
        kind: KindArg,
        /// For --kind incremental: the backup it continues (default: the newest).
        #[arg(long, value_name = "ID")]
        since_backup: Option<String>,
    },
    /// List the completed backups of a target, oldest first.
    List {
        #[command(flatten)]
        common: Common,
        /// A directory or s3://bucket/prefix (backup.target).
        #[arg(long, value_name = "TARGET")]
        from: Option<String>,
    },
    /// Re-read every file of a backup and check its SHA-256 digests (exit code 3 if damaged).
    Verify {
        #[command(flatten)]
        common: Common,
        /// A directory or s3://bucket/prefix (backup.target).
        #[arg(long, value_name = "TARGET")]
        from: Option<String>,
        /// The backup (default: every completed backup of the target).
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
    },
    /// Restore a backup (and the chain it continues) into a new or empty data dir.
    Restore {
        #[command(flatten)]
        common: Common,
        /// A directory or s3://bucket/prefix (backup.target).
        #[arg(long, value_name = "TARGET")]
        from: Option<String>,
        /// The backup (default: the newest completed one).
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
        /// The data dir to write (missing or empty).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Restore the events at or below this position.
        #[arg(long, value_name = "N", conflicts_with = "to_time")]
        to_position: Option<u64>,
        /// Restore the events at or before this time (RFC 3339).
        #[arg(long, value_name = "T")]
        to_time: Option<String>,
        /// Restore no state store (users, keys, tenants, schemas, projections, cursors): for
        /// a point before the full backup's cut, of which no state is that old.
        #[arg(long)]
        events_only: bool,
    },
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Full,
    Incremental,
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        if let Ok(style) = ProgressStyle::with_template("{msg:20} [{bar:40}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Self(bar)
    }
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: u64) {
        self.0.set_message(what.to_owned());
        self.0.set_length(total);
        self.0.set_position(0);
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn settings(common: &Common, data_dir: Option<PathBuf>) -> anyhow::Result<Settings> {
    // `dev` only skips the signing-secret check: these commands sign no token.
    Settings::load(
        common.config.as_deref(),
        Overrides {
            data_dir,
            dev: true,
            ..Overrides::default()
        },
    )
}

fn need_target(name: Option<String>, settings: &Settings) -> anyhow::Result<Arc<dyn BackupTarget>> {
    let name = name.unwrap_or_else(|| settings.backup.target.clone());
    target(&name, &settings.backup)?.context(
        "no backup target: pass --from/--to (a directory or s3://bucket/prefix) or set \
         backup.target",
    )
}

fn print(output: Output, json: serde_json::Value, text: &str) {
    match output {
        Output::Json => println!("{json}"),
        Output::Text => println!("{text}"),
    }
}

/// Runs a backup command.
pub fn run(command: BackupCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_async(command: BackupCommand) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Create {
            common,
            data_dir,
            to,
            kind,
            since_backup,
        } => {
            let settings = settings(&common, data_dir)?;
            if settings.storage.backend != Backend::Embedded {
                anyhow::bail!(
                    "backup create works on the embedded backend's data dir; storage.backend \
                     is {} (see docs/OPERATIONS.md, \"Backup and restore\")",
                    settings.storage.backend.as_str()
                );
            }
            let target = need_target(to, &settings)?;
            let data_dir = settings.storage.data_dir.clone();
            if !data_dir.join("manifest.json").exists() && !data_dir.join("wal").exists() {
                anyhow::bail!("{} is not a data dir", data_dir.display());
            }
            let (store, state) = tokio::task::spawn_blocking(move || {
                let config = EmbeddedConfig {
                    data_dir: data_dir.clone(),
                    compaction: CompactionConfig {
                        enabled: false,
                        ..CompactionConfig::default()
                    },
                    ..EmbeddedConfig::default()
                };
                let clock: Arc<dyn Clock> = Arc::new(SystemClock);
                let store = EmbeddedStore::open(config, clock)
                    .with_context(|| format!("cannot open {}", data_dir.display()))?;
                let state = FileStateStore::open(&data_dir.join("state"))?;
                anyhow::Ok((store, Arc::new(state)))
            })
            .await??;
            let backups = Backups::new(
                Arc::new(store.backup_source(state)),
                target,
                Arc::new(SystemClock),
            );
            let kind = match kind {
                KindArg::Full => BackupKind::Full,
                KindArg::Incremental => BackupKind::Incremental,
            };
            let made = {
                let bar = Bar::new();
                backups
                    .create_now(kind, since_backup.as_deref(), &bar)
                    .await
            };
            allsource_application::ports::EventStore::shutdown(&store)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let manifest = made.map_err(|e| anyhow::anyhow!("{e:#}"))?;
            print(
                common.output,
                serde_json::to_value(&manifest)?,
                &format!(
                    "backup {} ({}): positions {}..={}, {} events, {} files, {} bytes, {}",
                    manifest.backup_id,
                    manifest.kind.as_str(),
                    manifest.from_position,
                    manifest.to_position,
                    manifest.event_count,
                    manifest.files.len(),
                    manifest.size_bytes,
                    manifest.checksum
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::List { common, from } => {
            let settings = settings(&common, None)?;
            let target = need_target(from, &settings)?;
            let all = backups::list_manifests(target.as_ref())
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let mut text = format!(
                "{:<36}  {:<11}  {:<24}  {:>10}  {:>10}  {:>12}",
                "backup_id", "kind", "created_at", "from", "to", "bytes"
            );
            for m in &all {
                text.push_str(&format!(
                    "\n{:<36}  {:<11}  {:<24}  {:>10}  {:>10}  {:>12}",
                    m.backup_id,
                    m.kind.as_str(),
                    m.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    m.from_position,
                    m.to_position,
                    m.size_bytes
                ));
            }
            let json: Vec<serde_json::Value> = all
                .iter()
                .map(|m| {
                    let mut v = serde_json::to_value(m).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("files");
                        o.insert("files".into(), m.files.len().into());
                    }
                    v
                })
                .collect();
            print(
                common.output,
                serde_json::json!({"total": all.len(), "backups": json}),
                &text,
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Verify {
            common,
            from,
            backup,
        } => {
            let settings = settings(&common, None)?;
            let target = need_target(from, &settings)?;
            let ids = match backup {
                Some(id) => vec![id],
                None => backups::list_manifests(target.as_ref())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:#}"))?
                    .into_iter()
                    .map(|m| m.backup_id)
                    .collect(),
            };
            let mut reports = Vec::new();
            for id in ids {
                let bar = Bar::new();
                reports.push(
                    backups::verify(target.as_ref(), &id, &bar)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e:#}"))?,
                );
            }
            let ok = reports.iter().all(|r| r.ok);
            let text = reports
                .iter()
                .map(|r| {
                    if r.ok {
                        format!(
                            "{}: ok ({} files, {} bytes)",
                            r.backup_id, r.files_checked, r.bytes_checked
                        )
                    } else {
                        format!("{}: DAMAGED\n  {}", r.backup_id, r.problems.join("\n  "))
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            print(
                common.output,
                serde_json::json!({"ok": ok, "backups": reports}),
                &text,
            );
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        BackupCommand::Restore {
            common,
            from,
            backup,
            data_dir,
            to_position,
            to_time,
            events_only,
        } => {
            let settings = settings(&common, None)?;
            let target = need_target(from, &settings)?;
            let point = match (to_position, to_time) {
                (Some(p), _) => RestorePoint::Position(p),
                (None, Some(t)) => RestorePoint::Time(
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .with_context(|| format!("--to-time {t:?} is not an RFC 3339 time"))?
                        .with_timezone(&chrono::Utc),
                ),
                (None, None) => RestorePoint::Latest,
            };
            let existed = data_dir.exists();
            let mut sink = EmbeddedRestore::create(&data_dir)?;
            let restored = {
                let bar = Bar::new();
                backups::restore(
                    target.as_ref(),
                    backup.as_deref(),
                    point,
                    events_only,
                    &mut sink,
                    &bar,
                )
                .await
            };
            let report = match restored {
                Ok(report) => report,
                Err(e) => {
                    // Leave nothing half-restored behind: the directory was new or empty.
                    let cleaned = if existed {
                        std::fs::read_dir(&data_dir).and_then(|entries| {
                            for entry in entries {
                                let path = entry?.path();
                                if path.is_dir() {
                                    std::fs::remove_dir_all(&path)?;
                                } else {
                                    std::fs::remove_file(&path)?;
                                }
                            }
                            Ok(())
                        })
                    } else {
                        std::fs::remove_dir_all(&data_dir)
                    };
                    if let Err(c) = cleaned {
                        eprintln!("warning: cannot clean {}: {c}", data_dir.display());
                    }
                    anyhow::bail!("{e:#} (nothing was restored)");
                }
            };
            print(
                common.output,
                serde_json::to_value(&report)?,
                &format!(
                    "restored {} events (to position {}) from {} into {}{}",
                    report.events,
                    report.to_position,
                    report.chain.join(" + "),
                    data_dir.display(),
                    match &report.state_from {
                        Some(id) => format!(", state store of {id}"),
                        None => ", no state store (--events-only)".into(),
                    }
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `EmbeddedStore`: the default, durable [`EventStore`]: a single-writer, group-commit
//! write-ahead log whose sealed segments become Parquet files. The in-memory [`EventIndex`]
//! holds positions (about 44 bytes per event) and the unsealed tail; sealed events are read
//! from their Parquet files through a byte-bounded block cache ([`cold`]).
//!
//! # Write path
//! `append` sends the request over a channel to the writer thread and awaits its answer. The
//! writer takes what is waiting (up to `max_group_events`), stages each request with the
//! [`GroupPlanner`](crate::index::GroupPlanner) (expectations, idempotency, versions, positions,
//! timestamps), encodes one WAL record per request, writes the whole group with one `write` and
//! syncs once (`Durability::Fsync`), then publishes the group to the index and answers every
//! waiter. With 64 clients waiting, one sync acknowledges up to 64 appends.
//!
//! If a write or sync fails, the group is answered `Unavailable` and the store refuses further
//! appends until restarted: after a failed fsync the page cache cannot be trusted, and recovery
//! from the files is the only safe way on. (An append answered 503 this way may still be found
//! on disk after the restart; retrying it with the same ids is safe.)
//!
//! # Files under `data_dir`
//! - `LOCK`: the [`DataDirLock`], held while a process uses the directory.
//! - `wal/<first position:020>.wal`: segments; see [`wal`] for the format.
//! - `parquet/events-<first:020>-<last:020>.parquet`: sealed segments.
//! - `manifest.json`: which Parquet files hold which positions.
//!
//! # Sealing
//! When the active segment exceeds `segment_bytes`, the writer syncs it, starts a new one and
//! hands the old one to the sealer thread, which writes its events to Parquet (temp file, sync,
//! rename, sync dir), records the file in the manifest (atomically), and only then deletes the
//! segment. A crash at any step loses and duplicates nothing: recovery skips WAL events that the
//! manifest already covers, and ignores Parquet files it does not name.
//!
//! # Compaction
//! Sealing makes one Parquet file per segment; [`compaction`] merges runs of adjacent small
//! files into larger ones (on demand through [`EmbeddedStore::compactor`], and by a background
//! policy thread), with the same crash safety: new file, sync, rename, one atomic manifest swap,
//! then the old files are deleted.
//!
//! # Reads
//! The index answers which positions a read needs; the events come from the tail (not yet
//! sealed) or from [`cold`]. A read first runs on the async worker without I/O; if some block
//! is neither in the tail nor in the cache, it runs again on a blocking thread.
//!
//! # Recovery
//! Manifest → Parquet files (the index columns only, not the payloads) → WAL segments
//! (skipping positions already in Parquet) into the tail. A torn tail
//! of the last segment is cut off with a warning; any other damage refuses the start with
//! [`OpenError::Corrupt`], which tells the operator to run `allsource repair`. Segments before
//! the last are handed to the sealer; so is the last one when it is already full (a crash
//! between the group that filled it and the rotation), after a new one is started.
//!
//! # Layout
//! - `mod.rs`: the store, recovery, the writer and sealer threads.
//! - [`wal`]: segment and record format, scanning with torn-tail/corruption detection.
//! - [`parquet_file`]: writing and reading Parquet files.
//! - [`manifest`]: the manifest.
//! - [`cold`]: reading sealed events from the Parquet files, and the block cache.
//! - [`compaction`]: merging small Parquet files (planner, merge, policy thread, `Compactor`).
//! - [`intern`]: shared names while loading.
//! - [`lock`]: the data dir's lock, shared with `allsource admin` and `allsource repair`.
//! - [`repair`]: the `allsource repair` command.

pub mod cold;
pub mod compaction;
pub mod intern;
pub mod lock;
pub mod manifest;
pub mod parquet_file;
pub mod repair;
pub mod wal;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use allsource_application::ports::{
    AppendReceipt, Clock, EntityListQuery, EntityPage, EventQuery, EventStore, EventTypeCount,
    QueryPage, StoreAppendError, StoreError, StoreStats, StreamRange,
};
use allsource_application::subscriptions::CommitFeed;
use allsource_domain::{EntityId, Event, EventId, ProposedEvent, TenantId};
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::index::{EventIndex, Io, ReadError};
use cold::ColdFiles;
use compaction::Compaction;
pub use compaction::{CompactionConfig, CompactionFailpoint, CompactionStep, EmbeddedCompactor};
use intern::Interner;
pub use lock::{DataDirLock, LockError};
use manifest::{Manifest, ParquetEntry};
pub use repair::{RepairReport, repair};
use wal::ScanEnd;

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the group's data is synced (default).
    Fsync,
    /// Acknowledge after `write`; sync every so many milliseconds. A machine crash may lose the
    /// last interval of acknowledged appends.
    IntervalMs(u64),
    /// Never sync except when a segment is sealed and at shutdown (tests, benchmarks).
    None,
}

impl Durability {
    fn name(self) -> String {
        match self {
            Self::Fsync => "fsync".into(),
            Self::IntervalMs(ms) => format!("interval ({ms} ms)"),
            Self::None => "none".into(),
        }
    }
}

/// Settings of the embedded engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Size after which the active segment is sealed into Parquet.
    pub segment_bytes: u64,
    /// Most events one group commit takes.
    pub max_group_events: usize,
    /// Whether sealed segments are turned into Parquet in the background (tests turn it off to
    /// drive sealing step by step).
    pub seal: bool,
    /// Merging of small Parquet files.
    pub compaction: CompactionConfig,
    /// Bytes of decoded sealed events kept in memory (the block cache); 0 caches nothing.
    pub cache_bytes: u64,
}

/// Default of [`EmbeddedConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            durability: Durability::Fsync,
            segment_bytes: 64 * 1024 * 1024,
            max_group_events: 16 * 1024,
            seal: true,
            compaction: CompactionConfig::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data dir is in use by another process, or cannot be locked.
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(
        "the WAL segment {} is corrupt at byte {offset} ({detail}). Nothing was changed. Back up \
         {}, then run `allsource repair --data-dir {}`: it cuts the WAL at that record and keeps \
         the cut bytes in a side file next to the segment",
        path.display(), data_dir.display(), data_dir.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: usize,
        detail: String,
        data_dir: PathBuf,
    },
    /// Anything else (I/O with the file it concerns). Transparent, so that a chain printer
    /// (`{:#}`) prints each cause once.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Syncs a directory, so that files created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Figures for `stats`, kept as counters so that reading them is cheap.
#[derive(Default)]
pub(crate) struct Counters {
    wal_segments: AtomicU64,
    wal_bytes: AtomicU64,
    parquet_files: AtomicU64,
    parquet_bytes: AtomicU64,
    recovered_events: AtomicU64,
    recovery_millis: AtomicU64,
}

impl Counters {
    /// The storage gauges (`allsource_{wal,parquet}_{bytes,...}`) from the counters: called
    /// when a file is sealed or compacted (the writer keeps the WAL's current per group).
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn publish_gauges(&self) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        metrics::gauge!("allsource_wal_bytes").set(load(&self.wal_bytes));
        metrics::gauge!("allsource_wal_segments").set(load(&self.wal_segments));
        metrics::gauge!("allsource_parquet_files").set(load(&self.parquet_files));
        metrics::gauge!("allsource_parquet_bytes").set(load(&self.parquet_bytes));
    }
}

type Reply = oneshot::Sender<Result<Vec<AppendReceipt>, StoreAppendError>>;

enum Command {
    Append {
        tenant: TenantId,
        events: Vec<ProposedEvent>,
        reply: Reply,
    },
    Shutdown(oneshot::Sender<Result<(), String>>),
}

/// The embedded event store.
pub struct EmbeddedStore {
    index: Arc<EventIndex>,
    cold: Arc<ColdFiles>,
    commands: mpsc::Sender<Command>,
    closed: AtomicBool,
    failed: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<Counters>,
    config: EmbeddedConfig,
    compaction: Arc<Compaction>,
    /// Dropping it stops the background compaction policy.
    policy_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

fn parquet_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("parquet")
}

/// WAL segments of a data dir, in order.
pub(crate) fn list_segments(data_dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let dir = wal_dir(data_dir);
    let mut segments = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(wal::segment_seq) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

impl EmbeddedStore {
    /// Locks the data dir, recovers, and starts the writer (and sealer) threads. Blocking.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn open(config: EmbeddedConfig, clock: Arc<dyn Clock>) -> Result<Self, OpenError> {
        Self::open_with_feed(config, clock, None)
    }

    /// [`open`](Self::open), publishing every committed group to `feed` (which starts at the
    /// recovered head) once its events are durable and visible to readers.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn open_with_feed(
        config: EmbeddedConfig,
        clock: Arc<dyn Clock>,
        feed: Option<Arc<CommitFeed>>,
    ) -> Result<Self, OpenError> {
        let started = Instant::now();
        let data_dir = config.data_dir.clone();
        for dir in [wal_dir(&data_dir), parquet_dir(&data_dir)] {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock = Arc::new(DataDirLock::acquire(&data_dir)?);

        let counters = Arc::new(Counters::default());
        let manifest = Manifest::load(&data_dir)?;
        remove_unlisted_parquet(&data_dir, &manifest)?;
        let cold = Arc::new(ColdFiles::new(parquet_dir(&data_dir), config.cache_bytes));
        cold.set_files(&manifest.parquet).context(
            "cannot open the Parquet files the manifest lists; restore them from a backup",
        )?;
        let index = Arc::new(EventIndex::with_cold(Arc::clone(&cold) as _));
        let mut interner = Interner::default();
        load_sealed(&data_dir, &manifest, &index, &counters)
            .context("cannot load the Parquet files the manifest lists")?;

        let in_parquet = manifest.last_position();
        let segments = list_segments(&data_dir)?;
        for (i, (_, path)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            recover_segment(path, is_last, in_parquet, &index, &mut interner, &data_dir)?;
            counters.wal_segments.fetch_add(1, Ordering::Relaxed);
            counters
                .wal_bytes
                .fetch_add(fs::metadata(path).map_or(0, |m| m.len()), Ordering::Relaxed);
        }
        counters
            .recovered_events
            .store(index.total_events(), Ordering::Relaxed);
        counters
            .recovery_millis
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        tracing::info!(
            events = index.total_events(),
            parquet_files = manifest.parquet.len(),
            wal_segments = segments.len(),
            millis = started.elapsed().as_millis() as u64,
            "embedded store recovered"
        );

        if let Some(feed) = &feed {
            feed.start_at(index.last_position());
        }

        // Segments before the last are sealed but not yet in Parquet: seal them now.
        let (mut active_path, mut to_seal) = match segments.split_last() {
            Some(((_, last), earlier)) => (
                last.clone(),
                earlier.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
            ),
            None => {
                let path = create_segment(&data_dir, index.last_position() + 1)?;
                counters.wal_segments.fetch_add(1, Ordering::Relaxed);
                counters
                    .wal_bytes
                    .fetch_add(wal::HEADER_LEN as u64, Ordering::Relaxed);
                (path, Vec::new())
            }
        };
        // The writer rotates right after the group that fills the active segment; a crash in
        // between leaves the last segment full. Rotate it now, as the writer would have:
        // otherwise it stays in the WAL (and out of reach of compaction) until the next
        // append, or until a shutdown rotates it and seals it into a file of its own.
        let last_len = fs::metadata(&active_path)
            .with_context(|| format!("cannot read {}", active_path.display()))?
            .len();
        let next_path = wal_dir(&data_dir).join(wal::segment_name(index.last_position() + 1));
        if last_len >= config.segment_bytes
            && last_len > wal::HEADER_LEN as u64
            && next_path != active_path
        {
            File::open(&active_path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", active_path.display()))?;
            let next = create_segment(&data_dir, index.last_position() + 1)?;
            tracing::info!(
                segment = %active_path.display(),
                bytes = last_len,
                "the last WAL segment is full (the process stopped before rotating it): \
                 starting a new one and sealing it"
            );
            counters.wal_segments.fetch_add(1, Ordering::Relaxed);
            counters
                .wal_bytes
                .fetch_add(wal::HEADER_LEN as u64, Ordering::Relaxed);
            to_seal.push(std::mem::replace(&mut active_path, next));
        }
        let active = OpenOptions::new()
            .append(true)
            .open(&active_path)
            .with_context(|| format!("cannot open {}", active_path.display()))?;
        let active_len = active.metadata().map_err(anyhow::Error::from)?.len();

        let failed = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // Shared by the sealer and compaction, which both write it (see `compaction`).
        let manifest = Arc::new(Mutex::new(manifest));
        let compaction = Arc::new(Compaction::new(
            data_dir.clone(),
            Arc::clone(&manifest),
            Arc::clone(&cold),
            Arc::clone(&counters),
            config.compaction.clone(),
        ));
        let (seal_tx, seal_rx) = std::sync::mpsc::channel::<PathBuf>();
        if config.seal {
            for path in to_seal {
                let _ = seal_tx.send(path);
            }
            let sealer = Sealer {
                data_dir: data_dir.clone(),
                manifest,
                cold: Arc::clone(&cold),
                index: Arc::clone(&index),
                counters: Arc::clone(&counters),
                _lock: Arc::clone(&lock),
            };
            threads.push(
                std::thread::Builder::new()
                    .name("allsource-sealer".into())
                    .spawn(move || sealer.run(seal_rx))
                    .context("cannot start the sealer thread")?,
            );
        }
        let mut policy_stop = None;
        if config.compaction.enabled {
            let (stop, stopped) = std::sync::mpsc::channel();
            let compaction = Arc::clone(&compaction);
            let lock = Arc::clone(&lock);
            threads.push(
                std::thread::Builder::new()
                    .name("allsource-compactor".into())
                    .spawn(move || compaction::run_policy(compaction, stopped, lock))
                    .context("cannot start the compaction thread")?,
            );
            policy_stop = Some(stop);
        }
        let segment = Arc::new(Mutex::new(active));
        let writer_done = Arc::new(AtomicBool::new(false));
        if let Durability::IntervalMs(ms) = config.durability {
            let segment = Arc::clone(&segment);
            let failed = Arc::clone(&failed);
            let stop = Arc::clone(&writer_done);
            threads.push(
                std::thread::Builder::new()
                    .name("allsource-syncer".into())
                    .spawn(move || {
                        // Runs as long as the writer does.
                        while !stop.load(Ordering::Acquire) && !failed.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(ms));
                            if let Err(e) = segment.lock().sync_data() {
                                tracing::error!(error = %e, "periodic WAL sync failed; refusing further appends");
                                failed.store(true, Ordering::Release);
                            }
                        }
                    })
                    .context("cannot start the syncer thread")?,
            );
        }
        let (commands, receiver) = mpsc::channel(8192);
        let writer = Writer {
            data_dir: data_dir.clone(),
            durability: config.durability,
            segment_bytes: config.segment_bytes,
            max_group_events: config.max_group_events.max(1),
            index: Arc::clone(&index),
            clock,
            segment,
            segment_len: active_len,
            failed: Arc::clone(&failed),
            seal: config.seal.then_some(seal_tx),
            counters: Arc::clone(&counters),
            feed,
            done: writer_done,
            metrics: WriterMetrics::new(),
            _lock: lock,
        };
        writer.metrics.publish(&index, &counters);
        counters.publish_gauges();
        threads.push(
            std::thread::Builder::new()
                .name("allsource-writer".into())
                .spawn(move || writer.run(receiver))
                .context("cannot start the writer thread")?,
        );
        Ok(Self {
            index,
            cold,
            commands,
            closed: AtomicBool::new(false),
            failed,
            threads: Mutex::new(threads),
            counters,
            config,
            compaction,
            policy_stop: Mutex::new(policy_stop),
        })
    }

    /// The store's [`Compactor`](allsource_application::ports::Compactor): on-demand
    /// compaction and its figures.
    pub fn compactor(&self) -> EmbeddedCompactor {
        EmbeddedCompactor::new(Arc::clone(&self.compaction))
    }

    /// The sealed Parquet files, for the SQL engine to read directly.
    pub fn sealed_files(&self) -> Arc<dyn crate::sql::SealedFiles> {
        Arc::new(EmbeddedSealedFiles(Arc::clone(&self.compaction)))
    }

    /// What backups cut of this store, with `state` (this data dir's state store) copied
    /// before each cut.
    pub fn backup_source(
        &self,
        state: Arc<crate::state::FileStateStore>,
    ) -> crate::backup::EmbeddedBackupSource {
        crate::backup::EmbeddedBackupSource::new(
            Arc::clone(&self.index),
            Arc::clone(&self.compaction),
            state,
        )
    }

    /// The read side (for benchmarks and diagnostics).
    pub fn index(&self) -> &EventIndex {
        &self.index
    }

    /// Runs a read on the async worker without I/O; if it needs the disk, again on a blocking
    /// thread (see the module docs, "Reads").
    async fn read<T: Send + 'static>(
        &self,
        op: impl Fn(&EventIndex, Io) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match op(&self.index, Io::Forbidden) {
            Ok(value) => Ok(value),
            Err(ReadError::NeedsIo) => {
                let index = Arc::clone(&self.index);
                tokio::task::spawn_blocking(move || op(&index, Io::Allowed))
                    .await
                    .map_err(|e| StoreError::Internal(anyhow!("a read task failed: {e}")))?
                    .map_err(StoreError::from)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Indexes the events of the manifest's Parquet files (their index columns, not the payloads).
/// Two threads share the work: one decodes the files and builds the id index (the largest
/// map), the other fills the rest of the index from the decoded batches.
fn load_sealed(
    data_dir: &Path,
    manifest: &Manifest,
    index: &EventIndex,
    counters: &Counters,
) -> anyhow::Result<()> {
    let (batches, received) = std::sync::mpsc::sync_channel::<arrow::array::RecordBatch>(2);
    std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new()
            .name("allsource-recovery".into())
            .spawn_scoped(scope, move || -> anyhow::Result<crate::index::SealedIds> {
                let sealed: u64 = manifest.parquet.iter().map(|e| e.events).sum();
                let mut ids = crate::index::SealedIds::with_expected(sealed);
                for entry in &manifest.parquet {
                    let path = parquet_dir(data_dir).join(&entry.file);
                    let body_bytes = parquet_file::read_index_batches(&path, |batch| {
                        parquet_file::for_each_id(&batch, |tenant, id| {
                            ids.add(tenant, id).map_err(|e| anyhow!(e))
                        })?;
                        // A closed channel means the indexing side failed: it reports why.
                        batches.send(batch).map_err(|_| anyhow!("indexing stopped"))
                    })
                    .with_context(|| {
                        format!(
                            "cannot load {} (listed in the manifest); restore it from a backup",
                            path.display()
                        )
                    })?;
                    index.add_sealed_body_bytes(body_bytes);
                    counters.parquet_files.fetch_add(1, Ordering::Relaxed);
                    counters
                        .parquet_bytes
                        .fetch_add(entry.bytes, Ordering::Relaxed);
                }
                Ok(ids)
            })
            .context("cannot start the recovery thread")?;
        let mut indexed = Ok(());
        for batch in received {
            let published = parquet_file::index_rows(&batch)
                .and_then(|rows| index.publish_sealed(&rows).map_err(|e| anyhow!(e)));
            if let Err(e) = published {
                indexed = Err(e);
                break;
            }
        }
        let decoded = decoder
            .join()
            .map_err(|_| anyhow!("the recovery thread panicked"))?;
        // The indexing error is the cause when both failed (the decoder saw a closed channel).
        indexed?;
        index.install_sealed_ids(decoded?).map_err(|e| anyhow!(e))
    })
}

fn create_segment(data_dir: &Path, first_position: u64) -> anyhow::Result<PathBuf> {
    let path = wal_dir(data_dir).join(wal::segment_name(first_position));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&wal::header())?;
    file.sync_all()?;
    sync_dir(&wal_dir(data_dir))?;
    Ok(path)
}

fn remove_unlisted_parquet(data_dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    for entry in fs::read_dir(parquet_dir(data_dir))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !manifest.parquet.iter().any(|p| p.file == name) {
            // A temp file or a file whose manifest update never happened: its events are still
            // in the WAL.
            tracing::info!(file = %name, "removing a Parquet file not in the manifest");
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn recover_segment(
    path: &Path,
    is_last: bool,
    in_parquet: u64,
    index: &EventIndex,
    interner: &mut Interner,
    data_dir: &Path,
) -> Result<(), OpenError> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let end = wal::scan_segment(&bytes, interner, |events| {
        let fresh: Vec<_> = events
            .into_iter()
            .filter(|e| e.position.get() > in_parquet)
            .collect();
        index.publish(fresh)
    });
    let corrupt = |offset, detail| OpenError::Corrupt {
        path: path.to_path_buf(),
        offset,
        detail,
        data_dir: data_dir.to_path_buf(),
    };
    match end {
        ScanEnd::Clean => Ok(()),
        ScanEnd::TornTail { offset } if is_last => {
            tracing::warn!(
                segment = %path.display(),
                cut_bytes = bytes.len() - offset,
                "cutting a torn record off the end of the WAL (a crash during a write; it was \
                 never acknowledged)"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(anyhow::Error::from)?;
            if offset < wal::HEADER_LEN {
                file.set_len(0).map_err(anyhow::Error::from)?;
                (&file)
                    .write_all(&wal::header())
                    .map_err(anyhow::Error::from)?;
            } else {
                file.set_len(offset as u64).map_err(anyhow::Error::from)?;
            }
            file.sync_all().map_err(anyhow::Error::from)?;
            Ok(())
        }
        ScanEnd::TornTail { offset } => Err(corrupt(
            offset,
            "a sealed segment ends in the middle of a record".into(),
        )),
        ScanEnd::Corrupt { offset, detail } => Err(corrupt(offset, detail)),
    }
}

/// The single writer.
struct Writer {
    data_dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    max_group_events: usize,
    index: Arc<EventIndex>,
    clock: Arc<dyn Clock>,
    segment: Arc<Mutex<File>>,
    segment_len: u64,
    failed: Arc<AtomicBool>,
    seal: Option<std::sync::mpsc::Sender<PathBuf>>,
    counters: Arc<Counters>,
    /// Where committed groups are announced to the followers of the log.
    feed: Option<Arc<CommitFeed>>,
    /// Set when the writer exits (stops the periodic syncer).
    done: Arc<AtomicBool>,
    metrics: WriterMetrics,
    /// Keeps the data dir locked while the writer runs.
    _lock: Arc<DataDirLock>,
}

/// The writer's measurements (see docs/OPERATIONS.md, "Metrics"): handles taken once, so a
/// commit group records with a few atomic operations and no lookup.
struct WriterMetrics {
    fsync_seconds: metrics::Histogram,
    group_appends: metrics::Histogram,
    group_events: metrics::Histogram,
    events: metrics::Gauge,
    entities: metrics::Gauge,
    wal_bytes: metrics::Gauge,
    wal_segments: metrics::Gauge,
}

impl WriterMetrics {
    fn new() -> Self {
        Self {
            fsync_seconds: metrics::histogram!("allsource_wal_fsync_duration_seconds"),
            group_appends: metrics::histogram!("allsource_commit_group_appends"),
            group_events: metrics::histogram!("allsource_commit_group_events"),
            events: metrics::gauge!("allsource_events"),
            entities: metrics::gauge!("allsource_entities"),
            wal_bytes: metrics::gauge!("allsource_wal_bytes"),
            wal_segments: metrics::gauge!("allsource_wal_segments"),
        }
    }

    /// The gauges, from the index and the store's counters.
    #[allow(clippy::cast_precision_loss)]
    fn publish(&self, index: &EventIndex, counters: &Counters) {
        let (events, entities) = index.totals();
        self.events.set(events as f64);
        self.entities.set(entities as f64);
        self.wal_bytes
            .set(counters.wal_bytes.load(Ordering::Relaxed) as f64);
        self.wal_segments
            .set(counters.wal_segments.load(Ordering::Relaxed) as f64);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut buffer = Vec::with_capacity(1 << 20);
        while let Some(first) = receiver.blocking_recv() {
            let mut group = vec![first];
            let mut events = group_events(&group[0]);
            while events < self.max_group_events {
                match receiver.try_recv() {
                    Ok(next) => {
                        events += group_events(&next);
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            let mut shutdown = None;
            let mut appends = Vec::with_capacity(group.len());
            for command in group {
                match command {
                    Command::Append {
                        tenant,
                        events,
                        reply,
                    } if shutdown.is_none() => appends.push((tenant, events, reply)),
                    Command::Append { reply, .. } => {
                        let _ = reply.send(Err(unavailable("the store is shutting down")));
                    }
                    Command::Shutdown(reply) => shutdown = Some(reply),
                }
            }
            self.commit(appends, &mut buffer);
            if let Some(reply) = shutdown {
                let _ = reply.send(self.segment.lock().sync_data().map_err(|e| e.to_string()));
                return;
            }
        }
        // Every sender is gone (the store was dropped): make what was written durable.
        if let Err(e) = self.segment.lock().sync_data() {
            tracing::error!(error = %e, "final WAL sync failed");
        }
    }

    fn commit(
        &mut self,
        appends: Vec<(TenantId, Vec<ProposedEvent>, Reply)>,
        buffer: &mut Vec<u8>,
    ) {
        if self.failed.load(Ordering::Acquire) {
            for (_, _, reply) in appends {
                let _ = reply.send(Err(failed_store()));
            }
            return;
        }
        buffer.clear();
        let span = tracing::info_span!(
            "commit_group",
            appends = appends.len(),
            events = tracing::field::Empty
        );
        let _entered = span.enter();
        #[allow(clippy::cast_precision_loss)]
        self.metrics.group_appends.record(appends.len() as f64);
        let mut waiters = Vec::with_capacity(appends.len());
        let mut new_events = Vec::new();
        {
            let mut planner = self.index.planner();
            for (tenant, events, reply) in appends {
                match planner.stage(&tenant, events, self.clock.now()) {
                    Ok(staged) => {
                        if !staged.new_events.is_empty() {
                            wal::encode_append(buffer, &tenant, &staged.new_events);
                            new_events.extend(staged.new_events);
                        }
                        waiters.push((reply, staged.receipts));
                    }
                    Err(refused) => {
                        let _ = reply.send(Err(refused));
                    }
                }
            }
        }
        span.record("events", new_events.len());
        #[allow(clippy::cast_precision_loss)]
        self.metrics.group_events.record(new_events.len() as f64);
        if !buffer.is_empty() {
            if let Err(e) = self.write(buffer) {
                tracing::error!(error = %e, "WAL write failed; refusing further appends until restart");
                self.failed.store(true, Ordering::Release);
                for (reply, _) in waiters {
                    let _ = reply.send(Err(failed_store()));
                }
                return;
            }
            // The feed gets the same events (shared, not copied) once they are visible.
            let published = self.feed.is_some().then(|| new_events.clone());
            if let Err(e) = self.index.publish(new_events) {
                // The planner and the index disagree: a bug, not an I/O problem.
                tracing::error!(error = %e, "publishing a committed group failed");
                self.failed.store(true, Ordering::Release);
                for (reply, _) in waiters {
                    let _ = reply.send(Err(StoreAppendError::Internal(anyhow!(
                        "publishing a committed group failed"
                    ))));
                }
                return;
            }
            if let (Some(feed), Some(events)) = (&self.feed, published) {
                feed.publish_events(events);
            }
            self.metrics.publish(&self.index, &self.counters);
        }
        for (reply, receipts) in waiters {
            let _ = reply.send(Ok(receipts));
        }
        if self.segment_len >= self.segment_bytes
            && let Err(e) = self.rotate()
        {
            tracing::error!(error = %e, "starting a new WAL segment failed; refusing further appends");
            self.failed.store(true, Ordering::Release);
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut segment = self.segment.lock();
        segment.write_all(bytes)?;
        if self.durability == Durability::Fsync {
            let started = Instant::now();
            tracing::info_span!("wal_fsync").in_scope(|| segment.sync_data())?;
            self.metrics
                .fsync_seconds
                .record(started.elapsed().as_secs_f64());
        }
        self.segment_len += bytes.len() as u64;
        self.counters
            .wal_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn rotate(&mut self) -> anyhow::Result<()> {
        let next = create_segment(&self.data_dir, self.index.last_position() + 1)?;
        let file = OpenOptions::new().append(true).open(&next)?;
        let sealed_path = {
            let mut segment = self.segment.lock();
            segment.sync_data()?;
            *segment = file;
            sealed_path(&self.data_dir, &next)?
        };
        self.segment_len = wal::HEADER_LEN as u64;
        self.counters.wal_segments.fetch_add(1, Ordering::Relaxed);
        self.counters
            .wal_bytes
            .fetch_add(wal::HEADER_LEN as u64, Ordering::Relaxed);
        if let (Some(seal), Some(path)) = (&self.seal, sealed_path) {
            let _ = seal.send(path);
        }
        Ok(())
    }
}

/// The segment just before `next` (the one being sealed).
fn sealed_path(data_dir: &Path, next: &Path) -> anyhow::Result<Option<PathBuf>> {
    let segments = list_segments(data_dir)?;
    Ok(segments
        .iter()
        .position(|(_, p)| p == next)
        .and_then(|i| i.checked_sub(1))
        .map(|i| segments[i].1.clone()))
}

fn group_events(command: &Command) -> usize {
    match command {
        Command::Append { events, .. } => events.len(),
        Command::Shutdown(_) => 0,
    }
}

fn unavailable(why: &str) -> StoreAppendError {
    StoreAppendError::Unavailable(why.to_owned())
}

fn failed_store() -> StoreAppendError {
    unavailable("a write to the WAL failed; the server must be restarted to recover")
}

/// Steps of sealing a segment, in order (tests stop after each to simulate a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SealStep {
    /// The Parquet temp file is written and synced.
    TempWritten,
    /// The Parquet file is renamed into place (not yet in the manifest).
    Renamed,
    /// The manifest names the file.
    ManifestUpdated,
    /// The WAL segment is deleted.
    SegmentDeleted,
}

/// Turns one sealed segment into a Parquet file, recorded in `manifest`, then deletes the
/// segment. Stops after `stop_after` when given (crash simulation in tests).
///
/// # Errors
/// I/O and Parquet errors; the segment is kept, so nothing is lost.
pub fn seal_segment(
    data_dir: &Path,
    segment: &Path,
    manifest: &mut Manifest,
    stop_after: Option<SealStep>,
) -> anyhow::Result<Option<ParquetEntry>> {
    let bytes = fs::read(segment)?;
    let mut events = Vec::new();
    let in_parquet = manifest.last_position();
    match wal::scan_segment(&bytes, &mut Interner::default(), |batch| {
        events.extend(batch.into_iter().filter(|e| e.position.get() > in_parquet));
        Ok(())
    }) {
        ScanEnd::Clean => {}
        other => anyhow::bail!("cannot seal {}: {other:?}", segment.display()),
    }
    let stop = |step| stop_after.is_some_and(|s| s == step);
    let mut entry = None;
    if let (Some(first), Some(last)) = (events.first(), events.last()) {
        let name = compaction::file_name(first.position.get(), last.position.get());
        let path = parquet_dir(data_dir).join(&name);
        if stop(SealStep::TempWritten) {
            // Write only the temp file, as a crash before the rename would leave it.
            let tmp = path.with_extension("parquet.tmp");
            parquet_file::write(&tmp, &events)?;
            return Ok(None);
        }
        let bytes = parquet_file::write(&path, &events)?;
        if stop(SealStep::Renamed) {
            return Ok(None);
        }
        let new_entry = ParquetEntry {
            file: name,
            first_position: first.position.get(),
            last_position: last.position.get(),
            events: events.len() as u64,
            bytes,
        };
        manifest.parquet.push(new_entry.clone());
        manifest.store(data_dir)?;
        entry = Some(new_entry);
        if stop(SealStep::ManifestUpdated) {
            return Ok(entry);
        }
    }
    fs::remove_file(segment)?;
    sync_dir(&wal_dir(data_dir))?;
    Ok(entry)
}

struct Sealer {
    data_dir: PathBuf,
    /// Held while a segment is sealed, so compaction never swaps the manifest meanwhile.
    manifest: Arc<Mutex<Manifest>>,
    /// Told of each new file, before the index lets the file's events go from its tail.
    cold: Arc<ColdFiles>,
    index: Arc<EventIndex>,
    counters: Arc<Counters>,
    _lock: Arc<DataDirLock>,
}

impl Sealer {
    fn run(self, segments: std::sync::mpsc::Receiver<PathBuf>) {
        while let Ok(segment) = segments.recv() {
            let wal_bytes = fs::metadata(&segment).map_or(0, |m| m.len());
            // A panic while sealing is reported like a failure, and the thread goes on with
            // the next segment: sealing never silently stops.
            let sealed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut manifest = self.manifest.lock();
                let entry = seal_segment(&self.data_dir, &segment, &mut manifest, None)?;
                if let Some(entry) = &entry {
                    // Readers find the file before the tail lets its events go. If it cannot
                    // be opened, the events stay in the tail (memory) until the next start.
                    match self.cold.set_files(&manifest.parquet) {
                        Ok(()) => self.index.evict_through(entry.last_position),
                        Err(e) => tracing::error!(
                            file = %entry.file,
                            error = format!("{e:#}"),
                            "cannot open a sealed file for reads; its events stay in memory"
                        ),
                    }
                }
                Ok(entry)
            }))
            .unwrap_or_else(|_| Err(anyhow!("sealing panicked")));
            match sealed {
                Ok(entry) => {
                    // The Parquet counters move first: whoever sees the WAL segment count drop
                    // (tests, stats, compaction) then also sees the file that replaced it.
                    if let Some(entry) = &entry {
                        self.counters.parquet_files.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .parquet_bytes
                            .fetch_add(entry.bytes, Ordering::Relaxed);
                        tracing::info!(file = %entry.file, events = entry.events, "sealed a WAL segment into Parquet");
                    }
                    self.counters
                        .wal_bytes
                        .fetch_sub(wal_bytes, Ordering::Relaxed);
                    self.counters.wal_segments.fetch_sub(1, Ordering::Release);
                    self.counters.publish_gauges();
                }
                Err(e) => {
                    metrics::counter!("allsource_seal_failures_total").increment(1);
                    // The segment stays; the next start seals it again.
                    tracing::error!(segment = %segment.display(), error = format!("{e:#}"), "sealing failed");
                }
            }
        }
    }
}

/// The embedded store's Parquet files as the SQL engine reads them.
struct EmbeddedSealedFiles(Arc<Compaction>);

#[async_trait]
impl crate::sql::SealedFiles for EmbeddedSealedFiles {
    async fn sealed(&self) -> crate::sql::SealedCut {
        self.0.sealed_cut().await
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Without a shutdown: no compaction pass may start once the writer may be gone.
        self.compaction.request_stop();
    }
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable("the store is shutting down"));
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(failed_store());
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append {
                tenant: tenant.clone(),
                events,
                reply,
            })
            .await
            .map_err(|_| unavailable("the store is shutting down"))?;
        answer
            .await
            .map_err(|_| unavailable("the writer stopped before answering"))?
    }

    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let (tenant, entity_id) = (tenant.clone(), entity_id.clone());
        self.read(move |index, io| index.read_stream(&tenant, &entity_id, range, io))
            .await
    }

    async fn query(&self, tenant: &TenantId, query: EventQuery) -> Result<QueryPage, StoreError> {
        let tenant = tenant.clone();
        self.read(move |index, io| index.query(&tenant, &query, io))
            .await
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        let tenant = tenant.clone();
        self.read(move |index, io| index.get_event(&tenant, id, io))
            .await
    }

    async fn list_entities(
        &self,
        tenant: &TenantId,
        query: EntityListQuery,
    ) -> Result<EntityPage, StoreError> {
        Ok(self.index.list_entities(tenant, &query))
    }

    async fn event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError> {
        Ok(self.index.event_types(tenant))
    }

    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError> {
        let mut stats = self.index.stats(tenant);
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Acquire);
        let storage = &mut stats.storage;
        storage.insert("backend".into(), "embedded".into());
        storage.insert("durability".into(), self.config.durability.name().into());
        storage.insert(
            "data_dir".into(),
            self.config.data_dir.display().to_string().into(),
        );
        storage.insert("wal_segments".into(), load(&c.wal_segments).into());
        storage.insert("wal_bytes".into(), load(&c.wal_bytes).into());
        storage.insert("parquet_files".into(), load(&c.parquet_files).into());
        storage.insert("parquet_bytes".into(), load(&c.parquet_bytes).into());
        let cold = self.cold.stats();
        storage.insert(
            "cache".into(),
            serde_json::json!({
                "capacity_bytes": cold.cache_capacity_bytes,
                "bytes": cold.cache_bytes,
                "blocks": cold.cache_blocks,
                "block_reads": cold.block_reads,
            }),
        );
        storage.insert(
            "last_recovery".into(),
            serde_json::json!({
                "events": load(&c.recovered_events),
                "millis": load(&c.recovery_millis),
            }),
        );
        Ok(stats)
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Stop compaction first: the policy thread exits, a running pass stops between files.
        drop(self.policy_stop.lock().take());
        let compaction = Arc::clone(&self.compaction);
        let _ = tokio::task::spawn_blocking(move || compaction.stop()).await;
        let (reply, done) = oneshot::channel();
        let synced = if self.commands.send(Command::Shutdown(reply)).await.is_ok() {
            done.await
                .unwrap_or_else(|_| Err("the writer stopped".into()))
        } else {
            Ok(())
        };
        // The writer has exited and dropped the sealer's channel; wait for both threads so
        // the data dir is free when this returns.
        let threads = std::mem::take(&mut *self.threads.lock());
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if joined.is_err() {
            return Err(StoreError::Internal(anyhow!("a store thread panicked")));
        }
        synced.map_err(|e| StoreError::Internal(anyhow!("final WAL sync failed: {e}")))
    }
}

#[cfg(test)]
mod cold_tests;
#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod tests;

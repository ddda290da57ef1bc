//! Compaction: merging runs of adjacent small Parquet files into larger ones, so that a store
//! with a small `segment_bytes` (or a long life) does not accumulate thousands of files.
//!
//! # Steps of one merge, and what a crash after each leaves
//! 1. **Plan** ([`plan`]): under the manifest lock, take a copy of the manifest and pick runs
//!    of adjacent files below `target_file_bytes` whose sizes add up to at most that target.
//!    The background policy merges a run once it has `min_files` files or its oldest file is
//!    older than `max_small_file_age`; a trigger merges every run of two or more.
//! 2. **Merge**: read the run's files in position order (checking each file's positions and
//!    count against its manifest entry) and stream the events into
//!    `parquet/events-<first>-<last>.parquet.tmp`, then sync it.
//!    *Crash:* a `.tmp` file, not in the manifest: recovery removes it.
//! 3. **Rename** the temp file into place and sync the directory.
//!    *Crash:* a complete file the manifest does not name: recovery removes it; the old files
//!    are still listed and hold the events.
//! 4. **Swap the manifest**: one atomic manifest write (temp, sync, rename, sync dir) replaces
//!    the run's N entries by the one new entry.
//!    *Crash:* the manifest names the new file; the old files are no longer listed, so recovery
//!    removes them. Each event is listed exactly once before and after the swap.
//! 5. **Delete** the old files and sync the directory.
//!
//! The highest position in Parquet never changes (a run's new file ends where its last file
//! ended), so recovery's "skip WAL events the manifest covers" rule is unaffected.
//!
//! # Concurrency
//! - Appends never wait: the writer thread does not touch Parquet files or the manifest.
//! - Reads never wait: the index holds positions, which compaction does not change; after the
//!   swap, reads of sealed events move to the merged file ([`ColdFiles::set_files`]), and a
//!   read already holding an old file finishes with it (its descriptor stays open).
//! - The sealer and compaction both write the manifest. They share it behind one mutex, held by
//!   the sealer while it seals a segment and by compaction only to plan and to swap; the slow
//!   merge runs without it. The swap checks that the run's entries are still in the manifest
//!   unchanged (the sealer only appends entries, so they are).
//! - Compaction passes are serialized by their own mutex: a trigger during a background pass
//!   waits for it.
//! - Shutdown asks a running pass to stop between files and waits for it.
//!
//! # Fault injection
//! [`CompactionFailpoint`] stops (unit tests) or aborts the process (black-box crash tests,
//! through the `ALLSOURCE_FAILPOINT` environment variable) right after a step.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use allsource_application::ports::{
    CompactionError, CompactionPolicy, CompactionReport, CompactionStats, Compactor,
};
use anyhow::{Context, anyhow, bail, ensure};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::cold::ColdFiles;
use super::intern::Interner;
use super::manifest::{Manifest, ParquetEntry};
use super::parquet_file::{self, ParquetSink};
use super::{Counters, parquet_dir, sync_dir};

/// Settings of compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Whether the background policy runs (the trigger works either way).
    pub enabled: bool,
    /// How often the background policy looks for runs to merge.
    pub interval: Duration,
    /// The policy merges a run of adjacent small files once it has this many (at least 2).
    pub min_files: usize,
    /// Files below this size are small; a merged file does not exceed it.
    pub target_file_bytes: u64,
    /// The policy also merges a run (of two or more) whose oldest file is older than this;
    /// `None`: no age rule.
    pub max_small_file_age: Option<Duration>,
    /// Fault injection for crash tests; `None` in production.
    pub failpoint: Option<CompactionFailpoint>,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(60),
            min_files: 8,
            target_file_bytes: 128 * 1024 * 1024,
            max_small_file_age: Some(Duration::from_secs(3600)),
            failpoint: None,
        }
    }
}

/// The steps of one merge, in order (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CompactionStep {
    /// The merged temp file is written and synced.
    TempWritten,
    /// The merged file is renamed into place (not yet in the manifest).
    Renamed,
    /// The manifest names the merged file instead of the old ones.
    ManifestSwapped,
    /// The first old file is deleted (the others are not yet).
    FirstOldFileDeleted,
}

/// Where compaction pretends to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionFailpoint {
    /// Return an error right after the step, leaving the files as a crash would (unit tests).
    StopAfter(CompactionStep),
    /// `std::process::abort()` right after the step (black-box crash tests).
    AbortAfter(CompactionStep),
}

impl CompactionFailpoint {
    /// The environment variable the server reads the failpoint from (tests only).
    pub const ENV: &'static str = "ALLSOURCE_FAILPOINT";

    /// Parses a value of [`ENV`](Self::ENV): `compaction_after_temp`, `compaction_after_write`
    /// (renamed into place), `compaction_after_manifest`, `compaction_after_first_delete`;
    /// each aborts the process after that step.
    ///
    /// # Errors
    /// Any other value, with the allowed ones.
    pub fn parse(value: &str) -> Result<Self, String> {
        let step = match value {
            "compaction_after_temp" => CompactionStep::TempWritten,
            "compaction_after_write" => CompactionStep::Renamed,
            "compaction_after_manifest" => CompactionStep::ManifestSwapped,
            "compaction_after_first_delete" => CompactionStep::FirstOldFileDeleted,
            other => {
                return Err(format!(
                    "{}=\"{other}\" is not one of: compaction_after_temp, compaction_after_write, \
                     compaction_after_manifest, compaction_after_first_delete",
                    Self::ENV
                ));
            }
        };
        Ok(Self::AbortAfter(step))
    }
}

/// One Parquet file as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanFile {
    pub bytes: u64,
    /// Time since the file was written.
    pub age: Duration,
}

/// The rules of one planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRules {
    /// Merge a run once it has this many files (values below 2 count as 2).
    pub min_files: usize,
    pub target_file_bytes: u64,
    /// Merge a run of two or more once its oldest file is this old.
    pub max_small_file_age: Option<Duration>,
}

/// Picks the runs to merge: maximal runs of adjacent files below `target_file_bytes` whose
/// total stays within it, cut where a large file sits or where the next file would overflow
/// the target; kept when they have `min_files` files, or two or more and an old enough file.
/// Returns index ranges into `files`, in order, not overlapping.
pub fn plan(files: &[PlanFile], rules: &PlanRules) -> Vec<Range<usize>> {
    let min_files = rules.min_files.max(2);
    let keep = |run: &Range<usize>| {
        let files = &files[run.clone()];
        files.len() >= min_files
            || (files.len() >= 2
                && rules
                    .max_small_file_age
                    .is_some_and(|max| files.iter().any(|f| f.age >= max)))
    };
    let mut runs = Vec::new();
    let mut start = 0;
    let mut total = 0u64;
    for (i, file) in files.iter().enumerate() {
        if file.bytes >= rules.target_file_bytes {
            runs.push(start..i);
            start = i + 1;
            total = 0;
            continue;
        }
        if total + file.bytes > rules.target_file_bytes {
            runs.push(start..i);
            start = i;
            total = 0;
        }
        total += file.bytes;
    }
    runs.push(start..files.len());
    runs.retain(|run| keep(run));
    runs
}

/// The name of the Parquet file holding positions `first..=last`.
pub(crate) fn file_name(first: u64, last: u64) -> String {
    format!("events-{first:020}-{last:020}.parquet")
}

/// What started a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Api,
    Policy,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Policy => "policy",
        }
    }
}

#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    failures: u64,
    files_merged: u64,
    files_written: u64,
    bytes_written: u64,
    events_rewritten: u64,
    last_checked_at: Option<DateTime<Utc>>,
    last_run: Option<CompactionReport>,
    last_error: Option<String>,
}

/// Compaction of one open store: shared by the store, its policy thread and its
/// [`EmbeddedCompactor`] handles.
pub(crate) struct Compaction {
    data_dir: PathBuf,
    /// Shared with the sealer; see the module docs.
    manifest: Arc<Mutex<Manifest>>,
    /// Told of the new file set after each swap (reads of sealed events).
    cold: Arc<ColdFiles>,
    counters: Arc<Counters>,
    config: CompactionConfig,
    /// Serializes passes.
    running: Mutex<()>,
    totals: Mutex<Totals>,
    /// Set at shutdown: a pass stops between files, and no new one starts. (Compaction does
    /// not hold the data-dir lock: shutdown waits for a running pass instead, so handles that
    /// outlive the store do not keep the directory locked.)
    stopping: AtomicBool,
    /// Readers of the Parquet files (SQL scans) hold it shared; old files are deleted only
    /// under it exclusively, so a scan never loses a file it planned to read.
    file_readers: Arc<tokio::sync::RwLock<()>>,
}

impl Compaction {
    pub(crate) fn new(
        data_dir: PathBuf,
        manifest: Arc<Mutex<Manifest>>,
        cold: Arc<ColdFiles>,
        counters: Arc<Counters>,
        config: CompactionConfig,
    ) -> Self {
        Self {
            data_dir,
            manifest,
            cold,
            counters,
            config,
            running: Mutex::new(()),
            totals: Mutex::new(Totals::default()),
            stopping: AtomicBool::new(false),
            file_readers: Arc::new(tokio::sync::RwLock::new(())),
        }
    }

    /// The files as the manifest lists them now, kept from deletion while the cut's guard
    /// lives.
    pub(crate) async fn sealed_cut(&self) -> crate::sql::SealedCut {
        let guard = Arc::clone(&self.file_readers).read_owned().await;
        let manifest = self.manifest.lock().clone();
        // Canonical: the engine names files by absolute paths without `.` or `..` (a data dir
        // given as `./data` would otherwise name files it cannot find).
        let dir = parquet_dir(&self.data_dir);
        let dir = fs::canonicalize(&dir).unwrap_or(dir);
        crate::sql::SealedCut {
            files: manifest
                .parquet
                .iter()
                .map(|e| (dir.join(&e.file), e.bytes))
                .collect(),
            last_position: manifest.last_position(),
            guard: Box::new(guard),
        }
    }

    /// The manifest's entries now and the Parquet directory, kept from deletion while the
    /// guard lives (backups copy the files).
    pub(crate) async fn backup_cut(
        &self,
    ) -> (
        Vec<super::manifest::ParquetEntry>,
        PathBuf,
        tokio::sync::OwnedRwLockReadGuard<()>,
    ) {
        let guard = Arc::clone(&self.file_readers).read_owned().await;
        let entries = self.manifest.lock().parquet.clone();
        (entries, parquet_dir(&self.data_dir), guard)
    }

    pub(crate) fn config(&self) -> &CompactionConfig {
        &self.config
    }

    /// Stops passes: a running one stops between files; this waits for it.
    pub(crate) fn stop(&self) {
        self.request_stop();
        drop(self.running.lock());
    }

    /// Like [`stop`](Self::stop), without waiting.
    pub(crate) fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Runs one pass and records its outcome in the totals.
    pub(crate) fn run(&self, trigger: Trigger) -> anyhow::Result<CompactionReport> {
        let outcome = self.pass(trigger);
        let mut totals = self.totals.lock();
        totals.last_checked_at = Some(Utc::now());
        match &outcome {
            Ok(report) if report.compacted => {
                totals.runs += 1;
                totals.files_merged += report.files_merged;
                totals.files_written += report.files_written;
                totals.bytes_written += report.bytes_written;
                totals.events_rewritten += report.events_rewritten;
                totals.last_run = Some(report.clone());
            }
            Ok(_) => {}
            Err(e) => {
                totals.failures += 1;
                totals.last_error = Some(format!("{e:#}"));
            }
        }
        outcome
    }

    fn pass(&self, trigger: Trigger) -> anyhow::Result<CompactionReport> {
        let _running = self.running.lock();
        let started_at = Utc::now();
        let started = Instant::now();
        if self.is_stopping() {
            bail!("the store is shutting down");
        }
        let snapshot = self.manifest.lock().parquet.clone();
        let (files_before, bytes_before) = totals_of(&snapshot);
        let dir = parquet_dir(&self.data_dir);
        let now = SystemTime::now();
        let files: Vec<PlanFile> = snapshot
            .iter()
            .map(|entry| PlanFile {
                bytes: entry.bytes,
                age: fs::metadata(dir.join(&entry.file))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|modified| now.duration_since(modified).ok())
                    .unwrap_or_default(),
            })
            .collect();
        let rules = match trigger {
            Trigger::Api => PlanRules {
                min_files: 2,
                target_file_bytes: self.config.target_file_bytes,
                max_small_file_age: None,
            },
            Trigger::Policy => PlanRules {
                min_files: self.config.min_files,
                target_file_bytes: self.config.target_file_bytes,
                max_small_file_age: self.config.max_small_file_age,
            },
        };
        let runs = plan(&files, &rules);
        let mut report = CompactionReport::nothing(
            "embedded",
            trigger.name(),
            "no run of two or more adjacent small Parquet files to merge",
            started_at,
        );
        report.files_before = files_before;
        report.bytes_before = bytes_before;
        for run in runs {
            if self.is_stopping() {
                break;
            }
            let old = &snapshot[run];
            let (entry, bytes) = self.merge_run(old)?;
            report.compacted = true;
            report.reason = None;
            report.files_merged += old.len() as u64;
            report.files_written += 1;
            report.bytes_written += bytes;
            report.events_rewritten += entry.events;
            tracing::info!(
                file = %entry.file,
                merged = old.len(),
                events = entry.events,
                bytes,
                trigger = trigger.name(),
                "compacted Parquet files"
            );
        }
        let (files_after, bytes_after) = totals_of(&self.manifest.lock().parquet);
        report.files_after = files_after;
        report.bytes_after = bytes_after;
        report.duration_millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Fault injection after `step`.
    fn reached(&self, step: CompactionStep) -> anyhow::Result<()> {
        match self.config.failpoint {
            Some(CompactionFailpoint::StopAfter(s)) if s == step => {
                bail!("compaction stopped at its failpoint after {step:?}")
            }
            Some(CompactionFailpoint::AbortAfter(s)) if s == step => {
                tracing::error!(?step, "compaction failpoint reached: aborting the process");
                std::process::abort()
            }
            _ => Ok(()),
        }
    }

    /// Merges one run: new file, manifest swap, old files deleted. Returns the new entry and
    /// its size.
    fn merge_run(&self, old: &[ParquetEntry]) -> anyhow::Result<(ParquetEntry, u64)> {
        let (Some(first), Some(last)) = (old.first(), old.last()) else {
            bail!("an empty run");
        };
        let dir = parquet_dir(&self.data_dir);
        let name = file_name(first.first_position, last.last_position);
        let path = dir.join(&name);
        let mut sink = ParquetSink::create(&path)?;
        let events = match self.copy_events(old, &dir, &mut sink) {
            Ok(events) => events,
            Err(e) => {
                sink.abandon();
                return Err(e);
            }
        };
        let temp = sink.finish()?;
        // A stop here leaves the temp file in place, as a crash would.
        self.reached(CompactionStep::TempWritten)?;
        let bytes = temp.publish()?;
        self.reached(CompactionStep::Renamed)?;
        let entry = ParquetEntry {
            file: name,
            first_position: first.first_position,
            last_position: last.last_position,
            events,
            bytes,
        };
        self.swap(old, &entry)?;
        let old_bytes: u64 = old.iter().map(|e| e.bytes).sum();
        self.counters
            .parquet_files
            .fetch_sub(old.len() as u64 - 1, Ordering::Relaxed);
        self.counters
            .parquet_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        self.counters
            .parquet_bytes
            .fetch_sub(old_bytes, Ordering::Relaxed);
        self.counters.publish_gauges();
        self.reached(CompactionStep::ManifestSwapped)?;
        // Scans that may still read the old files finish first (compaction runs on a blocking
        // thread, never on the runtime).
        let _no_readers = self.file_readers.blocking_write();
        for (i, e) in old.iter().enumerate() {
            // Not fatal: a file no longer in the manifest is removed at the next start.
            if let Err(error) = fs::remove_file(dir.join(&e.file)) {
                tracing::warn!(file = %e.file, %error, "cannot delete a compacted Parquet file");
            }
            if i == 0 {
                self.reached(CompactionStep::FirstOldFileDeleted)?;
            }
        }
        sync_dir(&dir).context("cannot sync the Parquet directory")?;
        Ok((entry, bytes))
    }

    /// Streams the run's events, checked against the manifest, into `sink`.
    fn copy_events(
        &self,
        old: &[ParquetEntry],
        dir: &Path,
        sink: &mut ParquetSink,
    ) -> anyhow::Result<u64> {
        let mut interner = Interner::default();
        let mut previous = 0u64;
        let mut total = 0u64;
        for entry in old {
            if self.is_stopping() {
                bail!("the store is shutting down");
            }
            let path = dir.join(&entry.file);
            let mut first_seen = None;
            let count = parquet_file::read(&path, &mut interner, |events| {
                for event in &events {
                    let position = event.position.get();
                    ensure!(
                        position > previous,
                        "position {position} after {previous}: out of order"
                    );
                    previous = position;
                    first_seen.get_or_insert(position);
                }
                sink.push(&events)
            })
            .with_context(|| format!("cannot merge {}", path.display()))?;
            ensure!(
                count == entry.events
                    && first_seen == Some(entry.first_position)
                    && previous == entry.last_position,
                "{} holds {count} events up to position {previous}, the manifest says {} events \
                 in {}..={}",
                path.display(),
                entry.events,
                entry.first_position,
                entry.last_position
            );
            total += count;
        }
        Ok(total)
    }

    /// Replaces the run's entries by `entry` with one atomic manifest write.
    fn swap(&self, old: &[ParquetEntry], entry: &ParquetEntry) -> anyhow::Result<()> {
        let mut manifest = self.manifest.lock();
        let start = manifest
            .parquet
            .iter()
            .position(|e| e.file == old[0].file)
            .ok_or_else(|| anyhow!("{} left the manifest during compaction", old[0].file))?;
        let end = start + old.len();
        ensure!(
            manifest.parquet.get(start..end) == Some(old),
            "the manifest changed under compaction"
        );
        let mut next = manifest.clone();
        next.parquet.splice(start..end, [entry.clone()]);
        // On failure the manifest in memory stays as it was and no old file is deleted: both
        // the old and the new manifest on disk name files that exist.
        next.store(&self.data_dir)
            .context("cannot write the manifest")?;
        *manifest = next;
        // Readers move to the merged file. If it cannot be opened, they keep the old files,
        // whose descriptors stay open (and readable) after the deletion that follows.
        if let Err(e) = self.cold.set_files(&manifest.parquet) {
            tracing::error!(file = %entry.file, error = format!("{e:#}"), "cannot open a merged file for reads; reads keep the files it replaced");
        }
        Ok(())
    }

    fn stats(&self) -> CompactionStats {
        // From the counters, not the manifest: the sealer holds the manifest while it seals a
        // segment, and this is called from async code that must not wait for that.
        let files = self.counters.parquet_files.load(Ordering::Relaxed);
        let bytes = self.counters.parquet_bytes.load(Ordering::Relaxed);
        let totals = self.totals.lock();
        let c = &self.config;
        CompactionStats {
            backend: "embedded".into(),
            applicable: true,
            policy: Some(CompactionPolicy {
                enabled: c.enabled,
                interval_seconds: c.interval.as_secs(),
                min_files: c.min_files as u64,
                target_file_bytes: c.target_file_bytes,
                max_small_file_age_seconds: c.max_small_file_age.map_or(0, |d| d.as_secs()),
            }),
            files,
            bytes,
            runs: totals.runs,
            failures: totals.failures,
            files_merged: totals.files_merged,
            files_written: totals.files_written,
            bytes_written: totals.bytes_written,
            events_rewritten: totals.events_rewritten,
            last_checked_at: totals.last_checked_at,
            last_run: totals.last_run.clone(),
            last_error: totals.last_error.clone(),
        }
    }
}

fn totals_of(entries: &[ParquetEntry]) -> (u64, u64) {
    (entries.len() as u64, entries.iter().map(|e| e.bytes).sum())
}

/// The background policy: a pass every `interval` until `stop` is dropped or signalled.
/// `_lock` keeps the data dir locked as long as the thread runs.
pub(crate) fn run_policy(
    compaction: Arc<Compaction>,
    stop: std::sync::mpsc::Receiver<()>,
    _lock: Arc<super::DataDirLock>,
) {
    let interval = compaction.config().interval;
    loop {
        match stop.recv_timeout(interval) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A pass that panics is logged like one that fails, and the thread goes on:
                // the policy never silently stops.
                let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    compaction.run(Trigger::Policy)
                }));
                match pass {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(
                        error = format!("{e:#}"),
                        "background compaction failed; the old files are kept"
                    ),
                    Err(_) => tracing::error!(
                        "background compaction panicked; the old files are kept, next pass \
                         at the next interval"
                    ),
                }
            }
            _ => return,
        }
    }
}

/// The [`Compactor`] of an [`EmbeddedStore`](super::EmbeddedStore).
#[derive(Clone)]
pub struct EmbeddedCompactor {
    compaction: Arc<Compaction>,
}

impl EmbeddedCompactor {
    pub(crate) fn new(compaction: Arc<Compaction>) -> Self {
        Self { compaction }
    }
}

#[async_trait]
impl Compactor for EmbeddedCompactor {
    async fn trigger(&self) -> Result<CompactionReport, CompactionError> {
        if self.compaction.is_stopping() {
            return Err(CompactionError::Unavailable(
                "the store is shutting down".into(),
            ));
        }
        let compaction = Arc::clone(&self.compaction);
        tokio::task::spawn_blocking(move || compaction.run(Trigger::Api))
            .await
            .map_err(|e| CompactionError::Internal(anyhow!("the compaction task failed: {e}")))?
            .map_err(CompactionError::Internal)
    }

    async fn stats(&self) -> Result<CompactionStats, CompactionError> {
        Ok(self.compaction.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    fn files(sizes: &[u64]) -> Vec<PlanFile> {
        sizes
            .iter()
            .map(|&bytes| PlanFile {
                bytes,
                age: Duration::ZERO,
            })
            .collect()
    }

    fn rules(min_files: usize) -> PlanRules {
        PlanRules {
            min_files,
            target_file_bytes: 10 * MB,
            max_small_file_age: None,
        }
    }

    #[test]
    fn nothing_to_plan_without_files_or_with_one() {
        assert!(plan(&[], &rules(2)).is_empty());
        assert!(plan(&files(&[MB]), &rules(2)).is_empty());
    }

    #[test]
    fn adjacent_small_files_form_one_run() {
        assert_eq!(plan(&files(&[MB, MB, MB]), &rules(2)), vec![0..3]);
    }

    #[test]
    fn runs_below_min_files_wait() {
        assert!(plan(&files(&[MB, MB, MB]), &rules(4)).is_empty());
        assert_eq!(plan(&files(&[MB, MB, MB, MB]), &rules(4)), vec![0..4]);
    }

    #[test]
    fn large_files_cut_runs_and_are_never_merged() {
        let sizes = [MB, MB, 10 * MB, MB, 20 * MB, MB, MB, MB];
        assert_eq!(plan(&files(&sizes), &rules(2)), vec![0..2, 5..8]);
    }

    #[test]
    fn runs_stay_within_the_target() {
        // 4 + 4 fits; the third 4 would overflow 10 and starts the next run.
        let sizes = [4 * MB, 4 * MB, 4 * MB, 4 * MB, 4 * MB];
        assert_eq!(plan(&files(&sizes), &rules(2)), vec![0..2, 2..4]);
        // Exactly the target is allowed.
        assert_eq!(plan(&files(&[5 * MB, 5 * MB]), &rules(2)), vec![0..2]);
    }

    #[test]
    fn min_files_below_two_counts_as_two() {
        assert!(plan(&files(&[MB]), &rules(0)).is_empty());
        assert_eq!(plan(&files(&[MB, MB]), &rules(1)), vec![0..2]);
    }

    #[test]
    fn old_small_files_are_merged_before_min_files() {
        let mut sizes = files(&[MB, MB, MB]);
        let aged = PlanRules {
            max_small_file_age: Some(Duration::from_secs(60)),
            ..rules(8)
        };
        assert!(plan(&sizes, &aged).is_empty(), "all young");
        sizes[1].age = Duration::from_secs(61);
        assert_eq!(plan(&sizes, &aged), vec![0..3]);
        // A lone old file has nothing to merge with.
        let lone = [PlanFile {
            bytes: MB,
            age: Duration::from_secs(600),
        }];
        assert!(plan(&lone, &aged).is_empty());
    }

    #[test]
    fn failpoints_parse_from_the_environment_value() {
        assert_eq!(
            CompactionFailpoint::parse("compaction_after_write"),
            Ok(CompactionFailpoint::AbortAfter(CompactionStep::Renamed))
        );
        assert_eq!(
            CompactionFailpoint::parse("compaction_after_manifest"),
            Ok(CompactionFailpoint::AbortAfter(
                CompactionStep::ManifestSwapped
            ))
        );
        let err = CompactionFailpoint::parse("compaction_after_lunch").unwrap_err();
        assert!(err.contains("ALLSOURCE_FAILPOINT") && err.contains("compaction_after_temp"));
    }

    #[test]
    fn file_names_sort_by_position() {
        assert_eq!(
            file_name(1, 42),
            "events-00000000000000000001-00000000000000000042.parquet"
        );
    }
}

//! The `Compactor` port: merging a backend's small storage files into larger ones, on demand and
//! by a background policy, and reporting what it did.
//!
//! Only the embedded backend has files to compact (its Parquet files). Backends without files
//! (memory, postgres) answer through [`NoCompaction`]: a trigger is not an error there, it is a
//! report with `compacted: false` and a `reason` naming the backend, so an operator script can
//! call the route on any node.
//!
//! # Contract
//! - Compaction never changes what is read back: the same events, with the same ids, versions,
//!   positions, timestamps, payloads and metadata, in the same order.
//! - A crash at any step of a compaction loses and duplicates nothing.
//! - Compaction never blocks appends or reads.
//! - Runs are serialized: a trigger while a run is in progress waits for it, then runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// What one compaction pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// The storage backend (`embedded`, `memory`, `postgres`).
    pub backend: String,
    /// Whether any files were merged.
    pub compacted: bool,
    /// Why nothing was merged (nothing to merge, or a backend without files); `None` when
    /// `compacted`.
    pub reason: Option<String>,
    /// What started the pass: `api` or `policy`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub duration_millis: u64,
    /// Data files (and their bytes) before and after the pass.
    pub files_before: u64,
    pub bytes_before: u64,
    pub files_after: u64,
    pub bytes_after: u64,
    /// Files merged into new ones (and removed).
    pub files_merged: u64,
    /// New files written.
    pub files_written: u64,
    pub bytes_written: u64,
    /// Events copied into the new files.
    pub events_rewritten: u64,
}

impl CompactionReport {
    /// A pass that merged nothing, for `reason`.
    pub fn nothing(
        backend: impl Into<String>,
        trigger: impl Into<String>,
        reason: impl Into<String>,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            backend: backend.into(),
            compacted: false,
            reason: Some(reason.into()),
            trigger: trigger.into(),
            started_at,
            duration_millis: 0,
            files_before: 0,
            bytes_before: 0,
            files_after: 0,
            bytes_after: 0,
            files_merged: 0,
            files_written: 0,
            bytes_written: 0,
            events_rewritten: 0,
        }
    }
}

/// The background policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Whether the background policy runs (the trigger works either way).
    pub enabled: bool,
    pub interval_seconds: u64,
    /// A run of adjacent small files is merged once it has this many files...
    pub min_files: u64,
    /// ...small meaning below this size; merged files do not exceed it...
    pub target_file_bytes: u64,
    /// ...or once its oldest file is this old (0: no age rule).
    pub max_small_file_age_seconds: u64,
}

/// Figures about compaction since the process started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionStats {
    pub backend: String,
    /// False for backends without files to compact; the other figures are then zero.
    pub applicable: bool,
    pub policy: Option<CompactionPolicy>,
    /// Data files now, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Passes that merged files.
    pub runs: u64,
    /// Passes that failed (the last error is in `last_error`).
    pub failures: u64,
    pub files_merged: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    pub events_rewritten: u64,
    /// When the last pass (merging or not) finished.
    pub last_checked_at: Option<DateTime<Utc>>,
    /// The last pass that merged files.
    pub last_run: Option<CompactionReport>,
    pub last_error: Option<String>,
}

impl CompactionStats {
    /// The figures of a backend without files to compact.
    pub fn not_applicable(backend: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            applicable: false,
            policy: None,
            files: 0,
            bytes: 0,
            runs: 0,
            failures: 0,
            files_merged: 0,
            files_written: 0,
            bytes_written: 0,
            events_rewritten: 0,
            last_checked_at: None,
            last_run: None,
            last_error: None,
        }
    }
}

/// Why a compaction call failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// The store cannot compact now (still recovering, shutting down, or failed); retry later.
    /// HTTP 503.
    #[error("compaction unavailable: {0}")]
    Unavailable(String),
    /// An I/O or format failure. Nothing was lost: the old files stay until the new one is in
    /// the manifest. HTTP 500 (the cause is logged, not sent).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Merges small storage files.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Compactor: Send + Sync {
    /// Compacts now: merges every run of two or more adjacent small files (the policy's
    /// `min_files` and age rule do not apply to a trigger; its size target does). Answers a
    /// report with `compacted: false` and a `reason` when there is nothing to merge or the
    /// backend has no files.
    ///
    /// # Errors
    /// [`CompactionError::Unavailable`] while the store recovers, shuts down or has failed;
    /// [`CompactionError::Internal`] for I/O and format failures (nothing is lost).
    async fn trigger(&self) -> Result<CompactionReport, CompactionError>;

    /// Figures since the process started, and the current file count and bytes.
    ///
    /// # Errors
    /// [`CompactionError::Unavailable`] while the store recovers.
    async fn stats(&self) -> Result<CompactionStats, CompactionError>;
}

/// The compactor of backends without files to compact (memory, postgres).
#[derive(Debug, Clone)]
pub struct NoCompaction {
    backend: String,
}

impl NoCompaction {
    pub fn new(backend: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
        }
    }
}

#[async_trait]
impl Compactor for NoCompaction {
    async fn trigger(&self) -> Result<CompactionReport, CompactionError> {
        Ok(CompactionReport::nothing(
            self.backend.clone(),
            "api",
            format!(
                "storage.backend = {} keeps no data files; compaction applies to the embedded \
                 backend only",
                self.backend
            ),
            Utc::now(),
        ))
    }

    async fn stats(&self) -> Result<CompactionStats, CompactionError> {
        Ok(CompactionStats::not_applicable(self.backend.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backends_without_files_answer_not_applicable() {
        let none = NoCompaction::new("postgres");
        let report = none.trigger().await.unwrap();
        assert!(!report.compacted);
        assert_eq!(report.backend, "postgres");
        assert!(report.reason.unwrap().contains("postgres"));
        let stats = none.stats().await.unwrap();
        assert!(!stats.applicable);
        assert_eq!(stats.backend, "postgres");
    }
}

//! The ports of backup and restore: [`BackupSource`] (what a store offers for a cut),
//! [`BackupTarget`] (where backups are written: a directory, an S3-compatible bucket) and
//! [`RestoreSink`] (what writes a restored data dir).
//!
//! A cut is taken at one position: every event at or below it, across every tenant, and a copy
//! of the state store taken *before* the position was read, so the state never reflects an
//! event the cut lacks (derived state behind its events catches up; ahead of them it would
//! skip the positions later appends reuse).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a piece of a cut holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PieceKind {
    /// Events (a Parquet file of the embedded engine), a run of positions.
    Events,
    /// The whole state store, as the backend keeps it.
    State,
}

/// One piece of a cut: its name and what it covers (nothing for the state store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub kind: PieceKind,
    /// A file name, unique within the cut (no `/`).
    pub name: String,
    /// First and last position held (0 and 0 for the state store).
    pub first_position: u64,
    pub last_position: u64,
    /// Events held.
    pub events: u64,
    /// Timestamps of the first and last event held.
    pub first_timestamp: Option<DateTime<Utc>>,
    pub last_timestamp: Option<DateTime<Utc>>,
}

/// Failures of the backup ports. Adapters map their driver's errors here.
#[derive(Debug, thiserror::Error)]
pub enum BackupIoError {
    /// The backend cannot be backed up this way (409).
    #[error("{0}")]
    Unsupported(String),
    /// The storage cannot be reached now (503).
    #[error("{0}")]
    Unavailable(String),
    /// Bytes that do not read back as what they claim to be (a damaged backup).
    #[error("{0}")]
    Corrupt(String),
    /// Anything else (500), logged, never sent to a client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// One cut of a store. The pieces it names stay readable while it lives (the embedded engine
/// keeps compaction from deleting the files), and nothing it reads changes after the cut.
#[async_trait]
pub trait StoreCut: Send + Sync {
    /// The position of the cut: every event at or below it (after the `after` asked for) is
    /// in the pieces, none above it.
    fn to_position(&self) -> u64;
    /// The timestamp of the event at [`to_position`](Self::to_position), if any.
    fn to_timestamp(&self) -> Option<DateTime<Utc>>;
    /// The pieces, events in position order, then the state store.
    fn pieces(&self) -> Vec<Piece>;
    /// The bytes of the piece at `index` of [`pieces`](Self::pieces).
    ///
    /// # Errors
    /// `Unavailable` or `Internal` when the piece cannot be read.
    async fn read(&self, index: usize) -> Result<Vec<u8>, BackupIoError>;
}

/// A store that can be backed up while it serves.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BackupSource: Send + Sync {
    /// Takes a cut of the events after `after` (0: all of them) up to the head, with the state
    /// store.
    ///
    /// # Errors
    /// `Unsupported` for a backend that has no backup of its own (memory, postgres);
    /// `Unavailable` while the store is recovering.
    async fn cut(&self, after: u64) -> Result<Box<dyn StoreCut>, BackupIoError>;
    /// The position of the newest event (to check an incremental's base).
    ///
    /// # Errors
    /// As [`cut`](Self::cut).
    async fn head(&self) -> Result<u64, BackupIoError>;
}

/// Where backups are kept: objects named by `/`-separated paths (`<backup id>/<file>`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait BackupTarget: Send + Sync {
    /// Where, for messages (`/srv/backups`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
    /// Writes an object whole (replacing one of the same path), durably.
    ///
    /// # Errors
    /// `Unavailable` when the target cannot be written.
    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), BackupIoError>;
    /// Reads an object whole; `None` if there is none.
    ///
    /// # Errors
    /// `Unavailable` when the target cannot be read.
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, BackupIoError>;
    /// The names of the top-level directories (backup ids), any order.
    ///
    /// # Errors
    /// `Unavailable` when the target cannot be listed.
    async fn list_dirs(&self) -> Result<Vec<String>, BackupIoError>;
}

/// Where a restore stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePoint {
    /// Everything the backup holds.
    Latest,
    /// Events at or below this position.
    Position(u64),
    /// Events whose timestamp is at or before this time (a prefix: timestamps never decrease
    /// along positions).
    Time(DateTime<Utc>),
}

impl RestorePoint {
    /// Whether an event at `position` with `timestamp` is restored.
    pub fn includes(&self, position: u64, timestamp: DateTime<Utc>) -> bool {
        match self {
            Self::Latest => true,
            Self::Position(p) => position <= *p,
            Self::Time(t) => timestamp <= *t,
        }
    }
}

/// Writes a restored data dir, piece by piece, in position order.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RestoreSink: Send {
    /// Writes the events of an events piece that `point` includes; returns how many were
    /// written and the position and timestamp of the last one (`None` if none).
    ///
    /// # Errors
    /// `Corrupt` for bytes that are not a readable piece; `Internal` for I/O failures.
    async fn events(
        &mut self,
        piece: &Piece,
        bytes: Vec<u8>,
        point: RestorePoint,
    ) -> Result<Option<(u64, u64, DateTime<Utc>)>, BackupIoError>;
    /// Writes the state store.
    ///
    /// # Errors
    /// As [`events`](Self::events).
    async fn state(&mut self, bytes: Vec<u8>) -> Result<(), BackupIoError>;
    /// Makes what was written a data dir the server opens (the manifest last).
    ///
    /// # Errors
    /// As [`events`](Self::events).
    async fn finish(&mut self) -> Result<(), BackupIoError>;
}

/// Progress of long work, for progress bars (the CLI) or nothing (the server's jobs).
pub trait Progress: Send + Sync {
    /// Work of `total` bytes begins.
    fn begin(&self, what: &str, total: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _what: &str, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
}

//! Adapters of the backup ports: [`EmbeddedBackupSource`] (a cut of the embedded engine),
//! [`StartingBackupSource`] (answers until recovery hands the store over, or refuses backends
//! without backups), [`DirectoryTarget`] (backups in a local directory), [`s3::ObjectStoreTarget`]
//! (an S3-compatible bucket through `object_store`), and [`EmbeddedRestore`] (writes a data
//! dir the server opens).
//!
//! # A cut of the embedded engine
//! 1. The state store's log is copied (`state.log`, under its writers' lock: whole records).
//! 2. The sealed Parquet files of the manifest are taken with the compaction read guard, so
//!    compaction deletes none of them while the cut lives (it waits to delete its merged files).
//! 3. The position of the cut is the head of the in-memory index, read after both.
//!
//! Sealed files wholly after the base of the backup and at or below the cut are copied as they
//! are; every other event of the range (the part of a file before the base, and the tail still
//! in the WAL) is read from the in-memory index, which holds exactly the durable events, and
//! written as Parquet files of at most [`TAIL_PIECE_EVENTS`] events. A restore therefore needs
//! no WAL: its data dir is Parquet files, their manifest and the state log.
//!
//! # Layout
//! - `mod.rs`: the source, the directory target, the restore sink.
//! - [`s3`]: the object-store target.

pub mod s3;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use allsource_application::ports::{
    BackupIoError, BackupSource, BackupTarget, Piece, PieceKind, RestorePoint, RestoreSink,
    StoreCut,
};
use allsource_domain::Event;
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::embedded::compaction::Compaction;
use crate::embedded::intern::Interner;
use crate::embedded::manifest::{Manifest, ParquetEntry};
use crate::embedded::{parquet_file, sync_dir};
use crate::index::{EventIndex, Io};
use crate::state::FileStateStore;

/// Most events of one Parquet piece written from the index.
pub const TAIL_PIECE_EVENTS: u64 = 100_000;

fn internal(e: impl Into<anyhow::Error>) -> BackupIoError {
    BackupIoError::Internal(e.into())
}

/// What the embedded engine offers for a cut.
pub struct EmbeddedBackupSource {
    index: Arc<EventIndex>,
    compaction: Arc<Compaction>,
    state: Arc<FileStateStore>,
}

impl EmbeddedBackupSource {
    pub(crate) fn new(
        index: Arc<EventIndex>,
        compaction: Arc<Compaction>,
        state: Arc<FileStateStore>,
    ) -> Self {
        Self {
            index,
            compaction,
            state,
        }
    }
}

enum Origin {
    File(PathBuf),
    Index(u64, u64),
    State,
}

struct EmbeddedCut {
    pieces: Vec<(Piece, Origin)>,
    to_position: u64,
    to_timestamp: Option<DateTime<Utc>>,
    index: Arc<EventIndex>,
    state: Vec<u8>,
    /// Keeps compaction from deleting the copied files.
    _guard: tokio::sync::OwnedRwLockReadGuard<()>,
}

fn timestamp_at(index: &EventIndex, position: u64) -> Option<DateTime<Utc>> {
    index
        // The tail, in memory; a block read if it was sealed since the cut (rare, small).
        .range_all(position.saturating_sub(1), position, Io::Allowed)
        .ok()?
        .first()
        .map(|e| e.timestamp)
}

fn events_piece(index: &EventIndex, first: u64, last: u64) -> Piece {
    Piece {
        kind: PieceKind::Events,
        name: crate::embedded::compaction::file_name(first, last),
        first_position: first,
        last_position: last,
        events: last - first + 1,
        first_timestamp: timestamp_at(index, first),
        last_timestamp: timestamp_at(index, last),
    }
}

fn index_pieces(index: &EventIndex, first: u64, last: u64, out: &mut Vec<(Piece, Origin)>) {
    let mut a = first;
    while a <= last {
        let b = last.min(a + TAIL_PIECE_EVENTS - 1);
        out.push((events_piece(index, a, b), Origin::Index(a, b)));
        a = b + 1;
    }
}

#[async_trait]
impl BackupSource for EmbeddedBackupSource {
    async fn cut(&self, after: u64) -> Result<Box<dyn StoreCut>, BackupIoError> {
        let state = Arc::clone(&self.state);
        // State first: it then reflects no event above the cut (see the port's docs).
        let state = tokio::task::spawn_blocking(move || state.backup_copy())
            .await
            .map_err(internal)?
            .map_err(|e| BackupIoError::Unavailable(format!("cannot copy the state log: {e:#}")))?;
        let (files, dir, guard) = self.compaction.backup_cut().await;
        let head = self.index.last_position();
        let mut pieces = Vec::new();
        let mut next = after + 1;
        for entry in &files {
            if entry.last_position < next || entry.first_position > head {
                continue;
            }
            if entry.first_position > next {
                index_pieces(&self.index, next, entry.first_position - 1, &mut pieces);
                next = entry.first_position;
            }
            if entry.first_position < next || entry.last_position > head {
                index_pieces(
                    &self.index,
                    next,
                    entry.last_position.min(head),
                    &mut pieces,
                );
            } else {
                pieces.push((
                    events_piece(&self.index, entry.first_position, entry.last_position),
                    Origin::File(dir.join(&entry.file)),
                ));
            }
            next = entry.last_position.min(head) + 1;
        }
        if next <= head {
            index_pieces(&self.index, next, head, &mut pieces);
        }
        pieces.push((
            Piece {
                kind: PieceKind::State,
                name: FileStateStore::LOG_FILE.into(),
                first_position: 0,
                last_position: 0,
                events: 0,
                first_timestamp: None,
                last_timestamp: None,
            },
            Origin::State,
        ));
        Ok(Box::new(EmbeddedCut {
            pieces,
            to_position: head.max(after),
            to_timestamp: (head > 0)
                .then(|| timestamp_at(&self.index, head))
                .flatten(),
            index: Arc::clone(&self.index),
            state,
            _guard: guard,
        }))
    }

    async fn head(&self) -> Result<u64, BackupIoError> {
        Ok(self.index.last_position())
    }
}

#[async_trait]
impl StoreCut for EmbeddedCut {
    fn to_position(&self) -> u64 {
        self.to_position
    }

    fn to_timestamp(&self) -> Option<DateTime<Utc>> {
        self.to_timestamp
    }

    fn pieces(&self) -> Vec<Piece> {
        self.pieces.iter().map(|(p, _)| p.clone()).collect()
    }

    async fn read(&self, i: usize) -> Result<Vec<u8>, BackupIoError> {
        let Some((_, from)) = self.pieces.get(i) else {
            return Err(internal(anyhow!("no piece {i}")));
        };
        match from {
            Origin::File(path) => tokio::fs::read(path).await.map_err(|e| {
                BackupIoError::Unavailable(format!("cannot read {}: {e}", path.display()))
            }),
            Origin::Index(a, b) => {
                let (a, b, index) = (*a, *b, Arc::clone(&self.index));
                tokio::task::spawn_blocking(move || {
                    let events = index.range_all(a - 1, b, Io::Allowed).map_err(internal)?;
                    if events.len() as u64 != b - a + 1 {
                        return Err(internal(anyhow!(
                            "positions {a}..={b}: {} events in the index",
                            events.len()
                        )));
                    }
                    parquet_file::encode(&events).map_err(internal)
                })
                .await
                .map_err(internal)?
            }
            Origin::State => Ok(self.state.clone()),
        }
    }
}

/// The backup source of the server: refuses backends without backups, answers `Unavailable`
/// until recovery hands the embedded store's over.
pub struct StartingBackupSource {
    unsupported: Option<String>,
    ready: OnceLock<Arc<dyn BackupSource>>,
}

impl StartingBackupSource {
    /// For the embedded backend: waits for [`set`](Self::set).
    pub fn new() -> Self {
        Self {
            unsupported: None,
            ready: OnceLock::new(),
        }
    }

    /// For a backend without backups of its own: every request is refused with `why`.
    pub fn unsupported(why: impl Into<String>) -> Self {
        Self {
            unsupported: Some(why.into()),
            ready: OnceLock::new(),
        }
    }

    /// Hands over to the recovered store. A second call is ignored.
    pub fn set(&self, source: Arc<dyn BackupSource>) {
        let _ = self.ready.set(source);
    }

    fn get(&self) -> Result<&Arc<dyn BackupSource>, BackupIoError> {
        if let Some(why) = &self.unsupported {
            return Err(BackupIoError::Unsupported(why.clone()));
        }
        self.ready
            .get()
            .ok_or_else(|| BackupIoError::Unavailable("the store is still recovering".into()))
    }
}

impl Default for StartingBackupSource {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl BackupSource for StartingBackupSource {
    async fn cut(&self, after: u64) -> Result<Box<dyn StoreCut>, BackupIoError> {
        self.get()?.cut(after).await
    }

    async fn head(&self) -> Result<u64, BackupIoError> {
        self.get()?.head().await
    }
}

/// Checks an object path: `/`-separated names, none empty, `.` or `..`.
fn object_path(path: &str) -> Result<&str, BackupIoError> {
    if path
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        && !path.contains('\\')
    {
        Ok(path)
    } else {
        Err(internal(anyhow!("not an object path: {path:?}")))
    }
}

/// Backups in a local directory: `<dir>/<backup id>/<file>`.
pub struct DirectoryTarget {
    root: PathBuf,
}

impl DirectoryTarget {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

#[async_trait]
impl BackupTarget for DirectoryTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), BackupIoError> {
        let path = self.root.join(object_path(path)?);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let dir = path.parent().context("an object path has a directory")?;
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let tmp = path.with_extension("tmp");
            {
                let mut f = fs::File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            sync_dir(dir)?;
            Ok(())
        })
        .await
        .map_err(internal)?
        .map_err(|e| BackupIoError::Unavailable(format!("{e:#}")))
    }

    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, BackupIoError> {
        let path = self.root.join(object_path(path)?);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackupIoError::Unavailable(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    async fn list_dirs(&self) -> Result<Vec<String>, BackupIoError> {
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.root).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(BackupIoError::Unavailable(format!(
                    "cannot list {}: {e}",
                    self.root.display()
                )));
            }
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| BackupIoError::Unavailable(e.to_string()))?
        {
            if entry.file_type().await.is_ok_and(|t| t.is_dir())
                && let Some(name) = entry.file_name().to_str()
            {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }
}

/// Writes a restored data dir: Parquet files under `parquet/`, the state log under `state/`,
/// and the manifest last (a data dir without it holds no events the server would load).
pub struct EmbeddedRestore {
    data_dir: PathBuf,
    manifest: Manifest,
    next: u64,
}

impl EmbeddedRestore {
    /// Prepares `data_dir`, which must not exist or be empty.
    ///
    /// # Errors
    /// A data dir that holds anything (nothing is changed), or I/O failures.
    pub fn create(data_dir: &Path) -> anyhow::Result<Self> {
        if data_dir.exists() {
            let mut entries = fs::read_dir(data_dir)
                .with_context(|| format!("cannot read {}", data_dir.display()))?;
            if entries.next().is_some() {
                anyhow::bail!(
                    "the data dir {} is not empty: a restore writes only into an empty or new \
                     directory (nothing was changed)",
                    data_dir.display()
                );
            }
        }
        for dir in ["parquet", "wal", "state"] {
            fs::create_dir_all(data_dir.join(dir))
                .with_context(|| format!("cannot create {}", data_dir.join(dir).display()))?;
        }
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            manifest: Manifest {
                format: 1,
                parquet: Vec::new(),
            },
            next: 1,
        })
    }

    fn write_events(
        &mut self,
        piece: &Piece,
        bytes: Vec<u8>,
        point: RestorePoint,
    ) -> anyhow::Result<Option<(u64, u64, DateTime<Utc>)>> {
        let corrupt = |why: String| anyhow!(BackupCorrupt(format!("{}: {why}", piece.name)));
        if piece.first_position != self.next {
            return Err(corrupt(format!(
                "starts at position {}, the restore is at {}",
                piece.first_position, self.next
            )));
        }
        let parquet = self.data_dir.join("parquet");
        let whole = match point {
            RestorePoint::Latest => true,
            RestorePoint::Position(p) => piece.last_position <= p,
            RestorePoint::Time(t) => piece.last_timestamp.is_some_and(|ts| ts <= t),
        };
        let tmp = parquet.join("restore.parquet.tmp");
        fs::write(&tmp, &bytes)?;
        let mut kept: Vec<Arc<Event>> = Vec::new();
        let mut count = 0u64;
        parquet_file::read(&tmp, &mut Interner::default(), |events| {
            for e in events {
                count += 1;
                if whole || point.includes(e.position.get(), e.timestamp) {
                    kept.push(e);
                }
            }
            Ok(())
        })
        .map_err(|e| corrupt(format!("not a readable events file: {e:#}")))?;
        if count != piece.events {
            return Err(corrupt(format!(
                "holds {count} events, the manifest says {}",
                piece.events
            )));
        }
        let (Some(first), Some(last)) = (kept.first().cloned(), kept.last().cloned()) else {
            fs::remove_file(&tmp)?;
            return Ok(None);
        };
        if first.position.get() != self.next
            || last.position.get() - first.position.get() + 1 != kept.len() as u64
        {
            return Err(corrupt("its positions are not contiguous".into()));
        }
        let name =
            crate::embedded::compaction::file_name(first.position.get(), last.position.get());
        let path = parquet.join(&name);
        let bytes = if whole {
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&parquet)?;
            bytes.len() as u64
        } else {
            fs::remove_file(&tmp)?;
            parquet_file::write(&path, &kept)?
        };
        self.manifest.parquet.push(ParquetEntry {
            file: name,
            first_position: first.position.get(),
            last_position: last.position.get(),
            events: kept.len() as u64,
            bytes,
        });
        self.next = last.position.get() + 1;
        Ok(Some((
            kept.len() as u64,
            last.position.get(),
            last.timestamp,
        )))
    }
}

/// Marks a restore failure caused by the backup's bytes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BackupCorrupt(String);

fn restore_error(e: anyhow::Error) -> BackupIoError {
    match e.downcast::<BackupCorrupt>() {
        Ok(corrupt) => BackupIoError::Corrupt(corrupt.0),
        Err(e) => BackupIoError::Internal(e),
    }
}

#[async_trait]
impl RestoreSink for EmbeddedRestore {
    async fn events(
        &mut self,
        piece: &Piece,
        bytes: Vec<u8>,
        point: RestorePoint,
    ) -> Result<Option<(u64, u64, DateTime<Utc>)>, BackupIoError> {
        // Offline work (the CLI's restore): plain blocking I/O.
        self.write_events(piece, bytes, point)
            .map_err(restore_error)
    }

    async fn state(&mut self, bytes: Vec<u8>) -> Result<(), BackupIoError> {
        let dir = self.data_dir.join("state");
        let path = dir.join(FileStateStore::LOG_FILE);
        let write = || -> anyhow::Result<()> {
            let mut f = fs::File::create(&path)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            sync_dir(&dir)?;
            Ok(())
        };
        write().map_err(internal)
    }

    async fn finish(&mut self) -> Result<(), BackupIoError> {
        self.manifest.store(&self.data_dir).map_err(internal)
    }
}

#[cfg(test)]
mod tests;

//! Sealed events, read from their Parquet files: the embedded store's [`ColdEvents`].
//!
//! # Layout on disk
//! A file holds a dense run of positions (`first..=last`, one row each, in order), so the row
//! of a position is `position - first`: no per-event location is kept in memory. Files are
//! written with data pages of [`BLOCK_ROWS`] rows and the page index, so reading a *block*
//! (rows `k * BLOCK_ROWS ..`) decodes one page of each column, not a row group.
//!
//! # Memory
//! Each open file keeps its descriptor and its footer with the offset index (a few bytes per
//! page). Decoded blocks live in one byte-weighted cache (moka), `storage.cache_bytes` in all:
//! the hot part of the store stays in memory, the rest is read again when asked for.
//!
//! # Files changing under readers
//! The sealer and compaction replace the file set with [`ColdFiles::set_files`] after each
//! manifest write. A reader works on the set it took: an `Arc` keeps a file's descriptor open,
//! so a file compaction deletes meanwhile is still readable through it. Blocks are cached by
//! file id, and a merged file gets a new id: a block never mixes two files.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use allsource_domain::Event;
use anyhow::{Context, anyhow, bail};
use arrow::array::{Array, UInt64Array};
use bytes::Bytes;
use moka::sync::Cache;
use parking_lot::RwLock;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::reader::{ChunkReader, Length};

use super::intern::Interner;
use super::manifest::ParquetEntry;
use super::parquet_file::{self, BLOCK_ROWS};
use crate::index::{ColdEvents, Io, ReadError};

/// Bytes a cached event costs beyond its payload, metadata and names (the `Arc<Event>`, the
/// block's slot, the cache entry's share).
const EVENT_OVERHEAD_BYTES: usize = 16 + std::mem::size_of::<Event>() + 8;

/// One Parquet file, open.
struct ColdFile {
    id: u64,
    name: String,
    first: u64,
    last: u64,
    rows: u64,
    reader: PreadFile,
    metadata: ArrowReaderMetadata,
    /// First row of each row group.
    row_group_starts: Vec<u64>,
    /// Every row's position when the positions are not dense (older files could be; this
    /// version never writes such a file).
    sparse: Option<Vec<u64>>,
}

impl ColdFile {
    fn open(dir: &Path, entry: &ParquetEntry, id: u64) -> anyhow::Result<Self> {
        let path = dir.join(&entry.file);
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let reader = PreadFile::new(file)?;
        let options = ArrowReaderOptions::new()
            .with_offset_index_policy(PageIndexPolicy::Optional)
            .with_column_index_policy(PageIndexPolicy::Skip);
        let metadata = ArrowReaderMetadata::load(&reader, options)
            .with_context(|| format!("cannot read the footer of {}", path.display()))?;
        let mut row_group_starts = Vec::new();
        let mut rows = 0u64;
        for rg in metadata.metadata().row_groups() {
            row_group_starts.push(rows);
            rows += u64::try_from(rg.num_rows()).unwrap_or(0);
        }
        if rows != entry.events {
            bail!(
                "{} holds {rows} events, the manifest says {}",
                path.display(),
                entry.events
            );
        }
        let mut file = Self {
            id,
            name: entry.file.clone(),
            first: entry.first_position,
            last: entry.last_position,
            rows,
            reader,
            metadata,
            row_group_starts,
            sparse: None,
        };
        if entry.last_position.checked_sub(entry.first_position) != rows.checked_sub(1) {
            file.sparse = Some(file.read_positions()?);
        }
        Ok(file)
    }

    /// The position column, whole.
    fn read_positions(&self) -> anyhow::Result<Vec<u64>> {
        let mask = ProjectionMask::roots(self.metadata.parquet_schema(), [5]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.reader.clone(),
            self.metadata.clone(),
        )
        .with_projection(mask)
        .build()?;
        let mut positions = Vec::new();
        for batch in reader {
            let batch = batch?;
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .ok_or_else(|| anyhow!("{}: the position column has the wrong type", self.name))?;
            positions.extend(column.values().iter().copied());
        }
        Ok(positions)
    }

    /// The row holding `position`.
    fn row_of(&self, position: u64) -> Option<u64> {
        match &self.sparse {
            None => Some(position - self.first),
            Some(positions) => positions.binary_search(&position).ok().map(|i| i as u64),
        }
    }

    /// Decodes the block starting at row `first_row`.
    fn read_block(&self, first_row: u64) -> anyhow::Result<Vec<Arc<Event>>> {
        let end_row = (first_row + BLOCK_ROWS as u64).min(self.rows);
        // The row groups the block overlaps; the selection counts rows from the first one.
        let group_of = |row: u64| {
            self.row_group_starts
                .partition_point(|&s| s <= row)
                .checked_sub(1)
                .ok_or_else(|| anyhow!("{}: no row group holds row {row}", self.name))
        };
        let first_group = group_of(first_row)?;
        let last_group = group_of(end_row.saturating_sub(1).max(first_row))?;
        let skip = usize::try_from(first_row - self.row_group_starts[first_group])?;
        let take = usize::try_from(end_row - first_row)?;
        let selection =
            RowSelection::from(vec![RowSelector::skip(skip), RowSelector::select(take)]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.reader.clone(),
            self.metadata.clone(),
        )
        .with_row_groups((first_group..=last_group).collect())
        .with_row_selection(selection)
        .with_batch_size(BLOCK_ROWS)
        .build()?;
        let mut interner = Interner::default();
        let mut events = Vec::with_capacity(take);
        for batch in reader {
            events.extend(parquet_file::events_of(&batch?, &mut interner)?);
        }
        if events.len() != take {
            bail!(
                "{}: rows {first_row}..{end_row} decoded as {} events",
                self.name,
                events.len()
            );
        }
        Ok(events)
    }
}

/// A file read with `pread`: readers share the descriptor without sharing a file offset
/// (`File`'s own `ChunkReader` seeks a shared offset, which concurrent readers would race on).
#[derive(Clone)]
struct PreadFile {
    file: Arc<File>,
    len: u64,
}

impl PreadFile {
    fn new(file: File) -> anyhow::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            len,
        })
    }
}

impl Length for PreadFile {
    fn len(&self) -> u64 {
        self.len
    }
}

/// A reader from some offset to the end of a [`PreadFile`].
struct PreadReader {
    file: Arc<File>,
    offset: u64,
}

impl Read for PreadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl ChunkReader for PreadFile {
    type T = PreadReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(PreadReader {
            file: Arc::clone(&self.file),
            offset: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buf = vec![0; length];
        self.file.read_exact_at(&mut buf, start)?;
        Ok(Bytes::from(buf))
    }
}

/// A decoded block: consecutive rows of one file.
struct Block {
    first_row: u64,
    events: Vec<Arc<Event>>,
}

impl Block {
    fn weight(&self) -> u32 {
        let bytes: usize = self
            .events
            .iter()
            .map(|e| {
                EVENT_OVERHEAD_BYTES
                    + e.body_bytes()
                    + e.entity_id.as_str().len()
                    + e.event_type.as_str().len()
            })
            .sum();
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    fn get(&self, row: u64) -> Option<&Arc<Event>> {
        self.events
            .get(usize::try_from(row.checked_sub(self.first_row)?).ok()?)
    }
}

type BlockKey = (u64, u64);

/// The store's Parquet files, open, with a cache of decoded blocks.
pub struct ColdFiles {
    dir: PathBuf,
    files: RwLock<Arc<Vec<Arc<ColdFile>>>>,
    cache: Cache<BlockKey, Arc<Block>>,
    cache_bytes: u64,
    next_id: AtomicU64,
    block_reads: AtomicU64,
}

/// Figures for `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdStats {
    pub cache_capacity_bytes: u64,
    pub cache_bytes: u64,
    pub cache_blocks: u64,
    pub block_reads: u64,
}

impl ColdFiles {
    /// No files yet; blocks are cached up to `cache_bytes` (0 caches nothing).
    pub fn new(parquet_dir: PathBuf, cache_bytes: u64) -> Self {
        Self {
            dir: parquet_dir,
            files: RwLock::new(Arc::new(Vec::new())),
            cache: Cache::builder()
                .max_capacity(cache_bytes)
                .weigher(|_: &BlockKey, block: &Arc<Block>| block.weight())
                .build(),
            cache_bytes,
            next_id: AtomicU64::new(1),
            block_reads: AtomicU64::new(0),
        }
    }

    /// Makes `entries` (the manifest's list, in position order) the file set: files already
    /// open stay open, new ones are opened, the others are let go (readers holding them
    /// finish with them).
    ///
    /// # Errors
    /// A file that cannot be opened or whose footer does not match its entry; the file set is
    /// unchanged then.
    pub fn set_files(&self, entries: &[ParquetEntry]) -> anyhow::Result<()> {
        let current = Arc::clone(&self.files.read());
        let mut next = Vec::with_capacity(entries.len());
        for entry in entries {
            let open = current.iter().find(|f| {
                f.name == entry.file
                    && f.first == entry.first_position
                    && f.last == entry.last_position
            });
            next.push(match open {
                Some(f) => Arc::clone(f),
                None => Arc::new(ColdFile::open(
                    &self.dir,
                    entry,
                    self.next_id.fetch_add(1, Ordering::Relaxed),
                )?),
            });
        }
        *self.files.write() = Arc::new(next);
        Ok(())
    }

    /// The figures of the cache.
    pub fn stats(&self) -> ColdStats {
        self.cache.run_pending_tasks();
        ColdStats {
            cache_capacity_bytes: self.cache_bytes,
            cache_bytes: self.cache.weighted_size(),
            cache_blocks: self.cache.entry_count(),
            block_reads: self.block_reads.load(Ordering::Relaxed),
        }
    }

    fn file_of(files: &[Arc<ColdFile>], position: u64) -> Option<&Arc<ColdFile>> {
        let i = files.partition_point(|f| f.last < position);
        files.get(i).filter(|f| f.first <= position)
    }

    /// The block holding `position`, from the cache or (with `Io::Allowed`) from disk.
    fn block(&self, file: &ColdFile, row: u64, io: Io) -> Result<Arc<Block>, ReadError> {
        let first_row = row - row % BLOCK_ROWS as u64;
        let key = (file.id, first_row);
        if let Some(block) = self.cache.get(&key) {
            return Ok(block);
        }
        if io == Io::Forbidden {
            return Err(ReadError::NeedsIo);
        }
        self.block_reads.fetch_add(1, Ordering::Relaxed);
        let block = Arc::new(Block {
            first_row,
            events: file.read_block(first_row)?,
        });
        self.cache.insert(key, Arc::clone(&block));
        Ok(block)
    }
}

impl ColdEvents for ColdFiles {
    fn get_many(&self, positions: &[u64], io: Io) -> Result<Vec<Arc<Event>>, ReadError> {
        let files = Arc::clone(&self.files.read());
        let mut out = Vec::with_capacity(positions.len());
        // Reads walk positions in order: most follow their neighbour into the same block.
        let mut last: Option<(u64, Arc<Block>)> = None;
        for &position in positions {
            let file = Self::file_of(&files, position).ok_or_else(|| {
                anyhow!("no Parquet file holds position {position} (the manifest lost it?)")
            })?;
            let row = file
                .row_of(position)
                .ok_or_else(|| anyhow!("{} does not hold position {position}", file.name))?;
            let block = match &last {
                Some((id, block)) if *id == file.id && block.get(row).is_some() => {
                    Arc::clone(block)
                }
                _ => self.block(file, row, io)?,
            };
            let event = block
                .get(row)
                .filter(|e| e.position.get() == position)
                .ok_or_else(|| {
                    anyhow!("{}: row {row} does not hold position {position}", file.name)
                })?;
            out.push(Arc::clone(event));
            last = Some((file.id, block));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allsource_domain::{EntityId, EventId, EventType, Position, TenantId, Version};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use serde_json::value::RawValue;

    fn events(first: u64, count: u64) -> Vec<Arc<Event>> {
        (first..first + count)
            .map(|p| {
                Arc::new(Event {
                    id: EventId::generate(),
                    tenant_id: TenantId::parse("t").unwrap(),
                    entity_id: EntityId::parse(&format!("e{}", p % 13)).unwrap(),
                    event_type: EventType::parse("x").unwrap(),
                    version: Version::new(1 + p / 13),
                    position: Position::new(p),
                    timestamp: chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000)
                        .unwrap(),
                    payload: RawValue::from_string(format!(r#"{{"p":{p}}}"#)).unwrap(),
                    metadata: None,
                })
            })
            .collect()
    }

    /// A file as `properties` writes it, listed as `name`.
    fn write(
        dir: &Path,
        name: &str,
        events: &[Arc<Event>],
        properties: WriterProperties,
    ) -> ParquetEntry {
        let file = File::create(dir.join(name)).unwrap();
        let mut writer =
            ArrowWriter::try_new(file, parquet_file::schema(), Some(properties)).unwrap();
        for chunk in events.chunks(100) {
            writer
                .write(&parquet_file::batch_of(chunk).unwrap())
                .unwrap();
        }
        writer.close().unwrap();
        ParquetEntry {
            file: name.into(),
            first_position: events[0].position.get(),
            last_position: events.last().unwrap().position.get(),
            events: events.len() as u64,
            bytes: 0,
        }
    }

    #[test]
    fn every_position_reads_back_whatever_the_page_and_row_group_layout() {
        let dir = tempfile::tempdir().unwrap();
        let a = events(1, 1000);
        let b = events(1001, 700);
        // Older files: no page row limit; odd row groups, so that blocks span two of them.
        let old = write(
            dir.path(),
            "a.parquet",
            &a,
            WriterProperties::builder()
                .set_max_row_group_row_count(Some(300))
                .build(),
        );
        let new = write(
            dir.path(),
            "b.parquet",
            &b,
            parquet_file::properties().unwrap(),
        );
        let cold = ColdFiles::new(dir.path().to_path_buf(), 1 << 20);
        cold.set_files(&[old, new]).unwrap();
        let all: Vec<u64> = (1..=1700).collect();
        let read = cold.get_many(&all, Io::Allowed).unwrap();
        let expected: Vec<_> = a.iter().chain(&b).map(|e| (**e).clone()).collect();
        let read: Vec<_> = read.iter().map(|e| (**e).clone()).collect();
        assert_eq!(read, expected);
        // Backwards and scattered, from the cache now.
        let some = [1700, 3, 999, 1000, 1001, 256, 257, 600, 601];
        let read = cold.get_many(&some, Io::Forbidden).unwrap();
        let positions: Vec<u64> = read.iter().map(|e| e.position.get()).collect();
        assert_eq!(positions, some);
        assert!(
            cold.get_many(&[1701], Io::Allowed).is_err(),
            "no file holds it"
        );
    }

    #[test]
    fn without_io_a_miss_asks_for_io_and_a_file_set_change_keeps_reads_exact() {
        let dir = tempfile::tempdir().unwrap();
        let a = events(1, 600);
        let entry = write(
            dir.path(),
            "a.parquet",
            &a,
            parquet_file::properties().unwrap(),
        );
        let cold = ColdFiles::new(dir.path().to_path_buf(), 0);
        cold.set_files(std::slice::from_ref(&entry)).unwrap();
        assert!(matches!(
            cold.get_many(&[5], Io::Forbidden),
            Err(ReadError::NeedsIo)
        ));
        assert_eq!(
            cold.get_many(&[5], Io::Allowed).unwrap()[0].position.get(),
            5
        );
        // A merged file replaces it (same events, new name): reads go to the new file.
        let merged = write(
            dir.path(),
            "m.parquet",
            &a,
            parquet_file::properties().unwrap(),
        );
        cold.set_files(std::slice::from_ref(&merged)).unwrap();
        std::fs::remove_file(dir.path().join("a.parquet")).unwrap();
        let read = cold.get_many(&[1, 300, 600], Io::Allowed).unwrap();
        assert_eq!(*read[1], *a[299]);
        // An entry whose count does not match its file is refused, and the set stays.
        let mut wrong = merged.clone();
        wrong.file = "m.parquet".into();
        wrong.events = 5;
        wrong.last_position = 5;
        assert!(cold.set_files(&[wrong]).is_err());
        assert_eq!(
            cold.get_many(&[600], Io::Allowed).unwrap()[0]
                .position
                .get(),
            600
        );
    }
}

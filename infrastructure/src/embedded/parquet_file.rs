//! Parquet files of sealed segments: every column of an event, tenant included, with the
//! payload and metadata as the client's JSON text. Files are written atomically: temp file,
//! sync, rename, sync the directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use allsource_domain::{Event, EventId, Position, Version};
use anyhow::{Context, anyhow, bail};
use arrow::array::{
    Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::DateTime;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::intern::Interner;
use super::sync_dir;
use crate::index::SealedRow;

/// Events per row group (and per read batch).
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Rows per data page: a point read decodes one page of each column, not a row group. Reads of
/// sealed events go by blocks of this many rows (see `cold`), a divisor of [`ROW_GROUP_ROWS`]
/// so that a block never spans two row groups of files written by this version.
pub const BLOCK_ROWS: usize = 256;

/// The files' columns (the SQL engine scans them with this schema too).
pub(crate) fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::FixedSizeBinary(16), false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("entity_id", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("position", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("payload", DataType::Utf8, false),
        Field::new("metadata", DataType::Utf8, true),
    ]))
}

pub(crate) fn batch_of(events: &[Arc<Event>]) -> anyhow::Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(FixedSizeBinaryArray::try_from_iter(
            events.iter().map(|e| *e.id.as_uuid().as_bytes()),
        )?),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.tenant_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.entity_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.event_type.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            events.iter().map(|e| e.version.get()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            events.iter().map(|e| e.position.get()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                events.iter().map(|e| e.timestamp.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.payload.get()),
        )),
        Arc::new(StringArray::from_iter(
            events.iter().map(|e| e.metadata.as_ref().map(|m| m.get())),
        )),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// Writes `events` to `path` atomically (through `path.tmp`), synced, directory synced.
pub fn write(path: &Path, events: &[Arc<Event>]) -> anyhow::Result<u64> {
    let mut sink = ParquetSink::create(path)?;
    sink.push(events)?;
    sink.finish()?.publish()
}

pub(crate) fn properties() -> anyhow::Result<WriterProperties> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Pages of BLOCK_ROWS rows (the limit is checked per write batch) with the page index
        // (offsets and statistics, written by default), so that a point read decodes a page.
        .set_data_page_row_count_limit(BLOCK_ROWS)
        .set_write_batch_size(BLOCK_ROWS);
    // No dictionary for columns of (nearly) unique values: a reader must decode a column
    // chunk's dictionary page (up to 1 MiB) before any of its data pages, which made every
    // point read cost milliseconds. Ids are random: compressing them only costs time.
    for column in ["id", "entity_id", "payload", "metadata"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    builder = builder.set_column_compression(ColumnPath::from("id"), Compression::UNCOMPRESSED);
    // A zstd page costs a fresh decompression context (tens of microseconds) to read: worth it
    // for payloads, not for the dictionary indexes of tenants and types, nor for entity ids
    // (LZ4: no context, several GB/s).
    for column in ["tenant_id", "event_type"] {
        builder =
            builder.set_column_compression(ColumnPath::from(column), Compression::UNCOMPRESSED);
    }
    builder = builder.set_column_compression(ColumnPath::from("entity_id"), Compression::LZ4_RAW);
    // Increasing integers: delta encoding stores them in a few bits each, without compression.
    for column in ["version", "position", "timestamp"] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(ColumnPath::from(column), Compression::UNCOMPRESSED);
    }
    Ok(builder.build())
}

/// `events` as the bytes of a Parquet file like [`write`] writes (backups of the unsealed tail).
pub fn encode(events: &[Arc<Event>]) -> anyhow::Result<Vec<u8>> {
    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(properties()?))?;
    for chunk in events.chunks(ROW_GROUP_ROWS) {
        writer.write(&batch_of(chunk)?)?;
    }
    Ok(writer.into_inner()?)
}

/// A Parquet file being written in pieces (compaction streams several files into one), to a
/// temp file next to its final path.
pub struct ParquetSink {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
}

impl ParquetSink {
    /// Starts writing what will become `path` (into `path.tmp` until published).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let tmp = path.with_extension("parquet.tmp");
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let writer = ArrowWriter::try_new(file, schema(), Some(properties()?))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            writer,
        })
    }

    /// Adds events (in position order) to the file.
    pub fn push(&mut self, events: &[Arc<Event>]) -> anyhow::Result<()> {
        for chunk in events.chunks(ROW_GROUP_ROWS) {
            self.writer.write(&batch_of(chunk)?)?;
        }
        Ok(())
    }

    /// Gives up: the temp file is removed (best effort: recovery removes leftovers too).
    pub fn abandon(self) {
        drop(self.writer);
        let _ = fs::remove_file(&self.tmp);
    }

    /// Finishes the temp file and syncs it; it is not yet in place.
    pub fn finish(self) -> anyhow::Result<TempParquet> {
        let file = self.writer.into_inner()?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        Ok(TempParquet {
            path: self.path,
            tmp: self.tmp,
            bytes,
        })
    }
}

/// A finished, synced temp file, waiting to be renamed into place.
#[derive(Debug)]
pub struct TempParquet {
    path: PathBuf,
    tmp: PathBuf,
    bytes: u64,
}

impl TempParquet {
    /// Size of the file.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Renames the file into place and syncs the directory; returns its size.
    pub fn publish(self) -> anyhow::Result<u64> {
        fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(self.bytes)
    }

    /// Removes the temp file (best effort: recovery removes leftovers too).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| anyhow!("column {name} is missing or has the wrong type"))
}

/// Reads every event of a Parquet file written by [`write`], in file order.
pub fn read(
    path: &Path,
    interner: &mut Interner,
    mut each: impl FnMut(Vec<Arc<Event>>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(ROW_GROUP_ROWS)
        .build()?;
    let mut count = 0u64;
    for batch in reader {
        let events = events_of(&batch?, interner)?;
        count += events.len() as u64;
        each(events)?;
    }
    Ok(count)
}

/// The events of a batch read with every column.
pub(crate) fn events_of(
    batch: &RecordBatch,
    interner: &mut Interner,
) -> anyhow::Result<Vec<Arc<Event>>> {
    let payloads = column::<StringArray>(batch, "payload")?;
    let metadata = column::<StringArray>(batch, "metadata")?;
    index_rows(batch)?
        .into_iter()
        .enumerate()
        .map(|(row, r)| {
            Ok(Arc::new(Event {
                id: r.id,
                tenant_id: interner.tenant(r.tenant_id).map_err(|e| anyhow!(e))?,
                entity_id: interner.entity(r.entity_id).map_err(|e| anyhow!(e))?,
                event_type: interner.event_type(r.event_type).map_err(|e| anyhow!(e))?,
                version: Version::new(r.version),
                position: Position::new(r.position),
                timestamp: r.timestamp,
                payload: RawValue::from_string(payloads.value(row).to_owned())?,
                metadata: if metadata.is_null(row) {
                    None
                } else {
                    Some(RawValue::from_string(metadata.value(row).to_owned())?)
                },
            }))
        })
        .collect()
}

/// Columns the index needs (all but `payload` and `metadata`), by index in [`schema`].
const INDEX_COLUMNS: [usize; 7] = [0, 1, 2, 3, 4, 5, 6];

/// Reads the index columns of every event of a file (not the payloads), in file order, as
/// batches for [`index_rows`]. Returns the payload and metadata bytes (uncompressed, from the
/// file's metadata).
pub fn read_index_batches(
    path: &Path,
    mut each: impl FnMut(RecordBatch) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let body_bytes: i64 = builder
        .metadata()
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns().iter().skip(7))
        .map(parquet::file::metadata::ColumnChunkMetaData::uncompressed_size)
        .sum();
    let mask = ProjectionMask::roots(builder.parquet_schema(), INDEX_COLUMNS);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(ROW_GROUP_ROWS)
        .build()?;
    for batch in reader {
        each(batch?)?;
    }
    Ok(u64::try_from(body_bytes).unwrap_or(0))
}

/// Calls `each` with the tenant and id of every row of a batch read by
/// [`read_index_batches`], in order.
pub fn for_each_id(
    batch: &RecordBatch,
    mut each: impl FnMut(&str, EventId) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let ids = column::<FixedSizeBinaryArray>(batch, "id")?;
    let tenants = column::<StringArray>(batch, "tenant_id")?;
    for row in 0..batch.num_rows() {
        let id: [u8; 16] = ids.value(row).try_into()?;
        each(tenants.value(row), EventId::new(Uuid::from_bytes(id)))?;
    }
    Ok(())
}

/// The rows of a batch read by [`read_index_batches`], borrowing its names.
pub fn index_rows(batch: &RecordBatch) -> anyhow::Result<Vec<SealedRow<'_>>> {
    let ids = column::<FixedSizeBinaryArray>(batch, "id")?;
    let tenants = column::<StringArray>(batch, "tenant_id")?;
    let entities = column::<StringArray>(batch, "entity_id")?;
    let types = column::<StringArray>(batch, "event_type")?;
    let versions = column::<UInt64Array>(batch, "version")?;
    let positions = column::<UInt64Array>(batch, "position")?;
    let timestamps = column::<TimestampMicrosecondArray>(batch, "timestamp")?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let id: [u8; 16] = ids.value(row).try_into()?;
        let micros = timestamps.value(row);
        let (version, position) = (versions.value(row), positions.value(row));
        if version == 0 || position == 0 {
            bail!("row {row}: version and position start at 1");
        }
        rows.push(SealedRow {
            id: EventId::new(Uuid::from_bytes(id)),
            tenant_id: tenants.value(row),
            entity_id: entities.value(row),
            event_type: types.value(row),
            version,
            position,
            timestamp: DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| anyhow!("timestamp {micros} out of range"))?,
        });
    }
    Ok(rows)
}

//! The `events` table of one tenant, as a DataFusion [`TableProvider`].
//!
//! # Where rows come from
//! - **Sealed Parquet files** (embedded backend, through [`SealedFiles`]): scanned directly by
//!   DataFusion's Parquet reader, with the tenant as a predicate the user's statement cannot
//!   touch (row groups of other tenants are skipped by their statistics, rows are filtered),
//!   the statement's own filters pushed down for pruning, and only the columns it reads.
//! - **The tail** (events above the sealed cut; every event on backends without files): read
//!   through the [`EventStore`] port page by page, with the tenant, the time range, the entity
//!   and the type pushed into the port's query.
//!
//! The two never overlap: files hold positions up to the cut, the tail starts after it. The tail
//! stops at the tenant's head as it was when the scan was planned, so a statement sees one cut
//! of the log even while appends go on.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use allsource_application::ports::{EventQuery, EventStore, SortOrder, StoreError};
use allsource_domain::{EntityId, Event, EventType, Position, TenantId};
use arrow::array::{
    Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, RecordBatchOptions, StringArray,
    StringBuilder, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TableProviderFilterPushDown, Volatility, col, lit,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use futures::StreamExt;

/// Events per page read from the port for the tail.
const TAIL_PAGE: usize = 8192;

/// The Parquet files holding a store's sealed events.
#[async_trait]
pub trait SealedFiles: Send + Sync {
    /// The files holding every event at or below `last_position` (of every tenant), with a
    /// guard that keeps them from being deleted (by compaction) while it is held.
    async fn sealed(&self) -> SealedCut;
}

/// One look at the sealed files.
pub struct SealedCut {
    /// Absolute paths and sizes in bytes, in position order.
    pub files: Vec<(std::path::PathBuf, u64)>,
    /// Highest position held in the files (0 if none).
    pub last_position: u64,
    /// Held for as long as the files are read.
    pub guard: Box<dyn Any + Send + Sync>,
}

/// The columns users see: the files' columns without the tenant (a scan holds one tenant),
/// with the id as UUID text.
pub fn table_schema() -> SchemaRef {
    let fields: Vec<Field> = file_schema()
        .fields()
        .iter()
        .filter(|f| f.name() != "tenant_id")
        .map(|f| {
            if f.name() == "id" {
                Field::new("id", DataType::Utf8, false)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The columns of the Parquet files, as the embedded engine writes them.
fn file_schema() -> SchemaRef {
    crate::embedded::parquet_file::schema()
}

/// One tenant's events, at the cut taken when the table was opened (one statement).
pub struct EventsTable {
    tenant: TenantId,
    store: Arc<dyn EventStore>,
    /// The sealed files, guarded against deletion for as long as the table lives.
    cut: Option<SealedCut>,
    /// The tenant's highest position when the table was opened.
    head: u64,
    schema: SchemaRef,
}

impl fmt::Debug for EventsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsTable")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl EventsTable {
    /// Takes the cut: the sealed files (guarded), then the tenant's head. Events between the
    /// files' last position and the head are read from the port.
    pub async fn open(
        tenant: TenantId,
        store: Arc<dyn EventStore>,
        sealed: Option<&dyn SealedFiles>,
    ) -> Result<Self, StoreError> {
        let cut = match sealed {
            Some(sealed) => Some(sealed.sealed().await),
            None => None,
        };
        let page = store
            .query(
                &tenant,
                EventQuery {
                    limit: 1,
                    order: SortOrder::Desc,
                    ..EventQuery::default()
                },
            )
            .await?;
        let head = page.events.first().map_or(0, |e| e.position.get());
        Ok(Self {
            tenant,
            store,
            cut,
            head,
            schema: table_schema(),
        })
    }

    /// The Parquet part: the files' rows of this tenant, shaped as the table.
    fn parquet_scan(
        &self,
        state: &dyn Session,
        cut: &SealedCut,
        filters: &[Expr],
        columns: &[usize],
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let file_schema = file_schema();
        let df_schema = DFSchema::try_from(Arc::clone(&file_schema))?;
        let tenant_is = col("tenant_id").eq(lit(self.tenant.as_str()));
        // The statement's filters help pruning only where they read the files' columns as the
        // table has them (not `id`, which the files hold as bytes).
        let mut predicate = tenant_is.clone();
        for filter in filters {
            let columns = filter.column_refs();
            if columns.iter().all(|c| c.name != "id") {
                predicate = predicate.and(filter.clone());
            }
        }
        let predicate = state
            .create_physical_expr(predicate, &df_schema)
            .or_else(|_| state.create_physical_expr(tenant_is.clone(), &df_schema))?;
        let source = ParquetSource::new(Arc::clone(&file_schema))
            .with_predicate(Arc::clone(&predicate))
            .with_pushdown_filters(true)
            .with_enable_page_index(true);
        let mut builder =
            FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source));
        for (path, size) in &cut.files {
            builder = builder.with_file(PartitionedFile::new(path.to_string_lossy(), *size));
        }
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(builder.build());
        // The tenant filter again, exactly, whatever the reader's pushdown did.
        let tenant_only = state.create_physical_expr(tenant_is, &df_schema)?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(tenant_only, scan)?);
        let uuid_text = ScalarUDF::from(UuidText::new());
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
        for &i in columns {
            let name = self.schema.field(i).name();
            let expr = if name == "id" {
                uuid_text.call(vec![col("id")])
            } else {
                col(name.as_str())
            };
            exprs.push((state.create_physical_expr(expr, &df_schema)?, name.clone()));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, filtered)?))
    }
}

#[async_trait]
impl TableProvider for EventsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used for pruning and narrowing reads only; DataFusion still filters exactly.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let after = self.cut.as_ref().map_or(0, |c| c.last_position);
        let head = self.head;
        // Every child produces only the columns the plan reads (none for `count(*)`).
        let columns: Vec<usize> = match projection {
            Some(indices) => indices.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&columns)?);
        let mut children: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if let Some(cut) = &self.cut
            && !cut.files.is_empty()
        {
            children.push(self.parquet_scan(state, cut, filters, &columns)?);
        }
        if head > after {
            let mut query = EventQuery {
                from_position: (after > 0).then(|| Position::new(after)),
                limit: TAIL_PAGE,
                order: SortOrder::Asc,
                ..EventQuery::default()
            };
            for filter in filters {
                narrow(&mut query, filter);
            }
            let tail = TailStream {
                schema: Arc::clone(&schema),
                columns: columns.clone(),
                store: Arc::clone(&self.store),
                tenant: self.tenant.clone(),
                query,
                head,
            };
            children.push(Arc::new(StreamingTableExec::try_new(
                Arc::clone(&schema),
                vec![Arc::new(tail)],
                None,
                Vec::new(),
                false,
                None,
            )?));
        }
        if children.is_empty() {
            return Ok(Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                schema,
            )));
        }
        UnionExec::try_new(children)
    }
}

fn external(message: String) -> DataFusionError {
    DataFusionError::External(message.into())
}

fn store_error(e: StoreError) -> DataFusionError {
    match e {
        StoreError::Unavailable(why) => DataFusionError::External(Box::new(Unavailable(why))),
        StoreError::Internal(e) => external(format!("{e:#}")),
    }
}

/// Storage that cannot answer now, carried through DataFusion to the engine's error mapping.
#[derive(Debug, thiserror::Error)]
#[error("storage unavailable: {0}")]
pub struct Unavailable(pub String);

/// Narrows the tail's port query with one of the statement's filters where it can (never
/// excluding a row the filter keeps: DataFusion filters exactly afterwards).
fn narrow(query: &mut EventQuery, filter: &Expr) {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return;
    };
    if *op == Operator::And {
        narrow(query, left);
        narrow(query, right);
        return;
    }
    let (column, op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), *op, v),
        (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
            Some(swapped) => (c.name.as_str(), swapped, v),
            None => return,
        },
        _ => return,
    };
    match (column, op, value) {
        ("entity_id", Operator::Eq, ScalarValue::Utf8(Some(text))) => {
            if let Ok(id) = EntityId::parse(text) {
                query.entity_id = Some(id);
            }
        }
        ("event_type", Operator::Eq, ScalarValue::Utf8(Some(text))) => {
            if let Ok(t) = EventType::parse(text) {
                query.event_type = Some(t);
            }
        }
        ("timestamp", op, ScalarValue::TimestampMicrosecond(Some(micros), _)) => {
            let Some(at) = DateTime::<Utc>::from_timestamp_micros(*micros) else {
                return;
            };
            match op {
                Operator::GtEq | Operator::Gt => {
                    query.since = Some(query.since.map_or(at, |s| s.max(at)));
                }
                Operator::Lt => query.until = Some(query.until.map_or(at, |u| u.min(at))),
                Operator::LtEq => query.as_of = Some(query.as_of.map_or(at, |a| a.min(at))),
                _ => {}
            }
        }
        _ => {}
    }
}

/// The tail, read from the port page by page.
struct TailStream {
    /// The projected schema: the columns of `columns`, in that order.
    schema: SchemaRef,
    /// Indexes into the table's columns.
    columns: Vec<usize>,
    store: Arc<dyn EventStore>,
    tenant: TenantId,
    query: EventQuery,
    /// Positions above it were appended after the scan was planned.
    head: u64,
}

impl fmt::Debug for TailStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailStream")
            .field("tenant", &self.tenant)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for TailStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.schema);
        let store = Arc::clone(&self.store);
        let tenant = self.tenant.clone();
        let head = self.head;
        let columns = self.columns.clone();
        let first = self.query.clone();
        let pages = futures::stream::unfold(Some(first), move |next| {
            let store = Arc::clone(&store);
            let tenant = tenant.clone();
            let schema = Arc::clone(&schema);
            let columns = columns.clone();
            async move {
                let query = next?;
                let page = match store.query(&tenant, query.clone()).await {
                    Ok(page) => page,
                    Err(e) => return Some((Err(store_error(e)), None)),
                };
                let events: Vec<Arc<Event>> = page
                    .events
                    .into_iter()
                    .filter(|e| e.position.get() <= head)
                    .collect();
                let done = !page.has_more
                    || events.is_empty()
                    || events.last().is_some_and(|e| e.position.get() >= head);
                let following = (!done).then(|| EventQuery {
                    from_position: events.last().map(|e| e.position),
                    ..query
                });
                Some((batch_of(&schema, &columns, &events), following))
            }
        })
        .filter(|batch| futures::future::ready(!matches!(batch, Ok(b) if b.num_rows() == 0)));
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            pages,
        ))
    }
}

/// Events as a batch of the table's columns `columns` (indexes into [`table_schema`]), in
/// that order; `schema` is their projected schema.
pub fn batch_of(
    schema: &SchemaRef,
    columns: &[usize],
    events: &[Arc<Event>],
) -> DfResult<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for &column in columns {
        let array: ArrayRef = match column {
            0 => {
                let mut ids = StringBuilder::with_capacity(events.len(), events.len() * 36);
                let mut buffer = uuid::Uuid::encode_buffer();
                for e in events {
                    ids.append_value(e.id.as_uuid().hyphenated().encode_lower(&mut buffer));
                }
                Arc::new(ids.finish())
            }
            1 => Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.entity_id.as_str()),
            )),
            2 => Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.event_type.as_str()),
            )),
            3 => Arc::new(UInt64Array::from_iter_values(
                events.iter().map(|e| e.version.get()),
            )),
            4 => Arc::new(UInt64Array::from_iter_values(
                events.iter().map(|e| e.position.get()),
            )),
            5 => Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    events.iter().map(|e| e.timestamp.timestamp_micros()),
                )
                .with_timezone("UTC"),
            ),
            6 => Arc::new(StringArray::from_iter_values(
                events.iter().map(|e| e.payload.get()),
            )),
            7 => Arc::new(StringArray::from_iter(
                events.iter().map(|e| e.metadata.as_ref().map(|m| m.get())),
            )),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "the events table has no column {other}"
                )));
            }
        };
        arrays.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(events.len()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        arrays,
        &options,
    )?)
}

/// `uuid_text(bytes)`: a 16-byte id as hyphenated lowercase UUID text (the files hold ids as
/// bytes; the table shows them as the API does).
#[derive(Debug, PartialEq, Eq, Hash)]
struct UuidText {
    signature: Signature,
}

impl UuidText {
    fn new() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::FixedSizeBinary(16)], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for UuidText {
    fn name(&self) -> &str {
        "uuid_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(bytes) = arrays
            .first()
            .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
        else {
            return Err(DataFusionError::Internal(
                "uuid_text expects 16-byte values".into(),
            ));
        };
        let mut out = StringBuilder::with_capacity(bytes.len(), bytes.len() * 36);
        for value in bytes.iter() {
            match value.and_then(|b| uuid::Uuid::from_slice(b).ok()) {
                Some(id) => out.append_value(id.hyphenated().to_string()),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

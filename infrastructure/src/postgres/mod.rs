//! `PostgresStore`: the `EventStore` on PostgreSQL, for users who run PostgreSQL already and for
//! running several stateless AllSource nodes on one database.
//!
//! # Positions without gaps visible to readers
//! Every append transaction first takes one advisory lock (transaction-scoped), reads the head
//! row of `allsource_log_head`, plans its appends
//! (with the same [`plan_append`](allsource_domain::plan_append) as every adapter), inserts the
//! events at the positions after the head, moves the head and commits. The lock is released only
//! once the commit is visible, so transactions commit in position order and any snapshot a reader
//! takes holds a gapless prefix of positions: paging by `from_position` can never skip an event
//! that commits later with a smaller position. The price is that transactions are serialized
//! (one commit at a time, across all nodes); node-level group commit (`group.rs`) makes each
//! transaction serve every request that arrived on the node meanwhile, so the lock is taken once
//! per group, not once per request. `docs/ARCHITECTURE.md` discusses the alternative (a
//! high-water mark over transaction ids) should the lock become the bottleneck.
//!
//! # Live delivery across nodes
//! Every append transaction notifies `allsource_commits` with its positions; each node's
//! [`CommitListener`] (see `feed.rs`) listens, reads what committed and publishes it to the
//! node's `CommitFeed`, for every node's commits, its own included. The store itself never
//! publishes from the append path: the feed has one source, in position order.
//!
//! # Errors
//! Driver errors never cross the port: lost connections, pool timeouts and a database that is
//! shutting down become `Unavailable` (HTTP 503); anything else is `Internal` (HTTP 500) with the
//! driver's message logged, never sent.
//!
//! # Layout
//! - `mod.rs`: the adapter, connection, migrations and reads.
//! - `group.rs`: the appends, one transaction per group of concurrent requests.
//! - `rows.rs`: decoding rows into events.
//! - `feed.rs`: the commit listener that publishes every node's commits to this node's feed.
//! - `partition.rs`: hash partitioning of the log by tenant (`admin postgres-partition`).
//! - `standby.rs`: reads from a streaming-replication standby, never older than what the node
//!   knows is committed (`storage.postgres.read_url`).

mod feed;
mod group;
mod partition;
mod rows;
mod standby;

pub use feed::{
    COMMIT_CHANNEL, CommitListener, CommitListenerStats, LISTENER_APPLICATION_NAME, notified_last,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use allsource_application::ports::{
    AppendReceipt, Clock, EntityListQuery, EntityOrder, EntityPage, EntitySummary, EventQuery,
    EventStore, EventTypeCount, QueryPage, SortOrder, StoreAppendError, StoreError, StoreStats,
    StreamRange,
};
use allsource_application::subscriptions::CommitFeed;
use allsource_domain::{
    EntityId, Event, EventId, EventType, Position, ProposedEvent, TenantId, TypeFilter,
    TypeFilters, Version,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

pub use group::GroupCommitStats;
use group::GroupCommitter;
pub use partition::{EventsLayout, MAX_PARTITIONS, PartitionError, PartitionOutcome};
use rows::{EVENT_COLUMNS, event_from_row};
use standby::ReadRouter;
pub use standby::{STANDBY_RETRY, StandbyStats};

/// Key of the transaction-scoped advisory lock that serializes appends ("allsrc" in ASCII).
pub const APPEND_LOCK_KEY: i64 = 0x616c_6c73_7263;

/// Connection settings of the postgres backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `storage.postgres.url`, e.g. `postgres://postgres@127.0.0.1:5432/allsource`.
    pub url: String,
    /// `storage.postgres.max_connections`.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout: Duration,
    /// `storage.postgres.read_url`: a streaming-replication standby of `url` that serves the
    /// reads once it has caught up with what this node knows is committed (`standby.rs`).
    pub read_url: Option<String>,
    /// `storage.postgres.read_wait_ms`: how long a read waits for the standby to catch up
    /// before it reads the primary instead.
    pub read_wait: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/allsource".into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            read_url: None,
            read_wait: Duration::from_millis(250),
        }
    }
}

/// Why the postgres store could not start.
#[derive(Debug, thiserror::Error)]
pub enum PostgresOpenError {
    #[error("invalid setting storage.postgres.url: {0}")]
    InvalidUrl(String),
    #[error("cannot reach PostgreSQL at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("applying the database migrations failed: {0}")]
    Migration(String),
    #[error("storage.postgres.read_url: {0}")]
    Standby(String),
}

/// The event store on PostgreSQL.
pub struct PostgresStore {
    /// The primary's pool: the commit listener, migrations, and reads when there is no standby.
    pool: PgPool,
    /// Where reads run: the primary, or the standby once it has caught up (`standby.rs`).
    reads: ReadRouter,
    /// A position this node knows is committed: its own last commit, or the log's head when
    /// the store opened (the commit listener's feed head counts too, see `committed`).
    known_committed: Arc<AtomicU64>,
    /// The feed the commit listener publishes to, once started.
    followed: parking_lot::Mutex<Option<Arc<CommitFeed>>>,
    closed: AtomicBool,
    /// Publishes every node's commits to this node's feed, once started; stopped at shutdown.
    listener: parking_lot::Mutex<Option<CommitListener>>,
    /// Runs the appends, one transaction per group of concurrent requests (`group.rs`).
    committer: GroupCommitter,
}

impl PostgresStore {
    /// Connects, applies the embedded migrations (under PostgreSQL's advisory lock, so several
    /// nodes may start at once) and returns the store.
    ///
    /// # Errors
    /// An invalid URL, an unreachable server, or a failed migration.
    pub async fn connect(
        config: &PostgresConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PostgresOpenError> {
        let options: PgConnectOptions = config
            .url
            .parse()
            .map_err(|e: sqlx::Error| PostgresOpenError::InvalidUrl(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| PostgresOpenError::Unreachable {
                url: redact(&config.url),
                detail: e.to_string(),
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| PostgresOpenError::Migration(e.to_string()))?;
        let head = standby::head(&pool)
            .await
            .map_err(|e| PostgresOpenError::Unreachable {
                url: redact(&config.url),
                detail: e.to_string(),
            })?;
        let reads = match &config.read_url {
            Some(read_url) => {
                let standby = standby_pool(&pool, config, read_url).await?;
                // What the standby must have replayed before it serves: the migrations above.
                let schema_lsn = standby::wal_position(&pool).await.map_err(|e| {
                    PostgresOpenError::Unreachable {
                        url: redact(&config.url),
                        detail: e.to_string(),
                    }
                })?;
                ReadRouter::with_standby(pool.clone(), standby, config.read_wait, schema_lsn)
            }
            None => ReadRouter::primary_only(pool.clone()),
        };
        let known_committed = Arc::new(AtomicU64::new(head));
        let committer = GroupCommitter::start(
            options,
            config.acquire_timeout,
            clock,
            Arc::clone(&known_committed),
        );
        Ok(Self {
            pool,
            reads,
            known_committed,
            followed: parking_lot::Mutex::new(None),
            closed: AtomicBool::new(false),
            listener: parking_lot::Mutex::new(None),
            committer,
        })
    }

    /// The connection pool (for tests and diagnostics).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts `feed` at the log's head and publishes to it every commit of every node on this
    /// database from now on (a [`CommitListener`], reading at least every `poll_interval`);
    /// [`shutdown`](EventStore::shutdown) stops it. Calling it again replaces the listener.
    ///
    /// # Errors
    /// The log's head cannot be read.
    pub async fn publish_commits_to(
        &self,
        feed: Arc<CommitFeed>,
        poll_interval: Duration,
    ) -> Result<(), StoreError> {
        let listener = CommitListener::start(self.pool.clone(), Arc::clone(&feed), poll_interval)
            .await
            .map_err(read_error)?;
        *self.followed.lock() = Some(feed);
        let replaced = self.listener.lock().replace(listener);
        if let Some(old) = replaced {
            old.stop().await;
        }
        Ok(())
    }

    /// Figures of this node's group commit: transactions that wrote events, and the append
    /// requests they served.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.committer.stats()
    }

    /// How `allsource_events` is laid out (plain, or partitioned by tenant).
    ///
    /// # Errors
    /// A database error.
    pub async fn events_layout(&self) -> Result<EventsLayout, StoreError> {
        partition::layout(&self.pool).await.map_err(read_error)
    }

    /// Converts the log into `partitions` hash partitions by tenant, in one transaction that
    /// appends and reads on every node wait for (see `partition.rs`); `progress(copied, total)`
    /// follows the copy.
    ///
    /// # Errors
    /// See [`PartitionError`]; the log is unchanged in every case.
    pub async fn partition_by_tenant(
        &self,
        partitions: u32,
        progress: impl FnMut(u64, u64) + Send,
    ) -> Result<PartitionOutcome, PartitionError> {
        partition::partition_by_tenant(&self.pool, partitions, progress).await
    }

    /// Figures of the standby reads, when `read_url` is set.
    pub fn standby_stats(&self) -> Option<StandbyStats> {
        self.reads.stats()
    }

    /// The standby's pool, when `read_url` is set (for tests and diagnostics).
    pub fn standby_pool(&self) -> Option<&PgPool> {
        self.reads.standby_pool()
    }

    /// The highest position this node knows is committed: its own appends' last commit, and
    /// what its commit listener has published of every node's commits.
    fn committed(&self) -> u64 {
        let own = self.known_committed.load(Ordering::Acquire);
        let published = self.followed.lock().as_ref().map_or(0, |feed| feed.head());
        own.max(published)
    }

    /// The pool a read runs on (the standby once it holds everything [`committed`](Self::committed)).
    async fn read_pool(&self) -> &PgPool {
        if self.reads.standby_pool().is_none() {
            // No standby: no need to know what is committed.
            return &self.pool;
        }
        self.reads.pool_for(self.committed()).await
    }

    /// Figures of the commit listener, once [`publish_commits_to`](Self::publish_commits_to)
    /// started it.
    pub fn commit_listener_stats(&self) -> Option<CommitListenerStats> {
        self.listener.lock().as_ref().map(CommitListener::stats)
    }

    /// A query with a `payload_filter`. Payloads are stored as `json` (the client's text), and
    /// casting every candidate to `jsonb` to compare in SQL would fail on payloads `jsonb`
    /// cannot hold (a `\u0000` escape): the other filters run in SQL, the payload filter here,
    /// over pages in position order until the page is full.
    async fn query_filtering_payloads(
        &self,
        tenant: &TenantId,
        query: &EventQuery,
    ) -> Result<QueryPage, StoreError> {
        const CHUNK: u64 = 1000;
        let mut cursor = query.from_position;
        let mut skipped = 0usize;
        let mut events = Vec::with_capacity(query.limit.min(1024));
        loop {
            let chunk = self
                .fetch_events(query_sql(tenant, query, cursor, CHUNK, 0))
                .await?;
            let exhausted = (chunk.len() as u64) < CHUNK;
            cursor = chunk.last().map(|e| e.position).or(cursor);
            for event in chunk {
                if !query.matches(&event) {
                    continue;
                }
                if skipped < query.offset {
                    skipped += 1;
                    continue;
                }
                if events.len() == query.limit {
                    return Ok(QueryPage {
                        events,
                        has_more: true,
                    });
                }
                events.push(event);
            }
            if exhausted {
                return Ok(QueryPage {
                    events,
                    has_more: false,
                });
            }
        }
    }

    async fn fetch_events(
        &self,
        mut query: QueryBuilder<Postgres>,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let rows = query
            .build()
            .fetch_all(self.read_pool().await)
            .await
            .map_err(read_error)?;
        rows.iter()
            .map(|row| {
                event_from_row(row)
                    .map(Arc::new)
                    .map_err(StoreError::Internal)
            })
            .collect()
    }
}

/// The standby's pool, checked: it answers, and it is a copy of the primary's database.
async fn standby_pool(
    primary: &PgPool,
    config: &PostgresConfig,
    read_url: &str,
) -> Result<PgPool, PostgresOpenError> {
    let options: PgConnectOptions = read_url
        .parse()
        .map_err(|e: sqlx::Error| PostgresOpenError::Standby(format!("invalid URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| {
            PostgresOpenError::Standby(format!("cannot reach {}: {e}", redact(read_url)))
        })?;
    let unreadable = |e: sqlx::Error| {
        PostgresOpenError::Standby(format!("cannot read the identity of the servers: {e}"))
    };
    let primary_identity = standby::identity(primary).await.map_err(unreadable)?;
    let standby_identity = standby::identity(&pool).await.map_err(unreadable)?;
    if primary_identity != standby_identity {
        return Err(PostgresOpenError::Standby(format!(
            "{} is not a replica of the primary's database (system {} database {:?}, the \
             primary's: system {} database {:?})",
            redact(read_url),
            standby_identity.0,
            standby_identity.1,
            primary_identity.0,
            primary_identity.1
        )));
    }
    Ok(pool)
}

/// Hides the password of a connection URL in messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Whether a driver error means the database cannot be reached or is going away (→ 503).
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        // A connection that dies mid-message surfaces as a protocol error.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::BeginFailed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
            // 08xxx connection exceptions, 53300 too_many_connections.
            code.starts_with("57P") || code.starts_with("08") || code == "53300"
        }),
        _ => false,
    }
}

fn append_error(e: sqlx::Error) -> StoreAppendError {
    if is_unavailable(&e) {
        StoreAppendError::Unavailable(format!("PostgreSQL is unavailable: {e}"))
    } else {
        StoreAppendError::Internal(anyhow::Error::new(e).context("postgres append"))
    }
}

fn read_error(e: sqlx::Error) -> StoreError {
    if is_unavailable(&e) {
        StoreError::Unavailable(format!("PostgreSQL is unavailable: {e}"))
    } else {
        StoreError::Internal(anyhow::Error::new(e).context("postgres read"))
    }
}

/// The SQL of a query's filters (all but `payload_filter`), after `cursor`, in the query's order.
fn query_sql(
    tenant: &TenantId,
    query: &EventQuery,
    cursor: Option<Position>,
    limit: u64,
    offset: u64,
) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS} FROM allsource_events WHERE tenant_id = "
    ));
    q.push_bind(tenant.as_str().to_owned());
    if let Some(entity_id) = &query.entity_id {
        q.push(" AND entity_id = ")
            .push_bind(entity_id.as_str().to_owned());
    }
    if let Some(event_type) = &query.event_type {
        q.push(" AND event_type = ")
            .push_bind(event_type.as_str().to_owned());
    }
    if let Some(prefix) = &query.event_type_prefix {
        q.push(" AND starts_with(event_type, ")
            .push_bind(prefix.clone())
            .push(")");
    }
    push_type_filters(&mut q, &query.type_filters);
    if let Some(since) = query.since {
        q.push(" AND recorded_at >= ").push_bind(since);
    }
    if let Some(until) = query.until {
        q.push(" AND recorded_at < ").push_bind(until);
    }
    if let Some(as_of) = query.as_of {
        q.push(" AND recorded_at <= ").push_bind(as_of);
    }
    if let Some(cursor) = cursor {
        let op = match query.order {
            SortOrder::Asc => " AND position > ",
            SortOrder::Desc => " AND position < ",
        };
        q.push(op).push_bind(to_i64(cursor.get()));
    }
    q.push(match query.order {
        SortOrder::Asc => " ORDER BY position ASC",
        SortOrder::Desc => " ORDER BY position DESC",
    });
    q.push(" LIMIT ")
        .push_bind(to_i64(limit))
        .push(" OFFSET ")
        .push_bind(to_i64(offset));
    q
}

/// `AND (...)` for the filters that combine with OR; nothing when they match every type.
fn push_type_filters(q: &mut QueryBuilder<Postgres>, filters: &TypeFilters) {
    if filters.matches_all() {
        return;
    }
    q.push(" AND (");
    for (i, filter) in filters.as_slice().iter().enumerate() {
        if i > 0 {
            q.push(" OR ");
        }
        match filter {
            TypeFilter::Exact(t) => {
                q.push("event_type = ").push_bind(t.as_str().to_owned());
            }
            TypeFilter::Below(stem) => {
                q.push("event_type = ")
                    .push_bind(stem.as_str().to_owned())
                    .push(" OR starts_with(event_type, ")
                    .push_bind(format!("{}.", stem.as_str()))
                    .push(")");
            }
            TypeFilter::Any => {
                q.push("TRUE");
            }
            TypeFilter::StartsWith(prefix) => {
                q.push("starts_with(event_type, ")
                    .push_bind(prefix.clone())
                    .push(")");
            }
        }
    }
    q.push(")");
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for PostgresStore {
    #[tracing::instrument(name = "postgres", skip_all, fields(db.system = "postgresql", db.operation = "append"))]
    async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<ProposedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreAppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreAppendError::Unavailable(
                "the store is shutting down".into(),
            ));
        }
        self.committer.append(tenant, events).await
    }

    #[tracing::instrument(name = "postgres", skip_all, fields(db.system = "postgresql", db.operation = "read_stream"))]
    async fn read_stream(
        &self,
        tenant: &TenantId,
        entity_id: &EntityId,
        range: StreamRange,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {EVENT_COLUMNS} FROM allsource_events WHERE tenant_id = "
        ));
        q.push_bind(tenant.as_str().to_owned())
            .push(" AND entity_id = ")
            .push_bind(entity_id.as_str().to_owned())
            .push(" AND version >= ")
            .push_bind(to_i64(range.from_version));
        if let Some(to) = range.to_version {
            q.push(" AND version <= ").push_bind(to_i64(to));
        }
        q.push(" ORDER BY version");
        if let Some(limit) = range.limit {
            q.push(" LIMIT ").push_bind(to_i64(limit as u64));
        }
        self.fetch_events(q).await
    }

    #[tracing::instrument(name = "postgres", skip_all, fields(db.system = "postgresql", db.operation = "query"))]
    async fn query(&self, tenant: &TenantId, query: EventQuery) -> Result<QueryPage, StoreError> {
        if query.payload_filter.is_some() {
            return self.query_filtering_payloads(tenant, &query).await;
        }
        // One more than asked tells whether more follow.
        let q = query_sql(
            tenant,
            &query,
            query.from_position,
            query.limit as u64 + 1,
            query.offset as u64,
        );
        let mut events = self.fetch_events(q).await?;
        let has_more = events.len() > query.limit;
        events.truncate(query.limit);
        Ok(QueryPage { events, has_more })
    }

    #[tracing::instrument(name = "postgres", skip_all, fields(db.system = "postgresql", db.operation = "get_event"))]
    async fn get_event(
        &self,
        tenant: &TenantId,
        id: EventId,
    ) -> Result<Option<Arc<Event>>, StoreError> {
        let mut q = QueryBuilder::new(format!(
            "SELECT {EVENT_COLUMNS} FROM allsource_events WHERE tenant_id = "
        ));
        q.push_bind(tenant.as_str().to_owned())
            .push(" AND id = ")
            .push_bind(id.as_uuid());
        Ok(self.fetch_events(q).await?.pop())
    }

    #[tracing::instrument(name = "postgres", skip_all, fields(db.system = "postgresql", db.operation = "list_entities"))]
    async fn list_entities(
        &self,
        tenant: &TenantId,
        query: EntityListQuery,
    ) -> Result<EntityPage, StoreError> {
        let mut q = QueryBuilder::new(
            "WITH heads AS (SELECT DISTINCT ON (entity_id) entity_id, version, event_type, recorded_at \
             FROM allsource_events WHERE tenant_id = ",
        );
        q.push_bind(tenant.as_str().to_owned());
        if let Some(prefix) = &query.event_type_prefix {
            q.push(" AND entity_id IN (SELECT entity_id FROM allsource_events WHERE tenant_id = ")
                .push_bind(tenant.as_str().to_owned())
                .push(" AND starts_with(event_type, ")
                .push_bind(prefix.clone())
                .push("))");
        }
        q.push(
            " ORDER BY entity_id, version DESC) \
             SELECT entity_id, version, event_type, recorded_at, COUNT(*) OVER () AS total \
             FROM heads ORDER BY recorded_at ",
        )
        .push(match query.order {
            EntityOrder::Asc => "ASC",
            EntityOrder::Desc => "DESC",
        })
        .push(", entity_id LIMIT ")
        .push_bind(to_i64(query.limit as u64))
        .push(" OFFSET ")
        .push_bind(to_i64(query.offset as u64));
        let pool = self.read_pool().await;
        let rows = q.build().fetch_all(pool).await.map_err(read_error)?;
        let mut page = EntityPage::default();
        for row in rows {
            let decode = || -> anyhow::Result<(EntitySummary, i64)> {
                let version: i64 = row.try_get(1)?;
                Ok((
                    EntitySummary {
                        entity_id: EntityId::parse(row.try_get::<&str, _>(0)?)?,
                        event_count: version as u64,
                        version: Version::new(version as u64),
                        last_event_type: EventType::parse(row.try_get::<&str, _>(2)?)?,
                        last_event_at: row.try_get(3)?,
                    },
                    row.try_get(4)?,
                ))
            };
            let (summary, total) = decode().map_err(StoreError::Internal)?;
            page.total = total as u64;
            page.entities.push(summary);
        }
        if page.entities.is_empty() && query.offset > 0 {
            // Past the end: the window function saw no rows, count separately.
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(DISTINCT entity_id) FROM allsource_events WHERE tenant_id = $1",
            )
            .bind(tenant.as_str())
            .fetch_one(pool)
            .await
            .map_err(read_error)?;
            if query.event_type_prefix.is_none() {
                page.total = total as u64;
            }
        }
        Ok(page)
    }

    #[tracing::instrument(name = "postgres", skip_all, fields(db.system = "postgresql", db.operation = "event_types"))]
    async fn event_types(&self, tenant: &TenantId) -> Result<Vec<EventTypeCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_type, COUNT(*) FROM allsource_events WHERE tenant_id = $1 \
             GROUP BY event_type ORDER BY event_type",
        )
        .bind(tenant.as_str())
        .fetch_all(self.read_pool().await)
        .await
        .map_err(read_error)?;
        rows.iter()
            .map(|row| {
                let decode = || -> anyhow::Result<EventTypeCount> {
                    Ok(EventTypeCount {
                        event_type: EventType::parse(row.try_get::<&str, _>(0)?)?,
                        count: row.try_get::<i64, _>(1)? as u64,
                    })
                };
                decode().map_err(StoreError::Internal)
            })
            .collect()
    }

    #[tracing::instrument(name = "postgres", skip_all, fields(db.system = "postgresql", db.operation = "stats"))]
    async fn stats(&self, tenant: &TenantId) -> Result<StoreStats, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COUNT(DISTINCT entity_id), COUNT(DISTINCT event_type), \
                    COALESCE(MAX(position), 0), \
                    (SELECT last_position FROM allsource_log_head WHERE singleton) \
             FROM allsource_events WHERE tenant_id = $1",
        )
        .bind(tenant.as_str())
        .fetch_one(self.read_pool().await)
        .await
        .map_err(read_error)?;
        let get = |i: usize| -> Result<u64, StoreError> {
            row.try_get::<i64, _>(i)
                .map(|v| v as u64)
                .map_err(|e| StoreError::Internal(e.into()))
        };
        let mut stats = StoreStats {
            total_events: get(0)?,
            total_entities: get(1)?,
            total_event_types: get(2)?,
            last_position: get(3)?,
            storage: serde_json::Map::new(),
        };
        stats.storage.insert("backend".into(), "postgres".into());
        stats
            .storage
            .insert("store_last_position".into(), get(4)?.into());
        let groups = self.committer.stats();
        stats
            .storage
            .insert("commit_groups".into(), groups.groups.into());
        stats
            .storage
            .insert("commit_group_appends".into(), groups.appends.into());
        stats
            .storage
            .insert("pool_size".into(), self.pool.size().into());
        stats
            .storage
            .insert("pool_idle".into(), (self.pool.num_idle() as u64).into());
        if let Some(standby) = self.reads.stats() {
            stats.storage.insert(
                "standby".into(),
                serde_json::json!({
                    "reads": standby.reads,
                    "primary_reads": standby.primary_reads,
                    "failures": standby.failures,
                    "confirmed_position": standby.confirmed_position,
                }),
            );
        }
        Ok(stats)
    }

    fn is_ready(&self) -> bool {
        !self.pool.is_closed()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::Release);
        // What was queued is committed; later appends are refused.
        self.committer.stop().await;
        // Nothing is published after shutdown.
        let listener = self.listener.lock().take();
        if let Some(listener) = listener {
            listener.stop().await;
        }
        // Waits for checked-out connections (reads in flight) to come back, then closes.
        self.reads.close().await;
        Ok(())
    }
}

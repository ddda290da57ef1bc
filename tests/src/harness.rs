//! The storage backends the `EventStore` contract suite runs against. Each test gets a fresh
//! store; durable backends can be closed and reopened on the same data. `Cached` runs the
//! suite through the `CachedStore` decorator (over the embedded store, so that reopening is
//! checked too): a decorator must keep the contract of what it wraps.

use std::sync::Arc;

use allsource_application::ports::EventStore;
use allsource_application::subscriptions::CommitFeed;
use allsource_infrastructure::cache::{CacheConfig, CachedStore};
use allsource_infrastructure::embedded::{Durability, EmbeddedConfig, EmbeddedStore};
use allsource_infrastructure::postgres::{PostgresConfig, PostgresStore};
use allsource_infrastructure::{MemoryStore, SystemClock};

use crate::pg::TestDatabase;
use crate::pg_cluster::{ReplicatedDatabase, ReplicatedPair};

/// Where a contract test's store lives.
pub enum Harness {
    Memory,
    Embedded(tempfile::TempDir),
    /// The embedded store with tiny WAL segments and no block cache: nearly every read of a
    /// sealed event goes to its Parquet file.
    EmbeddedCold(tempfile::TempDir),
    Postgres(TestDatabase),
    /// The postgres backend on a log hash-partitioned by tenant (`admin postgres-partition`).
    PostgresPartitioned(TestDatabase),
    /// The postgres backend reading from a streaming-replication standby
    /// (`storage.postgres.read_url`): every answer must be the primary's.
    PostgresStandby(ReplicatedDatabase),
    /// The moka cache decorator over another harness's store.
    Cached(Box<Harness>),
}

impl Harness {
    pub async fn memory() -> Option<Self> {
        Some(Self::Memory)
    }

    pub async fn embedded() -> Option<Self> {
        Some(Self::Embedded(tempfile::tempdir().expect("tempdir")))
    }

    /// A fresh embedded store that seals every few events and caches no block.
    pub async fn embedded_cold() -> Option<Self> {
        Some(Self::EmbeddedCold(tempfile::tempdir().expect("tempdir")))
    }

    /// The cache decorator over a fresh embedded store. A small capacity makes entries get
    /// evicted during the tests.
    pub async fn cached() -> Option<Self> {
        Some(Self::Cached(Box::new(Self::embedded().await?)))
    }

    /// `None` (after a loud message) when PostgreSQL is unreachable and not required.
    pub async fn postgres() -> Option<Self> {
        TestDatabase::create().await.map(Self::Postgres)
    }

    /// A fresh database whose log was partitioned by tenant (4 partitions) before the test.
    pub async fn postgres_partitioned() -> Option<Self> {
        let db = TestDatabase::create().await?;
        let config = PostgresConfig {
            url: db.url().to_owned(),
            max_connections: 2,
            ..PostgresConfig::default()
        };
        let store = PostgresStore::connect(&config, Arc::new(SystemClock))
            .await
            .expect("connect to the test database");
        store
            .partition_by_tenant(4, |_, _| {})
            .await
            .expect("partition the log");
        store.shutdown().await.expect("shutdown");
        Some(Self::PostgresPartitioned(db))
    }

    /// `None` (after a loud message) when the PostgreSQL server binaries are missing and
    /// PostgreSQL is not required.
    pub async fn postgres_standby() -> Option<Self> {
        let pair = ReplicatedPair::shared().await?;
        Some(Self::PostgresStandby(pair.database().await))
    }

    /// Whether [`open`](Self::open) after a shutdown sees the same data.
    pub fn durable(&self) -> bool {
        match self {
            Self::Memory => false,
            Self::Cached(inner) => inner.durable(),
            Self::Embedded(_)
            | Self::EmbeddedCold(_)
            | Self::Postgres(_)
            | Self::PostgresPartitioned(_)
            | Self::PostgresStandby(_) => true,
        }
    }

    /// Opens a store on this harness's data. Small WAL segments make the embedded store seal
    /// Parquet files during the tests.
    pub async fn open(&self) -> Arc<dyn EventStore> {
        self.open_with(None).await
    }

    /// Opens a store that publishes its commits to a fresh [`CommitFeed`], as the server
    /// wires it, for the followers' cases.
    pub async fn open_followed(&self) -> (Arc<dyn EventStore>, Arc<CommitFeed>) {
        let feed = Arc::new(CommitFeed::new(16));
        (self.open_with(Some(feed.clone())).await, feed)
    }

    async fn open_with(&self, feed: Option<Arc<CommitFeed>>) -> Arc<dyn EventStore> {
        match self {
            Self::Cached(inner) => Arc::new(CachedStore::new(
                Box::pin(inner.open_with(feed)).await,
                CacheConfig {
                    max_capacity: 64,
                    ttl: std::time::Duration::from_secs(60),
                },
            )),
            Self::Memory => {
                let store = MemoryStore::new(Arc::new(SystemClock));
                Arc::new(match feed {
                    Some(feed) => store.with_feed(feed),
                    None => store,
                })
            }
            Self::Embedded(dir) | Self::EmbeddedCold(dir) => {
                let cold = matches!(self, Self::EmbeddedCold(_));
                let config = EmbeddedConfig {
                    data_dir: dir.path().to_path_buf(),
                    durability: Durability::None,
                    segment_bytes: if cold { 4096 } else { 16 * 1024 },
                    cache_bytes: if cold {
                        0
                    } else {
                        EmbeddedConfig::default().cache_bytes
                    },
                    ..EmbeddedConfig::default()
                };
                let store = tokio::task::spawn_blocking(move || {
                    EmbeddedStore::open_with_feed(config, Arc::new(SystemClock), feed)
                })
                .await
                .expect("open task")
                .expect("open embedded store");
                Arc::new(store)
            }
            Self::Postgres(db) | Self::PostgresPartitioned(db) => {
                Self::open_postgres(db.url(), None, feed).await
            }
            Self::PostgresStandby(db) => {
                Self::open_postgres(db.primary.url(), Some(&db.standby_url), feed).await
            }
        }
    }

    async fn open_postgres(
        url: &str,
        read_url: Option<&str>,
        feed: Option<Arc<CommitFeed>>,
    ) -> Arc<dyn EventStore> {
        let config = PostgresConfig {
            url: url.to_owned(),
            read_url: read_url.map(str::to_owned),
            max_connections: 8,
            ..PostgresConfig::default()
        };
        let store = PostgresStore::connect(&config, Arc::new(SystemClock))
            .await
            .expect("connect to the test database");
        if let Some(feed) = feed {
            // Commits reach the feed through LISTEN/NOTIFY, as on a server.
            store
                .publish_commits_to(feed, std::time::Duration::from_millis(100))
                .await
                .expect("start the commit listener");
        }
        Arc::new(store)
    }
}

//! Ports: the traits through which use cases reach the outside world (`EventStore`,
//! `StateStore`, `EntityStateCache`, `AuditLog`, `Compactor`, `RateLimiter`, `Clock`,
//! `SchemaValidator`, `SnapshotScheduler`, `WebhookSender`, `SqlEngine`). Adapters live in
//! `allsource-infrastructure`; every adapter of [`EventStore`] passes the one contract suite in
//! `allsource-tests`.
//! [`failure`] maps the storage ports' failures into use-case errors, one way for all.

pub mod audit;
pub mod backup;
pub mod clock;
pub mod compactor;
pub mod event_store;
pub mod failure;
pub mod rate_limit;
pub mod schema_validator;
pub mod snapshot_scheduler;
pub mod sql_engine;
pub mod state_cache;
pub mod state_store;
pub mod webhook_sender;

#[cfg(any(test, feature = "mocks"))]
pub use audit::MockAuditLog;
pub use audit::{AuditError, AuditLog, AuditOutcome, AuditQuery, AuditRecord};
pub use clock::Clock;
#[cfg(any(test, feature = "mocks"))]
pub use compactor::MockCompactor;
pub use compactor::{
    CompactionError, CompactionPolicy, CompactionReport, CompactionStats, Compactor, NoCompaction,
};
pub use event_store::*;
pub use failure::StorageFailure;
#[cfg(any(test, feature = "mocks"))]
pub use rate_limit::MockRateLimiter;
pub use rate_limit::{RateDecision, RateLimitError, RateLimiter, TokenBucket};
pub use schema_validator::{CompiledSchema, SchemaIssue, SchemaValidator};
#[cfg(any(test, feature = "mocks"))]
pub use schema_validator::{MockCompiledSchema, MockSchemaValidator};
#[cfg(any(test, feature = "mocks"))]
pub use snapshot_scheduler::MockSnapshotScheduler;
pub use snapshot_scheduler::SnapshotScheduler;
#[cfg(any(test, feature = "mocks"))]
pub use sql_engine::MockSqlEngine;
pub use sql_engine::{SqlEngine, SqlError, SqlLimits, Table};
#[cfg(any(test, feature = "mocks"))]
pub use state_cache::MockEntityStateCache;
pub use state_cache::{EntityStateCache, NoStateCache};
#[cfg(any(test, feature = "mocks"))]
pub use state_store::MockStateStore;
pub use state_store::{StateEntry, StateError, StateStore};
#[cfg(any(test, feature = "mocks"))]
pub use webhook_sender::MockWebhookSender;
pub use webhook_sender::{
    DestinationError, EventEncoder, Secret, SendError, WebhookRequest, WebhookSender,
};

pub use backup::{
    BackupIoError, BackupSource, BackupTarget, NoProgress, Piece, PieceKind, Progress,
    RestorePoint, RestoreSink, StoreCut,
};
#[cfg(any(test, feature = "mocks"))]
pub use backup::{MockBackupSource, MockBackupTarget, MockRestoreSink};

//! Use cases. Each one takes the [`Caller`](crate::Caller) and raw, untrusted input (strings as
//! they came from the request), validates it with field-level errors, applies the business rules,
//! and calls the ports. Each error enum documents the HTTP status its variants map to.

mod admission;
mod append;
mod audit;
pub mod backups;
mod compaction;
pub mod consumer_groups;
mod consumers;
mod health;
pub mod identity;
pub(crate) mod params;
mod policies;
mod read;
mod schemas;
mod snapshots;
mod tenants;

#[cfg(any(test, feature = "mocks"))]
pub use admission::MockTenantLimits;
pub use admission::{Admission, Admitted, Refusal, Refused, RequestKind, TenantLimits};
#[cfg(any(test, feature = "mocks"))]
pub use append::MockAppendGuard;
pub use append::{
    AppendError, AppendEventInput, AppendEvents, AppendGuard, AppendLimits, AppendReply,
    GuardedEvent, QuotaExceeded,
};
pub use audit::{
    AuditPage, AuditQueryError, AuditQueryInput, AuditTrail, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT,
    record_or_log,
};
pub use backups::{
    BackupError, BackupKind, BackupManifest, BackupState, BackupView, Backups, RestoreReport,
    StartBackupInput, VerifyReport,
};
pub use compaction::{Compaction, CompactionRequestError};
pub use consumers::{
    CONSUMERS_NAMESPACE, ConsumerError, ConsumerView, Consumers, ConsumersDeps, DEFAULT_POLL_LIMIT,
    FollowInput, Followed, MAX_POLL_LIMIT, PolledEvents, RegisterConsumerInput, parse_filter,
};
pub use health::{Health, HealthReport};
pub use params::FieldError;
pub use policies::{
    ConditionInput, Enforcement, MAX_POLICIES, POLICY_NAMESPACE, Policies, PolicyError,
    PolicyInput, REFRESH_SECONDS,
};
pub use read::{
    DEFAULT_QUERY_LIMIT, EntityListInput, EntityStateInput, EntityStateView, MAX_PAGE_LIMIT,
    QueryInput, ReadError, ReadEvents, StreamInput,
};
pub use schemas::{
    ConfigureSubjectInput, MAX_APPEND_VIOLATIONS, RegisterSchemaInput, Registered,
    SCHEMA_NAMESPACE, SchemaError, SchemaRegistry, SchemaSettings, SchemaView, SubjectConfig,
    SubjectSummary, ValidateInput, ValidationReport,
};
pub use snapshots::{
    BackgroundSnapshots, CreateSnapshotInput, DEFAULT_SNAPSHOT_LIMIT, ListSnapshotsInput,
    MAX_SNAPSHOT_LIMIT, NAMESPACE as SNAPSHOT_NAMESPACE, Snapshot, SnapshotArchive, SnapshotError,
    SnapshotJobStats, SnapshotOrigin, SnapshotPage, SnapshotPolicy, SnapshotTrigger, Snapshots,
};
pub use tenants::{
    CreateTenantInput, PurgeNamespaces, QuotaUsage, TENANT_CACHE_MILLIS, TENANTS_NAMESPACE,
    TenantError, TenantMembers, TenantStats, Tenants, USAGE_NAMESPACE, UpdateTenantInput,
    quota_limit,
};

//! Settings: built-in defaults, then the config file (`allsource.toml` in the working directory,
//! or `--config PATH`), then environment variables `ALLSOURCE__SECTION__KEY`, then command-line
//! flags. Validated once at start, with messages that name the key and the allowed values.

use std::fmt;
use std::path::{Path, PathBuf};

use allsource_domain::CompatibilityMode;
use config::{Config, ConfigError, Environment, File, FileFormat};
use serde::{Deserialize, Deserializer};

/// Every setting of the server. Field names are the config keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub cache: CacheSettings,
    pub projections: ProjectionSettings,
    /// `schemas.*`: the schema registry.
    #[serde(default)]
    pub schemas: SchemaRegistrySettings,
    /// `auth.*`: authentication (on by default; `--dev` turns it off).
    pub auth: AuthSettings,
    pub snapshots: SnapshotSettings,
    pub compaction: CompactionSettings,
    /// `policies.*`: the policy engine.
    pub policies: PolicySettings,
    /// `audit.*`: the audit log.
    pub audit: AuditSettings,
    pub rate_limit: RateLimitSettings,
    /// `realtime.*`: following the log (consumers, WebSocket, SSE).
    pub realtime: RealtimeSettings,
    /// `webhooks.*`: delivery of events to registered URLs.
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// `pipelines.*`: how stream pipelines run.
    #[serde(default)]
    pub pipelines: PipelineSettings,
    /// `analytics.*`: the bounds of analytics, the query DSL and SQL.
    #[serde(default)]
    pub analytics: AnalyticsSettings,
    /// `metrics.*`: the Prometheus exposition.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// `telemetry.*`: OpenTelemetry traces.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// `backup.*`: where backups are written.
    #[serde(default)]
    pub backup: BackupSettings,
    /// Development mode: authentication off (once it exists), loud warning at start.
    #[serde(default)]
    pub dev: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `server.host`: address to listen on.
    pub host: String,
    /// `server.port`: port to listen on (0 = any free port).
    pub port: u16,
    /// `server.max_body_bytes`: largest request body accepted.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `storage.backend`: `embedded` (default), `memory` or `postgres`.
    pub backend: Backend,
    /// `storage.data_dir`: where the embedded store keeps its files (created if missing).
    pub data_dir: PathBuf,
    /// `storage.durability`: `fsync` (default), `interval` or `none`.
    pub durability: Durability,
    /// `storage.fsync_interval_ms`: with `durability = "interval"`, how often to sync.
    pub fsync_interval_ms: u64,
    /// `storage.segment_bytes`: WAL segment size before it is sealed into Parquet.
    pub segment_bytes: u64,
    /// `storage.cache_bytes`: memory for sealed events read back from Parquet (the embedded
    /// store's block cache); 0 caches nothing.
    pub cache_bytes: u64,
    /// `storage.postgres.*`: the postgres backend's connection.
    pub postgres: PostgresSettings,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `storage.postgres.url`: connection URL of the database holding the events.
    pub url: String,
    /// `storage.postgres.max_connections`: size of the connection pool.
    pub max_connections: u32,
    /// `storage.postgres.acquire_timeout_ms`: how long a request waits for a connection
    /// before answering 503.
    pub acquire_timeout_ms: u64,
    /// `storage.postgres.read_url`: a streaming-replication standby of `url` that serves reads
    /// once it holds everything this node knows is committed; empty (the default) reads the
    /// primary only.
    pub read_url: String,
    /// `storage.postgres.read_wait_ms`: how long a read waits for the standby to catch up
    /// before it reads the primary instead.
    pub read_wait_ms: u64,
}

impl PostgresSettings {
    /// The standby's URL, if one is set.
    pub fn read_url(&self) -> Option<String> {
        let url = self.read_url.trim();
        (!url.is_empty()).then(|| url.to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// `limits.max_event_bytes`: payload + metadata of one event.
    pub max_event_bytes: usize,
    /// `limits.max_batch_events`: events in one batch.
    pub max_batch_events: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `cache.enabled`: cache events by id and stream prefixes in front of the postgres
    /// backend (the embedded and memory backends read from memory already).
    pub enabled: bool,
    /// `cache.max_capacity`: events held in the cache.
    pub max_capacity: u64,
    /// `cache.ttl_seconds`: how long an entry lives (bounds memory, not staleness: cached
    /// entries are immutable facts and never stale).
    pub ttl_seconds: u64,
    /// `cache.max_states`: folded entity states kept in memory (every backend), so a state
    /// read folds only the events since; 0 turns it off.
    pub max_states: u64,
}

/// `compaction.*`: merging the embedded backend's small Parquet files (ignored by the other
/// backends). `POST /api/v1/compaction/trigger` works whether or not the policy is enabled.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionSettings {
    /// `compaction.enabled`: run the background policy.
    pub enabled: bool,
    /// `compaction.interval_seconds`: how often the policy looks for files to merge.
    pub interval_seconds: u64,
    /// `compaction.min_files`: the policy merges a run of adjacent small files once it has
    /// this many.
    pub min_files: usize,
    /// `compaction.target_file_bytes`: files below this size are small; merged files do not
    /// exceed it.
    pub target_file_bytes: u64,
    /// `compaction.max_small_file_age_seconds`: the policy also merges a run of two or more
    /// small files once its oldest is this old; 0 turns the age rule off.
    pub max_small_file_age_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistrySettings {
    /// `schemas.enforce_by_default`: whether a subject registered without `enforce` checks
    /// appended events of its type against its latest schema (default true).
    pub enforce_by_default: bool,
    /// `schemas.default_compatibility`: the mode of a subject registered without one:
    /// `NONE`, `BACKWARD` (default), `FORWARD` or `FULL` (case-insensitive).
    #[serde(deserialize_with = "compatibility")]
    pub default_compatibility: CompatibilityMode,
    /// `schemas.cache_ttl_ms`: how long a node uses the enforced schemas of a tenant before
    /// reloading them; bounds how late a node sees a change made on another node (changes made
    /// on the node itself apply at once).
    pub cache_ttl_ms: u64,
}

impl Default for SchemaRegistrySettings {
    fn default() -> Self {
        Self {
            enforce_by_default: true,
            default_compatibility: CompatibilityMode::Backward,
            cache_ttl_ms: 5000,
        }
    }
}

/// `webhooks.*`: how events are delivered to webhooks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// `webhooks.allow_private_destinations` (`ALLSOURCE__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS`):
    /// allow destinations on loopback, private, link-local, unique-local, unspecified,
    /// multicast and reserved addresses (default false: refused with 400 naming the rule).
    pub allow_private_destinations: bool,
    /// `webhooks.timeout_ms`: one attempt's limit, resolution and connection included.
    pub timeout_ms: u64,
    /// `webhooks.max_attempts`: attempts per event before it is marked failed (5 to 50).
    pub max_attempts: u32,
    /// `webhooks.backoff_base_ms`: the wait after the first failed attempt; it doubles after
    /// each further one.
    pub backoff_base_ms: u64,
    /// `webhooks.backoff_max_ms`: the longest wait between two attempts.
    pub backoff_max_ms: u64,
    /// `webhooks.lease_ms`: how long a node's delivery lease on a webhook lasts without
    /// renewal: how long another node waits to take over after a node died. At least twice
    /// `webhooks.timeout_ms`, so a lease never runs out during an attempt.
    pub lease_ms: u64,
    /// `webhooks.rescan_interval_ms`: how often a node reads every webhook definition again
    /// (how soon it learns of webhooks changed on another node).
    pub rescan_interval_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_destinations: false,
            timeout_ms: 10_000,
            max_attempts: 6,
            backoff_base_ms: 1000,
            backoff_max_ms: 60_000,
            lease_ms: 30_000,
            rescan_interval_ms: 5000,
        }
    }
}

impl WebhookSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        let checks: [(&str, bool, &str); 6] = [
            (
                "webhooks.timeout_ms",
                (100..=300_000).contains(&self.timeout_ms),
                "must be between 100 and 300000",
            ),
            (
                "webhooks.max_attempts",
                (5..=50).contains(&self.max_attempts),
                "must be between 5 and 50",
            ),
            (
                "webhooks.backoff_base_ms",
                (1..=3_600_000).contains(&self.backoff_base_ms),
                "must be between 1 and 3600000",
            ),
            (
                "webhooks.backoff_max_ms",
                self.backoff_max_ms >= self.backoff_base_ms && self.backoff_max_ms <= 86_400_000,
                "must be between webhooks.backoff_base_ms and 86400000",
            ),
            (
                "webhooks.lease_ms",
                self.lease_ms >= self.timeout_ms.saturating_mul(2) && self.lease_ms <= 3_600_000,
                "must be at least twice webhooks.timeout_ms, and at most 3600000",
            ),
            (
                "webhooks.rescan_interval_ms",
                (10..=3_600_000).contains(&self.rescan_interval_ms),
                "must be between 10 and 3600000",
            ),
        ];
        first_failure(&checks)
    }
}

/// The first check that fails, as the error naming its key: checks are
/// `(key, whether it holds, the message when it does not)`.
fn first_failure(checks: &[(&str, bool, &str)]) -> Result<(), SettingsError> {
    match checks.iter().find(|(_, ok, _)| !ok) {
        Some((key, _, message)) => Err(SettingsError::new(key, *message)),
        None => Ok(()),
    }
}

/// `pipelines.*`: how stream pipelines run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// `pipelines.concurrency`: pipelines processing at once on this node (0: half the
    /// cores, at least 1). The others wait their turn; appends and reads keep the rest.
    pub concurrency: usize,
    /// `pipelines.commit_interval_ms`: the longest time between processing an event and
    /// committing it (derived events, results, checkpoint).
    pub commit_interval_ms: u64,
    /// `pipelines.batch_events`: events processed between two commits at most.
    pub batch_events: usize,
    /// `pipelines.tick_ms`: how often the clock closes windows over the server's timestamps.
    pub tick_ms: u64,
    /// `pipelines.clock_grace_ms`: how far behind the clock such windows close (events reach
    /// the pipelines a moment after their timestamp; on PostgreSQL, other nodes' events up to
    /// `realtime.postgres_poll_interval_ms` later).
    pub clock_grace_ms: u64,
    /// `pipelines.lease_ms`: how long a node's lease on a pipeline lasts without renewal.
    pub lease_ms: u64,
    /// `pipelines.rescan_interval_ms`: how often a node reads every pipeline again.
    pub rescan_interval_ms: u64,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            concurrency: 0,
            commit_interval_ms: 100,
            batch_events: 1000,
            tick_ms: 250,
            clock_grace_ms: 2000,
            lease_ms: 30_000,
            rescan_interval_ms: 5000,
        }
    }
}

impl PipelineSettings {
    /// The pipelines processing at once: the setting, or half the cores.
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency > 0 {
            return self.concurrency;
        }
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let checks: [(&str, bool, &str); 7] = [
            (
                "pipelines.clock_grace_ms",
                self.clock_grace_ms <= 3_600_000,
                "must be at most 3600000",
            ),
            (
                "pipelines.concurrency",
                self.concurrency <= 1024,
                "must be at most 1024 (0: half the cores)",
            ),
            (
                "pipelines.commit_interval_ms",
                (1..=60_000).contains(&self.commit_interval_ms),
                "must be between 1 and 60000",
            ),
            (
                "pipelines.batch_events",
                (1..=100_000).contains(&self.batch_events),
                "must be between 1 and 100000",
            ),
            (
                "pipelines.tick_ms",
                (10..=60_000).contains(&self.tick_ms),
                "must be between 10 and 60000",
            ),
            (
                "pipelines.lease_ms",
                (1000..=3_600_000).contains(&self.lease_ms),
                "must be between 1000 and 3600000",
            ),
            (
                "pipelines.rescan_interval_ms",
                (10..=3_600_000).contains(&self.rescan_interval_ms),
                "must be between 10 and 3600000",
            ),
        ];
        first_failure(&checks)
    }
}

/// `backup.*`: where backups are written (`allsource backup`, `/api/v1/backups`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// `backup.target`: a directory path, or `s3://bucket/prefix` for an S3-compatible bucket.
    /// Empty (the default): no target, and `POST /api/v1/backups` answers 409.
    pub target: String,
    /// `backup.s3_endpoint`: `http(s)://host:port` of an S3-compatible server (MinIO, Ceph,
    /// moto); empty for AWS itself.
    pub s3_endpoint: String,
    /// `backup.s3_region`: the bucket's region; empty takes `AWS_REGION` (or `us-east-1`).
    pub s3_region: String,
    /// `backup.s3_access_key_id` and `backup.s3_secret_access_key`: credentials; empty takes
    /// the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// `backup.s3_allow_http`: allow a plain `http://` endpoint (a local test server).
    pub s3_allow_http: bool,
}

impl BackupSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.target.starts_with("s3:") && !self.target.starts_with("s3://") {
            return Err(SettingsError::new(
                "backup.target",
                "must be a directory path or s3://bucket/prefix",
            ));
        }
        if self.target.starts_with("s3://")
            && allsource_infrastructure::backup::s3::parse_s3_url(&self.target).is_err()
        {
            return Err(SettingsError::new(
                "backup.target",
                "an s3:// target names a bucket: s3://bucket/prefix",
            ));
        }
        let endpoint = &self.s3_endpoint;
        let is_url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !endpoint.is_empty() && !is_url {
            return Err(SettingsError::new(
                "backup.s3_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

/// `analytics.*`: the bounds of analytics, the query DSL and SQL.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// `analytics.max_range_days`: the longest range a bucketed analysis may cover.
    pub max_range_days: u32,
    /// `analytics.max_buckets`: the most buckets one answer may have.
    pub max_buckets: usize,
    /// `analytics.sql_max_rows`: the most rows a client's SQL statement may return (422 past it).
    pub sql_max_rows: usize,
    /// `analytics.scan_max_rows`: the most rows an analysis may read back from the engine
    /// (the (bucket, group) rows of a series, the (cohort, period) rows of cohorts).
    pub scan_max_rows: usize,
    /// `analytics.timeout_ms`: the longest a statement may run (408 past it).
    pub timeout_ms: u64,
    /// `analytics.memory_mb`: the memory all running statements may hold together (422 past it).
    pub memory_mb: usize,
    /// `analytics.threads`: threads of the SQL engine's own runtime (0: the number of cores).
    pub threads: usize,
}

impl Default for AnalyticsSettings {
    /// The use cases' own defaults, and the engine's memory and threads.
    fn default() -> Self {
        let bounds = allsource_application::analytics::AnalyticsConfig::default();
        Self {
            max_range_days: bounds.max_range_days,
            max_buckets: bounds.max_buckets,
            sql_max_rows: bounds.sql_max_rows,
            scan_max_rows: bounds.scan_max_rows,
            timeout_ms: u64::try_from(bounds.timeout.as_millis()).unwrap_or(u64::MAX),
            memory_mb: 512,
            threads: 0,
        }
    }
}

impl AnalyticsSettings {
    /// The engine's threads: the setting, or the number of cores.
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let checks: [(&str, bool, &str); 7] = [
            (
                "analytics.max_range_days",
                (1..=36_600).contains(&self.max_range_days),
                "must be between 1 and 36600",
            ),
            (
                "analytics.max_buckets",
                (1..=1_000_000).contains(&self.max_buckets),
                "must be between 1 and 1000000",
            ),
            (
                "analytics.sql_max_rows",
                (1..=10_000_000).contains(&self.sql_max_rows),
                "must be between 1 and 10000000",
            ),
            (
                "analytics.scan_max_rows",
                (1..=100_000_000).contains(&self.scan_max_rows),
                "must be between 1 and 100000000",
            ),
            (
                "analytics.timeout_ms",
                (10..=3_600_000).contains(&self.timeout_ms),
                "must be between 10 and 3600000",
            ),
            (
                "analytics.memory_mb",
                (16..=1_048_576).contains(&self.memory_mb),
                "must be between 16 and 1048576",
            ),
            (
                "analytics.threads",
                self.threads <= 1024,
                "must be at most 1024 (0: the number of cores)",
            ),
        ];
        first_failure(&checks)
    }
}

/// `metrics.*`: the Prometheus exposition at `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// `metrics.enabled`: record metrics and serve `/metrics` (default true).
    pub enabled: bool,
    /// `metrics.public`: `/metrics` on the main port needs no credential (default false: it
    /// needs a credential with the `metrics` permission). Reloaded by SIGHUP.
    pub public: bool,
    /// `metrics.listen`: also serve `/metrics`, without a credential, on this address only
    /// (e.g. `127.0.0.1:9464`, for a scraper on the same host or network); empty: none.
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            public: false,
            listen: String::new(),
        }
    }
}

impl MetricsSettings {
    /// The separate scrape address, when one is set.
    ///
    /// # Errors
    /// `metrics.listen` that is not `host:port`.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, SettingsError> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            SettingsError::new(
                "metrics.listen",
                format!("{listen:?} is not an address of the form host:port, e.g. 127.0.0.1:9464"),
            )
        })
    }
}

/// `telemetry.*`: OpenTelemetry traces.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub otlp: OtlpSettings,
}

/// `telemetry.otlp.*`: export of traces over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSettings {
    /// `telemetry.otlp.endpoint`: the collector's base URL, e.g. `http://127.0.0.1:4318`
    /// (traces go to `<endpoint>/v1/traces`); empty (default): no export.
    pub endpoint: String,
    /// `telemetry.otlp.service_name`: the `service.name` of the spans (default `allsource`).
    pub service_name: String,
    /// `telemetry.otlp.sample_ratio`: the share of new traces recorded, 0.0 to 1.0 (default
    /// 1.0); a request that continues a trace follows its caller's sampling decision.
    pub sample_ratio: f64,
    /// `telemetry.otlp.batch_delay_ms`: the longest a finished span waits before it is sent
    /// (default 1000).
    pub batch_delay_ms: u64,
    /// `telemetry.otlp.timeout_ms`: the longest one export may take (default 10000).
    pub timeout_ms: u64,
}

impl Default for OtlpSettings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            service_name: "allsource".into(),
            sample_ratio: 1.0,
            batch_delay_ms: 1000,
            timeout_ms: 10_000,
        }
    }
}

impl OtlpSettings {
    /// The traces URL, when export is on.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.endpoint.trim().trim_end_matches('/');
        (!endpoint.is_empty()).then(|| format!("{endpoint}/v1/traces"))
    }

    /// # Errors
    /// A setting out of its range, naming it.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let endpoint = self.endpoint.trim();
        let checks: [(&str, bool, &str); 5] = [
            (
                "telemetry.otlp.endpoint",
                endpoint.is_empty()
                    || endpoint.starts_with("http://")
                    || endpoint.starts_with("https://"),
                "must be an http:// or https:// URL (or empty: no export)",
            ),
            (
                "telemetry.otlp.service_name",
                !self.service_name.trim().is_empty(),
                "must not be empty",
            ),
            (
                "telemetry.otlp.sample_ratio",
                (0.0..=1.0).contains(&self.sample_ratio),
                "must be between 0.0 and 1.0",
            ),
            (
                "telemetry.otlp.batch_delay_ms",
                (1..=60_000).contains(&self.batch_delay_ms),
                "must be between 1 and 60000",
            ),
            (
                "telemetry.otlp.timeout_ms",
                (100..=300_000).contains(&self.timeout_ms),
                "must be between 100 and 300000",
            ),
        ];
        first_failure(&checks)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// `policies.enabled`: enforce the policies on every request (default true). Off, the
    /// policies can still be managed and evaluated (dry run), and nothing is refused by them.
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// `audit.retention_days`: audit records older than this are pruned hourly (default 90);
    /// 0 keeps them forever.
    pub retention_days: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionSettings {
    /// `projections.poll_interval_ms`: how often the projection runner looks for new events
    /// when no local append woke it (it sees other nodes' appends this way).
    pub poll_interval_ms: u64,
    /// `projections.batch_size`: events read per page while catching up or replaying.
    pub batch_size: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSettings {
    /// `realtime.feed_capacity`: commit groups a subscriber may fall behind the live feed
    /// before it reads from storage instead (it never loses an event either way).
    pub feed_capacity: usize,
    /// `realtime.send_timeout_ms`: how long a WebSocket client may take to accept one frame
    /// before it is closed as too slow (1008, the reason naming the last position sent).
    pub send_timeout_ms: u64,
    /// `realtime.postgres_poll_interval_ms`: on the postgres backend, how often a node reads
    /// the log for commits no notification announced (a lost notification, a listening
    /// connection being re-made): the worst-case delay of live delivery across nodes.
    pub postgres_poll_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSettings {
    /// `snapshots.every_n_events`: take a snapshot of an entity automatically every this many
    /// of its events (in the background); 0 turns automatic snapshots off.
    pub every_n_events: u64,
    /// `snapshots.keep_per_entity`: how many snapshots (the newest) are kept per entity.
    pub keep_per_entity: usize,
    /// `snapshots.queue_capacity`: automatic snapshot jobs waiting at most; beyond it, jobs
    /// are dropped (never the append).
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// `rate_limit.enabled`: token buckets per tenant and API key, sized by the tenant's tier,
    /// with `X-RateLimit-*` headers and 429 `rate_limited` (default true).
    pub enabled: bool,
    /// `rate_limit.backend`: `memory` (default; each node has its own budget) or `redis` (one
    /// budget shared by every node on the same Redis).
    pub backend: RateLimitBackend,
    /// `rate_limit.redis_url`: the Redis of `backend = "redis"`.
    pub redis_url: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `log.level`: a tracing filter (`info`, `debug`, `allsource=debug,tower_http=info`).
    /// `RUST_LOG` wins when set. Checked at start (see [`LogFilter`]).
    pub level: LogFilter,
    /// `log.format`: `text` (default) or `json`.
    pub format: LogFormat,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `auth.enabled`: check credentials (default). Off, every request is an admin of tenant
    /// `default` (as with `--dev`).
    pub enabled: bool,
    pub jwt: JwtSettings,
    pub bootstrap_admin: BootstrapAdminSettings,
    pub login: LoginSettings,
}

impl std::fmt::Debug for AuthSettings {
    // Secrets and the bootstrap password are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("enabled", &self.enabled)
            .field("jwt.issuer", &self.jwt.issuer)
            .field("jwt.keys", &self.jwt.keys.len())
            .field("bootstrap_admin.username", &self.bootstrap_admin.username)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// `auth.jwt.issuer`: `iss` of issued tokens, checked on every token.
    pub issuer: String,
    /// `auth.jwt.access_ttl_seconds`: lifetime of access tokens.
    pub access_ttl_seconds: u64,
    /// `auth.jwt.refresh_ttl_seconds`: lifetime of refresh tokens.
    pub refresh_ttl_seconds: u64,
    /// `auth.jwt.secret` (`ALLSOURCE__AUTH__JWT__SECRET`): the signing secret (kid
    /// `default`), at least 32 bytes. Use either this or `auth.jwt.keys`.
    pub secret: String,
    /// `auth.jwt.keys`: signing keys `{kid, secret}`, newest first: the first signs, every
    /// one verifies tokens carrying its kid (key rotation).
    pub keys: Vec<JwtKeySettings>,
    /// `auth.jwt.retired_kids`: kids whose tokens are refused even if still in `keys`.
    pub retired_kids: Vec<String>,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeySettings {
    pub kid: String,
    pub secret: String,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAdminSettings {
    /// `auth.bootstrap_admin.username`: created as an admin on a start with no users.
    pub username: String,
    /// `auth.bootstrap_admin.password` (`ALLSOURCE__AUTH__BOOTSTRAP_ADMIN__PASSWORD`).
    pub password: String,
    /// `auth.bootstrap_admin.tenant`: the admin's tenant (default `default`). Only admins of
    /// `default` are operators (`Caller::is_operator`); another tenant gets an ordinary admin.
    pub tenant: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// `auth.login.max_failures`: failed logins of one username within the window before
    /// further attempts answer 429.
    pub max_failures: usize,
    /// `auth.login.window_seconds`: the throttling window.
    pub window_seconds: u64,
}

/// The kid of `auth.jwt.secret`.
pub const DEFAULT_KID: &str = "default";
/// Shortest signing secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

const SECRET_HELP: &str = "set ALLSOURCE__AUTH__JWT__SECRET (auth.jwt.secret) to at least 32 \
    random bytes, e.g. `export ALLSOURCE__AUTH__JWT__SECRET=$(openssl rand -base64 48)`, or run \
    with --dev for a local server without authentication";

/// Declares a setting with a fixed set of values: the enum, its names, `FromStr` and
/// `Deserialize` (a value outside the set is refused with the allowed values), `Display`.
macro_rules! setting_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The values the setting accepts.
            pub const ALLOWED: &'static [&'static str] = &[$($text),+];

            /// The setting's value as written in the configuration.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(raw: &str) -> Result<Self, String> {
                match raw {
                    $($text => Ok(Self::$variant),)+
                    other => Err(not_one_of(other, Self::ALLOWED)),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

fn not_one_of(value: &str, allowed: &[&str]) -> String {
    format!("\"{value}\" is not one of: {}", allowed.join(", "))
}

setting_enum! {
    /// `storage.backend`.
    Backend {
        /// The durable embedded store under `storage.data_dir` (default).
        Embedded = "embedded",
        /// Everything in memory, lost at exit.
        Memory = "memory",
        /// PostgreSQL at `storage.postgres.url`.
        Postgres = "postgres",
    }
}

setting_enum! {
    /// `storage.durability`: when the embedded store acknowledges an append.
    Durability {
        /// After the group's data is synced (default).
        Fsync = "fsync",
        /// After `write`; synced every `storage.fsync_interval_ms`.
        Interval = "interval",
        /// Never synced except when a segment is sealed and at shutdown.
        None = "none",
    }
}

setting_enum! {
    /// `log.format`.
    LogFormat {
        /// Human-readable lines (default).
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

setting_enum! {
    /// `rate_limit.backend`.
    RateLimitBackend {
        /// Each node has its own budget (default).
        Memory = "memory",
        /// One budget shared by every node on the same Redis.
        Redis = "redis",
    }
}

/// The durability mode with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityMode {
    Fsync,
    Interval(u64),
    None,
}

/// Levels a `log.level` directive may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// `log.level`: a tracing filter that is known to be usable: comma-separated directives, each
/// a level (`info`) or `target=level` (`allsource=debug`). A bare word that is not a level
/// (`verbose`) would be read by tracing as a target name, and the server would log nothing
/// else, so it is refused, as is anything tracing cannot parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    /// Checks `raw` (see the type's docs).
    ///
    /// # Errors
    /// What is wrong, and what is allowed.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let help = format!(
            "use a level ({}) or target=level directives separated by commas, e.g. \
             \"allsource=debug,tower_http=info\"",
            LOG_LEVELS.join(", ")
        );
        if raw.trim().is_empty() {
            return Err(format!("must not be empty: {help}"));
        }
        for directive in raw.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let bare = !directive.contains(['=', '[']);
            if bare && !LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
                return Err(format!("\"{directive}\" is not a level: {help}"));
            }
            if let Err(e) = directive.parse::<tracing_subscriber::filter::Directive>() {
                return Err(format!(
                    "\"{directive}\" is not a valid directive ({e}): {help}"
                ));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for LogFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn compatibility<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<CompatibilityMode, D::Error> {
    let raw = String::deserialize(deserializer)?;
    CompatibilityMode::parse(&raw).map_err(|_| {
        serde::de::Error::custom(not_one_of(&raw, &["NONE", "BACKWARD", "FORWARD", "FULL"]))
    })
}

/// A setting that cannot be used; the message names the key and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

impl SettingsError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub port: Option<u16>,
    pub host: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub dev: bool,
}

const DEFAULTS: &str = r#"
dev = false

[server]
host = "127.0.0.1"
port = 3900
max_body_bytes = 67108864

[storage]
backend = "embedded"
data_dir = "./data"
durability = "fsync"
fsync_interval_ms = 10
segment_bytes = 67108864
cache_bytes = 268435456

[storage.postgres]
url = "postgres://postgres@127.0.0.1:5432/allsource"
max_connections = 16
acquire_timeout_ms = 5000
read_url = ""
read_wait_ms = 250

[limits]
max_event_bytes = 1048576
max_batch_events = 10000

[cache]
enabled = true
max_capacity = 100000
ttl_seconds = 300
max_states = 100000

[projections]
poll_interval_ms = 1000
batch_size = 1000

[realtime]
feed_capacity = 1024
send_timeout_ms = 30000
postgres_poll_interval_ms = 1000

[auth]
enabled = true

[auth.jwt]
issuer = "allsource"
access_ttl_seconds = 900
refresh_ttl_seconds = 1209600
secret = ""
keys = []
retired_kids = []

[auth.bootstrap_admin]
username = ""
password = ""
tenant = "default"

[auth.login]
max_failures = 5
window_seconds = 900
[snapshots]
every_n_events = 100
keep_per_entity = 3
queue_capacity = 1024
[compaction]
enabled = true
interval_seconds = 60
min_files = 8
target_file_bytes = 134217728
max_small_file_age_seconds = 3600
[rate_limit]
enabled = true
backend = "memory"
redis_url = "redis://127.0.0.1:6379"

[log]
level = "info"
format = "text"

[policies]
enabled = true

[audit]
retention_days = 90
"#;

impl Settings {
    /// Loads defaults → `config_file` (or `./allsource.toml` if it exists) → environment →
    /// `overrides`, and validates the result.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, an unknown key, a value of the wrong type, or a
    /// value outside its allowed set.
    pub fn load(config_file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        Self::load_from(
            config_file,
            overrides,
            Environment::with_prefix("ALLSOURCE"),
        )
    }

    fn load_from(
        config_file: Option<&Path>,
        overrides: Overrides,
        env: Environment,
    ) -> anyhow::Result<Self> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        builder = match config_file {
            Some(path) => {
                if !path.exists() {
                    anyhow::bail!("config file {} does not exist", path.display());
                }
                builder.add_source(File::from(path).format(FileFormat::Toml))
            }
            None => {
                builder.add_source(File::new("allsource.toml", FileFormat::Toml).required(false))
            }
        };
        builder = builder.add_source(env.prefix_separator("__").separator("__").try_parsing(true));
        if let Some(port) = overrides.port {
            builder = builder.set_override("server.port", port)?;
        }
        if let Some(host) = overrides.host {
            builder = builder.set_override("server.host", host)?;
        }
        if let Some(dir) = overrides.data_dir {
            builder = builder.set_override("storage.data_dir", dir.to_string_lossy().as_ref())?;
        }
        if overrides.dev {
            builder = builder.set_override("dev", true)?;
        }
        let settings: Settings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(settings_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings for tests: memory-safe defaults, port 0, the given data dir, no file, no env.
    pub fn for_tests(data_dir: &Path) -> Self {
        let mut settings: Settings = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .unwrap_or_else(|e| unreachable!("built-in defaults are valid: {e}"));
        settings.server.port = 0;
        settings.storage.data_dir = data_dir.to_path_buf();
        // Explicit: tests that are not about authentication run without it.
        settings.auth.enabled = false;
        settings
    }

    /// Whether credentials are checked: `auth.enabled` and not `--dev`.
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled && !self.dev
    }

    /// The signing keys `(kid, secret)`, newest first.
    ///
    /// # Errors
    /// With auth on: no key, a key shorter than 32 bytes, both `auth.jwt.secret` and
    /// `auth.jwt.keys`, an empty kid.
    pub fn jwt_keys(&self) -> Result<Vec<(String, Vec<u8>)>, SettingsError> {
        let jwt = &self.auth.jwt;
        if !jwt.secret.is_empty() && !jwt.keys.is_empty() {
            return Err(SettingsError::new(
                "auth.jwt.secret",
                "set either auth.jwt.secret or auth.jwt.keys, not both (to rotate, list the \
                 old secret in auth.jwt.keys under kid \"default\")",
            ));
        }
        let keys: Vec<(String, Vec<u8>)> = if jwt.keys.is_empty() {
            if jwt.secret.is_empty() {
                return Err(SettingsError::new(
                    "auth.jwt.secret",
                    format!("authentication is on and no signing secret is set: {SECRET_HELP}"),
                ));
            }
            vec![(DEFAULT_KID.to_owned(), jwt.secret.as_bytes().to_vec())]
        } else {
            jwt.keys
                .iter()
                .map(|k| (k.kid.clone(), k.secret.as_bytes().to_vec()))
                .collect()
        };
        for (kid, secret) in &keys {
            if kid.trim().is_empty() {
                return Err(SettingsError::new("auth.jwt.keys", "every key needs a kid"));
            }
            if secret.len() < MIN_SECRET_BYTES {
                let key = if jwt.keys.is_empty() {
                    "auth.jwt.secret"
                } else {
                    "auth.jwt.keys"
                };
                return Err(SettingsError::new(
                    key,
                    format!(
                        "the signing secret of kid '{kid}' is {} bytes, too weak: {SECRET_HELP}",
                        secret.len()
                    ),
                ));
            }
        }
        if keys.iter().all(|(kid, _)| jwt.retired_kids.contains(kid)) {
            return Err(SettingsError::new(
                "auth.jwt.retired_kids",
                "every signing key is retired; keep at least one in auth.jwt.keys",
            ));
        }
        Ok(keys)
    }

    fn validate_auth(&self) -> Result<(), SettingsError> {
        let jwt = &self.auth.jwt;
        if jwt.issuer.trim().is_empty() {
            return Err(SettingsError::new("auth.jwt.issuer", "must not be empty"));
        }
        if jwt.access_ttl_seconds == 0 || jwt.access_ttl_seconds > 86_400 {
            return Err(SettingsError::new(
                "auth.jwt.access_ttl_seconds",
                "must be between 1 and 86400",
            ));
        }
        if jwt.refresh_ttl_seconds == 0 || jwt.refresh_ttl_seconds > 365 * 86_400 {
            return Err(SettingsError::new(
                "auth.jwt.refresh_ttl_seconds",
                "must be between 1 and 31536000",
            ));
        }
        if self.auth.login.max_failures == 0 || self.auth.login.window_seconds == 0 {
            return Err(SettingsError::new(
                "auth.login.max_failures",
                "auth.login.max_failures and auth.login.window_seconds must be at least 1",
            ));
        }
        let admin = &self.auth.bootstrap_admin;
        if allsource_domain::TenantId::parse(&admin.tenant).is_err() {
            return Err(SettingsError::new(
                "auth.bootstrap_admin.tenant",
                "must be 1 to 64 letters, digits, '_' or '-'",
            ));
        }
        if !admin.username.is_empty() || !admin.password.is_empty() {
            use allsource_application::use_cases::identity::{check_password, normalize_username};
            normalize_username(&admin.username).map_err(|m| {
                SettingsError::new(
                    "auth.bootstrap_admin.username",
                    format!("{m} (ALLSOURCE__AUTH__BOOTSTRAP_ADMIN__USERNAME)"),
                )
            })?;
            check_password(&admin.password).map_err(|m| {
                SettingsError::new(
                    "auth.bootstrap_admin.password",
                    format!("{m} (ALLSOURCE__AUTH__BOOTSTRAP_ADMIN__PASSWORD)"),
                )
            })?;
        }
        if self.auth_enabled() {
            self.jwt_keys()?;
        }
        Ok(())
    }

    /// Checks every value against its allowed set.
    ///
    /// # Errors
    /// The first invalid setting, naming its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.storage.durability == Durability::Interval && self.storage.fsync_interval_ms == 0 {
            return Err(SettingsError::new(
                "storage.fsync_interval_ms",
                "must be at least 1 with durability = \"interval\"",
            ));
        }
        if self.server.host.trim().is_empty() {
            return Err(SettingsError::new("server.host", "must not be empty"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(SettingsError::new(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.limits.max_event_bytes == 0
            || self.limits.max_event_bytes > self.server.max_body_bytes
        {
            return Err(SettingsError::new(
                "limits.max_event_bytes",
                "must be between 1 and server.max_body_bytes",
            ));
        }
        if self.limits.max_batch_events == 0 || self.limits.max_batch_events > 100_000 {
            return Err(SettingsError::new(
                "limits.max_batch_events",
                "must be between 1 and 100000",
            ));
        }
        if self.storage.segment_bytes < 4096 {
            return Err(SettingsError::new(
                "storage.segment_bytes",
                "must be at least 4096",
            ));
        }
        if self.cache.enabled && (self.cache.max_capacity == 0 || self.cache.ttl_seconds == 0) {
            return Err(SettingsError::new(
                "cache.max_capacity",
                "cache.max_capacity and cache.ttl_seconds must be at least 1 when cache.enabled",
            ));
        }
        if self.storage.postgres.max_connections == 0 {
            return Err(SettingsError::new(
                "storage.postgres.max_connections",
                "must be at least 1",
            ));
        }
        if !(10..=3_600_000).contains(&self.projections.poll_interval_ms) {
            return Err(SettingsError::new(
                "projections.poll_interval_ms",
                "must be between 10 and 3600000",
            ));
        }
        if !(100..=3_600_000).contains(&self.realtime.send_timeout_ms) {
            return Err(SettingsError::new(
                "realtime.send_timeout_ms",
                "must be between 100 and 3600000",
            ));
        }
        if !(1..=1_000_000).contains(&self.realtime.feed_capacity) {
            return Err(SettingsError::new(
                "realtime.feed_capacity",
                "must be between 1 and 1000000",
            ));
        }
        if !(10..=3_600_000).contains(&self.realtime.postgres_poll_interval_ms) {
            return Err(SettingsError::new(
                "realtime.postgres_poll_interval_ms",
                "must be between 10 and 3600000",
            ));
        }
        if !(1..=10_000).contains(&self.projections.batch_size) {
            return Err(SettingsError::new(
                "projections.batch_size",
                "must be between 1 and 10000",
            ));
        }
        self.validate_auth()?;
        if !(1..=1000).contains(&self.snapshots.keep_per_entity) {
            return Err(SettingsError::new(
                "snapshots.keep_per_entity",
                "must be between 1 and 1000",
            ));
        }
        if !(1..=1_000_000).contains(&self.snapshots.queue_capacity) {
            return Err(SettingsError::new(
                "snapshots.queue_capacity",
                "must be between 1 and 1000000",
            ));
        }
        if self.compaction.interval_seconds == 0 {
            return Err(SettingsError::new(
                "compaction.interval_seconds",
                "must be at least 1",
            ));
        }
        if self.compaction.min_files < 2 {
            return Err(SettingsError::new(
                "compaction.min_files",
                "must be at least 2 (merging one file into one gains nothing)",
            ));
        }
        if self.compaction.target_file_bytes < 1024 * 1024 {
            return Err(SettingsError::new(
                "compaction.target_file_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.audit.retention_days > 36_500 {
            return Err(SettingsError::new(
                "audit.retention_days",
                "must be at most 36500 (0 keeps records forever)",
            ));
        }
        if self.rate_limit.backend == RateLimitBackend::Redis
            && !(self.rate_limit.redis_url.starts_with("redis://")
                || self.rate_limit.redis_url.starts_with("rediss://")
                || self.rate_limit.redis_url.starts_with("redis+unix://"))
        {
            return Err(SettingsError::new(
                "rate_limit.redis_url",
                "must be a redis://, rediss:// or redis+unix:// URL",
            ));
        }
        self.webhooks.validate()?;
        self.pipelines.validate()?;
        self.analytics.validate()?;
        self.metrics.listen_addr()?;
        self.telemetry.otlp.validate()?;
        self.backup.validate()?;
        Ok(())
    }

    /// The durability mode with its interval (`storage.durability`,
    /// `storage.fsync_interval_ms`).
    pub fn durability(&self) -> DurabilityMode {
        match self.storage.durability {
            Durability::Fsync => DurabilityMode::Fsync,
            Durability::Interval => DurabilityMode::Interval(self.storage.fsync_interval_ms),
            Durability::None => DurabilityMode::None,
        }
    }
}

/// A configuration error of the `config` crate as a [`SettingsError`] naming the key, where it
/// names one.
fn settings_error(error: ConfigError) -> anyhow::Error {
    match error {
        ConfigError::At {
            error,
            origin,
            key: Some(key),
        } => SettingsError::new(&key, with_origin(error.to_string(), origin.as_deref())).into(),
        ConfigError::Type {
            origin,
            unexpected,
            expected,
            key: Some(key),
        } => SettingsError::new(
            &key,
            with_origin(
                format!("expected {expected}, found {unexpected}"),
                origin.as_deref(),
            ),
        )
        .into(),
        ConfigError::NotFound(key) => SettingsError::new(&key, "missing").into(),
        other => anyhow::anyhow!("invalid configuration: {other}"),
    }
}

fn with_origin(message: String, origin: Option<&str>) -> String {
    match origin {
        Some(origin) => format!("{message} (in {origin})"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Environment::with_prefix("ALLSOURCE").source(Some(map))
    }

    const SECRET: (&str, &str) = (
        "ALLSOURCE__AUTH__JWT__SECRET",
        "0123456789abcdef0123456789abcdef0123456789",
    );

    fn load(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let mut vars = vars.to_vec();
        if !vars.iter().any(|(k, _)| k.starts_with("ALLSOURCE__AUTH__")) {
            vars.push(SECRET);
        }
        Settings::load_from(None, Overrides::default(), env(&vars))
    }

    #[test]
    fn defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.host, "127.0.0.1");
        assert_eq!(s.server.port, 3900);
        assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(s.storage.backend, Backend::Embedded);
        assert_eq!(s.durability(), DurabilityMode::Fsync);
        assert_eq!(s.log.level.as_str(), "info");
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.rate_limit.backend, RateLimitBackend::Memory);
        assert_eq!(s.limits.max_event_bytes, 1024 * 1024);
        assert!(!s.dev);
        assert!(s.policies.enabled);
        assert_eq!(s.audit.retention_days, 90);
    }

    #[test]
    fn policy_and_audit_settings() {
        let s = load(&[
            ("ALLSOURCE__POLICIES__ENABLED", "false"),
            ("ALLSOURCE__AUDIT__RETENTION_DAYS", "0"),
        ])
        .unwrap();
        assert!(!s.policies.enabled);
        assert_eq!(s.audit.retention_days, 0);
        let err = load(&[("ALLSOURCE__AUDIT__RETENTION_DAYS", "40000")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("audit.retention_days"), "{err}");
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = load(&[
            ("ALLSOURCE__SERVER__PORT", "4000"),
            ("ALLSOURCE__SERVER__HOST", "0.0.0.0"),
            ("ALLSOURCE__STORAGE__BACKEND", "memory"),
            ("ALLSOURCE__STORAGE__DATA_DIR", "/var/lib/allsource"),
            ("ALLSOURCE__STORAGE__DURABILITY", "interval"),
            ("ALLSOURCE__STORAGE__FSYNC_INTERVAL_MS", "25"),
            ("ALLSOURCE__LIMITS__MAX_EVENT_BYTES", "2048"),
            (
                "ALLSOURCE__STORAGE__POSTGRES__URL",
                "postgres://u@db:5432/events",
            ),
            ("ALLSOURCE__STORAGE__POSTGRES__MAX_CONNECTIONS", "32"),
        ])
        .unwrap();
        assert_eq!(s.server.port, 4000);
        assert_eq!(s.server.host, "0.0.0.0");
        assert_eq!(s.storage.backend, Backend::Memory);
        assert_eq!(s.storage.data_dir, PathBuf::from("/var/lib/allsource"));
        assert_eq!(s.durability(), DurabilityMode::Interval(25));
        assert_eq!(s.limits.max_event_bytes, 2048);
        assert_eq!(s.storage.postgres.url, "postgres://u@db:5432/events");
        assert_eq!(s.storage.postgres.max_connections, 32);
    }

    #[test]
    fn schema_registry_settings() {
        let s = load(&[]).unwrap();
        assert_eq!(s.schemas, SchemaRegistrySettings::default());
        assert!(s.schemas.enforce_by_default);
        let s = load(&[
            ("ALLSOURCE__SCHEMAS__ENFORCE_BY_DEFAULT", "false"),
            ("ALLSOURCE__SCHEMAS__DEFAULT_COMPATIBILITY", "full"),
            ("ALLSOURCE__SCHEMAS__CACHE_TTL_MS", "250"),
        ])
        .unwrap();
        assert!(!s.schemas.enforce_by_default);
        assert_eq!(s.schemas.default_compatibility, CompatibilityMode::Full);
        assert_eq!(s.schemas.cache_ttl_ms, 250);
        let err = load(&[("ALLSOURCE__SCHEMAS__DEFAULT_COMPATIBILITY", "SOMETIMES")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("schemas.default_compatibility"), "{err}");
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "[server]\nport = 5000\nhost = \"::1\"\n").unwrap();
        let s = Settings::load_from(Some(&path), Overrides::default(), env(&[SECRET])).unwrap();
        assert_eq!((s.server.port, s.server.host.as_str()), (5000, "::1"));
        let s = Settings::load_from(
            Some(&path),
            Overrides::default(),
            env(&[("ALLSOURCE__SERVER__PORT", "5001"), SECRET]),
        )
        .unwrap();
        assert_eq!(s.server.port, 5001);
        let s = Settings::load_from(
            Some(&path),
            Overrides {
                port: Some(5002),
                data_dir: Some("/tmp/x".into()),
                dev: true,
                host: None,
            },
            env(&[("ALLSOURCE__SERVER__PORT", "5001"), SECRET]),
        )
        .unwrap();
        assert_eq!(s.server.port, 5002);
        assert_eq!(s.storage.data_dir, PathBuf::from("/tmp/x"));
        assert!(s.dev);
    }

    #[test]
    fn invalid_values_name_the_key_and_the_allowed_values() {
        let err = load(&[("ALLSOURCE__STORAGE__BACKEND", "mongo")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.backend") && err.contains("embedded, memory, postgres"),
            "{err}"
        );
        let err = load(&[("ALLSOURCE__STORAGE__DURABILITY", "sometimes")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.durability") && err.contains("fsync, interval, none"),
            "{err}"
        );
        let err = load(&[("ALLSOURCE__SERVER__PORT", "seventy")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = load(&[("ALLSOURCE__SERVER__PORT", "70000")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = load(&[("ALLSOURCE__LOG__FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.format"), "{err}");
        let err = load(&[
            ("ALLSOURCE__STORAGE__DURABILITY", "interval"),
            ("ALLSOURCE__STORAGE__FSYNC_INTERVAL_MS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("storage.fsync_interval_ms"), "{err}");
        let err = load(&[("ALLSOURCE__RATE_LIMIT__BACKEND", "memcached")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rate_limit.backend") && err.contains("memory, redis"),
            "{err}"
        );
        let err = load(&[("ALLSOURCE__LOG__FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid setting log.format:") && err.contains("text, json"),
            "{err}"
        );
        let err = load(&[("ALLSOURCE__SCHEMAS__DEFAULT_COMPATIBILITY", "SOMETIMES")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NONE, BACKWARD, FORWARD, FULL"), "{err}");
    }

    #[test]
    fn invalid_log_filters_stop_the_start() {
        for (level, shown) in [
            ("verbose", "\"verbose\" is not a level"),
            ("allsource=debug,loud", "\"loud\" is not a level"),
            (
                "allsource=sometimes",
                "\"allsource=sometimes\" is not a valid directive",
            ),
            ("", "must not be empty"),
        ] {
            let err = load(&[("ALLSOURCE__LOG__LEVEL", level)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid setting log.level:")
                    && err.contains(shown)
                    && err.contains("trace, debug, info, warn, error, off"),
                "{level}: {err}"
            );
        }
        for level in [
            "debug",
            "WARN",
            "allsource=debug,tower_http=info",
            "info,allsource=trace",
        ] {
            let s = load(&[("ALLSOURCE__LOG__LEVEL", level)]).unwrap();
            assert_eq!(s.log.level.as_str(), level);
        }
    }

    #[test]
    fn the_key_of_a_type_error_is_named_once() {
        let err = load(&[("ALLSOURCE__SERVER__PORT", "seventy")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid setting server.port:"), "{err}");
        assert_eq!(err.matches("server.port").count(), 1, "{err}");
    }

    #[test]
    fn pipeline_settings_have_defaults_come_from_the_environment_and_are_checked() {
        let s = load(&[]).unwrap();
        assert_eq!(s.pipelines, PipelineSettings::default());
        assert!(s.pipelines.effective_concurrency() >= 1);
        let s = load(&[
            ("ALLSOURCE__PIPELINES__CONCURRENCY", "3"),
            ("ALLSOURCE__PIPELINES__BATCH_EVENTS", "50"),
            ("ALLSOURCE__PIPELINES__CLOCK_GRACE_MS", "0"),
        ])
        .unwrap();
        assert_eq!(s.pipelines.effective_concurrency(), 3);
        assert_eq!(s.pipelines.batch_events, 50);
        assert_eq!(s.pipelines.clock_grace_ms, 0);
        for (key, value, named) in [
            (
                "ALLSOURCE__PIPELINES__BATCH_EVENTS",
                "0",
                "pipelines.batch_events",
            ),
            (
                "ALLSOURCE__PIPELINES__COMMIT_INTERVAL_MS",
                "0",
                "pipelines.commit_interval_ms",
            ),
            ("ALLSOURCE__PIPELINES__LEASE_MS", "10", "pipelines.lease_ms"),
            ("ALLSOURCE__PIPELINES__TICK_MS", "1", "pipelines.tick_ms"),
            (
                "ALLSOURCE__PIPELINES__CONCURRENCY",
                "5000",
                "pipelines.concurrency",
            ),
            ("ALLSOURCE__PIPELINES__CONCURRENCY", "many", "pipelines"),
        ] {
            let err = load(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn webhook_settings_have_defaults_come_from_the_environment_and_are_checked() {
        let s = load(&[]).unwrap();
        assert_eq!(s.webhooks, WebhookSettings::default());
        assert!(!s.webhooks.allow_private_destinations);
        let s = load(&[
            ("ALLSOURCE__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("ALLSOURCE__WEBHOOKS__MAX_ATTEMPTS", "7"),
            ("ALLSOURCE__WEBHOOKS__BACKOFF_BASE_MS", "10"),
            ("ALLSOURCE__WEBHOOKS__TIMEOUT_MS", "2000"),
        ])
        .unwrap();
        assert!(s.webhooks.allow_private_destinations);
        assert_eq!(s.webhooks.max_attempts, 7);
        assert_eq!(s.webhooks.backoff_base_ms, 10);
        assert_eq!(s.webhooks.timeout_ms, 2000);
        for (key, value, named) in [
            (
                "ALLSOURCE__WEBHOOKS__MAX_ATTEMPTS",
                "4",
                "webhooks.max_attempts",
            ),
            (
                "ALLSOURCE__WEBHOOKS__TIMEOUT_MS",
                "20000",
                "webhooks.lease_ms",
            ),
            (
                "ALLSOURCE__WEBHOOKS__TIMEOUT_MS",
                "5",
                "webhooks.timeout_ms",
            ),
            (
                "ALLSOURCE__WEBHOOKS__BACKOFF_MAX_MS",
                "10",
                "webhooks.backoff_max_ms",
            ),
            (
                "ALLSOURCE__WEBHOOKS__RESCAN_INTERVAL_MS",
                "0",
                "webhooks.rescan_interval_ms",
            ),
            (
                "ALLSOURCE__WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS",
                "sometimes",
                "webhooks",
            ),
        ] {
            let err = load(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn projection_settings_have_defaults_and_bounds() {
        let s = load(&[]).unwrap();
        assert_eq!(s.projections.poll_interval_ms, 1000);
        assert_eq!(s.projections.batch_size, 1000);
        let s = load(&[("ALLSOURCE__PROJECTIONS__BATCH_SIZE", "50")]).unwrap();
        assert_eq!(s.projections.batch_size, 50);
        let err = load(&[("ALLSOURCE__PROJECTIONS__BATCH_SIZE", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("projections.batch_size"), "{err}");
        let err = load(&[("ALLSOURCE__PROJECTIONS__POLL_INTERVAL_MS", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("projections.poll_interval_ms"), "{err}");
    }

    #[test]
    fn realtime_settings_have_defaults_and_bounds() {
        let s = load(&[]).unwrap();
        assert_eq!(s.realtime.postgres_poll_interval_ms, 1000);
        let s = load(&[("ALLSOURCE__REALTIME__POSTGRES_POLL_INTERVAL_MS", "250")]).unwrap();
        assert_eq!(s.realtime.postgres_poll_interval_ms, 250);
        for bad in ["0", "9", "3600001"] {
            let err = load(&[("ALLSOURCE__REALTIME__POSTGRES_POLL_INTERVAL_MS", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid setting realtime.postgres_poll_interval_ms"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn snapshot_settings_default_and_validate() {
        let s = load(&[]).unwrap();
        assert_eq!(s.snapshots.every_n_events, 100);
        assert_eq!(s.snapshots.keep_per_entity, 3);
        let s = load(&[
            ("ALLSOURCE__SNAPSHOTS__EVERY_N_EVENTS", "0"),
            ("ALLSOURCE__SNAPSHOTS__KEEP_PER_ENTITY", "7"),
        ])
        .unwrap();
        assert_eq!(
            (s.snapshots.every_n_events, s.snapshots.keep_per_entity),
            (0, 7)
        );
        for (key, value, name) in [
            (
                "ALLSOURCE__SNAPSHOTS__KEEP_PER_ENTITY",
                "0",
                "snapshots.keep_per_entity",
            ),
            (
                "ALLSOURCE__SNAPSHOTS__QUEUE_CAPACITY",
                "0",
                "snapshots.queue_capacity",
            ),
            (
                "ALLSOURCE__SNAPSHOTS__EVERY_N_EVENTS",
                "-1",
                "every_n_events",
            ),
        ] {
            let err = load(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "[server]\nprot = 5000\n").unwrap();
        let err = Settings::load_from(Some(&path), Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
        let missing = dir.path().join("missing.toml");
        assert!(Settings::load_from(Some(&missing), Overrides::default(), env(&[])).is_err());
    }

    #[test]
    fn auth_is_on_by_default_and_needs_a_strong_secret() {
        let err = load(&[("ALLSOURCE__AUTH__ENABLED", "true")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.jwt.secret")
                && err.contains("ALLSOURCE__AUTH__JWT__SECRET")
                && err.contains("openssl rand -base64 48"),
            "{err}"
        );
        let err = load(&[("ALLSOURCE__AUTH__JWT__SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.jwt.secret") && err.contains("too weak"),
            "{err}"
        );
        let s = load(&[]).unwrap();
        assert!(s.auth_enabled());
        assert_eq!(s.auth.jwt.issuer, "allsource");
        assert_eq!(s.auth.jwt.access_ttl_seconds, 900);
        assert_eq!(s.jwt_keys().unwrap()[0].0, DEFAULT_KID);
        // Off: no secret needed.
        let s = load(&[("ALLSOURCE__AUTH__ENABLED", "false")]).unwrap();
        assert!(!s.auth_enabled());
        let s = Settings::load_from(
            None,
            Overrides {
                dev: true,
                ..Overrides::default()
            },
            env(&[]),
        )
        .unwrap();
        assert!(!s.auth_enabled());
    }

    #[test]
    fn bootstrap_admin_comes_from_the_environment_and_is_checked() {
        let s = load(&[
            SECRET,
            ("ALLSOURCE__AUTH__BOOTSTRAP_ADMIN__USERNAME", "root"),
            (
                "ALLSOURCE__AUTH__BOOTSTRAP_ADMIN__PASSWORD",
                "a long enough password",
            ),
        ])
        .unwrap();
        assert_eq!(s.auth.bootstrap_admin.username, "root");
        assert_eq!(s.auth.bootstrap_admin.tenant, "default");
        assert!(!format!("{s:?}").contains("a long enough password"));
        let err = load(&[
            SECRET,
            ("ALLSOURCE__AUTH__BOOTSTRAP_ADMIN__USERNAME", "root"),
            ("ALLSOURCE__AUTH__BOOTSTRAP_ADMIN__PASSWORD", "short"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.bootstrap_admin.password"), "{err}");
    }

    #[test]
    fn rotation_keys_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "[auth.jwt]\nretired_kids = [\"k0\"]\n[[auth.jwt.keys]]\nkid = \"k2\"\n\
             secret = \"22222222222222222222222222222222\"\n[[auth.jwt.keys]]\nkid = \"k1\"\n\
             secret = \"11111111111111111111111111111111\"\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&path), Overrides::default(), env(&[])).unwrap();
        let kids: Vec<String> = s.jwt_keys().unwrap().into_iter().map(|k| k.0).collect();
        assert_eq!(kids, ["k2", "k1"]);
        assert_eq!(s.auth.jwt.retired_kids, ["k0"]);
        let err = Settings::load_from(Some(&path), Overrides::default(), env(&[SECRET]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
    }

    #[test]
    fn test_settings_listen_on_any_port() {
        let s = Settings::for_tests(Path::new("/tmp/t"));
        assert_eq!(s.server.port, 0);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn compaction_settings_load_and_are_validated_by_key() {
        let s = load(&[]).unwrap();
        assert!(s.compaction.enabled);
        assert_eq!(s.compaction.min_files, 8);
        let s = load(&[
            ("ALLSOURCE__COMPACTION__ENABLED", "false"),
            ("ALLSOURCE__COMPACTION__INTERVAL_SECONDS", "5"),
            ("ALLSOURCE__COMPACTION__MIN_FILES", "3"),
            ("ALLSOURCE__COMPACTION__TARGET_FILE_BYTES", "2097152"),
            ("ALLSOURCE__COMPACTION__MAX_SMALL_FILE_AGE_SECONDS", "0"),
        ])
        .unwrap();
        assert!(!s.compaction.enabled);
        assert_eq!(s.compaction.interval_seconds, 5);
        assert_eq!(s.compaction.min_files, 3);
        assert_eq!(s.compaction.target_file_bytes, 2 * 1024 * 1024);
        assert_eq!(s.compaction.max_small_file_age_seconds, 0);
        for (var, value, key) in [
            (
                "ALLSOURCE__COMPACTION__INTERVAL_SECONDS",
                "0",
                "compaction.interval_seconds",
            ),
            (
                "ALLSOURCE__COMPACTION__MIN_FILES",
                "1",
                "compaction.min_files",
            ),
            (
                "ALLSOURCE__COMPACTION__TARGET_FILE_BYTES",
                "1000",
                "compaction.target_file_bytes",
            ),
        ] {
            let err = load(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}

//! The application: the one place where adapters are chosen and use cases wired.
//!
//! Start-up order: bind the listener, serve at once (`/health` answers, `/health/ready` says
//! 503 and the API answers `unavailable`), recover the store in the background, then hand over
//! to it. Shutdown (SIGTERM, Ctrl-C, or the future given to [`Application::run_until`]): stop
//! accepting, let in-flight requests (appends waiting for their fsync) finish, then shut the
//! store down, which syncs everything acknowledged. Background work that follows the log (the
//! projection runner, the webhook workers) starts once recovery has finished and stops before
//! the store shuts down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use allsource_application::analytics::{Analytics, AnalyticsConfig};
use allsource_application::observability::{Lag, LagProbe, LagSources};
use allsource_application::pipelines::{PipelineConfig, PipelineDeps, Pipelines, ReadLookups};
use allsource_application::ports::{AuditLog, RateLimiter};
use allsource_application::ports::{Clock, Compactor, EventStore, NoCompaction, StateStore};
use allsource_application::projections::{
    ProjectionEngine, ProjectionNotifier, ProjectionRunner, Projections, ReplayJobs,
};
use allsource_application::quota::{QuotaGate, TenantGate, Unlimited};
use allsource_application::subscriptions::CommitFeed;
use allsource_application::supervise::supervise;
use allsource_application::use_cases::consumer_groups::ConsumerGroups;
use allsource_application::use_cases::identity::{Identity, IdentityConfig, IdentityDeps};
use allsource_application::use_cases::{
    Admission, Compaction, Consumers, ConsumersDeps, Health, PurgeNamespaces,
};
use allsource_application::use_cases::{
    AppendEvents, AppendLimits, AuditTrail, Policies, ReadEvents, SchemaRegistry, SchemaSettings,
    SnapshotArchive, SnapshotPolicy, SnapshotTrigger, Snapshots, Tenants,
};
use allsource_application::webhooks::{WebhookConfig, WebhookDeps, Webhooks};
use allsource_infrastructure::audit::StateAuditLog;
use allsource_infrastructure::cache::{CacheConfig, CachedStore, MokaStateCache};
use allsource_infrastructure::embedded::{
    CompactionConfig, CompactionFailpoint, Durability, EmbeddedConfig, EmbeddedStore,
};
use allsource_infrastructure::identity::{Argon2Hasher, JwtSigner, OsSecrets, SigningKey};
use allsource_infrastructure::postgres::{PostgresConfig, PostgresStore};
use allsource_infrastructure::rate_limit::{MemoryRateLimiter, RedisRateLimiter};
use allsource_infrastructure::sql::{DataFusionEngine, SqlEngineConfig};
use allsource_infrastructure::startup::StartingSealedFiles;
use allsource_infrastructure::state::{FileStateStore, MemoryStateStore, PostgresStateStore};
use allsource_infrastructure::webhooks::{HttpWebhookSender, WebhookSenderConfig};
use allsource_infrastructure::{
    JsonSchemaValidator, MemoryStore, StartingCompactor, StartingStateStore, StartingStore,
    SystemClock,
};
use allsource_presentation::metrics::Collector;
use allsource_presentation::{AppState, AuthMode, HttpLimits, MetricsEndpoint};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::settings::{Backend, DurabilityMode, RateLimitBackend, Settings};

/// A bound, serving-ready AllSource server.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Arc<StartingStore>,
    recovery: JoinHandle<anyhow::Result<()>>,
    addr: SocketAddr,
    /// Started once recovery has finished; stopped before the store shuts down.
    projections: ProjectionRunner,
    /// Its unwritten usage counters are written at shutdown.
    tenants: Option<Tenants>,
    /// Closed when shutdown begins, so the streams that follow the log end.
    feed: Arc<CommitFeed>,
    /// Its waiting long polls are ended when shutdown starts.
    consumer_groups: ConsumerGroups,
    /// Delivery starts once recovery has finished; stopped before the store shuts down.
    webhooks: Webhooks,
    /// Run once recovery has finished; stopped before the store shuts down.
    pipelines: Pipelines,
    /// `/metrics`, when metrics are on.
    metrics: Option<MetricsEndpoint>,
    /// `metrics.listen`: the separate scrape address, bound.
    scrape_listener: Option<TcpListener>,
    /// The settings the server started with and the parts a reload changes.
    started_with: Settings,
    policies: Policies,
    /// Set by [`Application::reload_on_sighup`].
    reloader: Option<Arc<crate::reload::Reloader>>,
}

/// The stores that recovery opens and hands over to the stand-ins the router already holds.
struct Stores {
    events: Arc<StartingStore>,
    state: Arc<StartingStateStore>,
    /// With auth on: the identity use cases, for the bootstrap admin once state is ready.
    identity: Option<Identity>,
    compactor: Arc<StartingCompactor>,
    /// Seeded with the default policies once the state store is ready.
    policies: Policies,
    /// Pruned by `audit.retention_days`.
    audit: Arc<StateAuditLog>,
    /// Where the opened store announces its commits to the followers of the log.
    feed: Arc<CommitFeed>,
    /// The embedded store's Parquet files, for the SQL engine.
    sealed: Arc<StartingSealedFiles>,
    /// What backups cut, once the embedded store is recovered.
    backup: Arc<allsource_infrastructure::backup::StartingBackupSource>,
}

/// The identity use cases over the (starting) state store, with auth on.
fn build_identity(
    settings: &Settings,
    state: Arc<dyn StateStore>,
    audit: Arc<dyn AuditLog>,
    tenants: Option<&Tenants>,
) -> anyhow::Result<Option<Identity>> {
    if !settings.auth_enabled() {
        return Ok(None);
    }
    let keys = settings
        .jwt_keys()?
        .into_iter()
        .map(|(kid, secret)| SigningKey { kid, secret })
        .collect();
    let jwt = &settings.auth.jwt;
    let signer = JwtSigner::new(keys, jwt.retired_kids.clone(), &jwt.issuer)?;
    let config = IdentityConfig {
        issuer: jwt.issuer.clone(),
        access_ttl_secs: i64::try_from(jwt.access_ttl_seconds).unwrap_or(i64::MAX),
        refresh_ttl_secs: i64::try_from(jwt.refresh_ttl_seconds).unwrap_or(i64::MAX),
        max_login_failures: settings.auth.login.max_failures,
        login_window_secs: i64::try_from(settings.auth.login.window_seconds).unwrap_or(i64::MAX),
    };
    let deps = IdentityDeps {
        state,
        hasher: Arc::new(Argon2Hasher),
        signer: Arc::new(signer),
        secrets: Arc::new(OsSecrets),
        audit,
        clock: Arc::new(SystemClock),
        quotas: quota_gate(tenants),
        tenants: match tenants {
            Some(tenants) => Arc::new(tenants.clone()) as Arc<dyn TenantGate>,
            None => Arc::new(Unlimited),
        },
    };
    let identity = Identity::new(deps, config);
    if let Some(tenants) = tenants {
        // A deleted tenant takes its users, keys and logins with it.
        tenants.add_members(identity.tenant_members());
    }
    Ok(Some(identity))
}

impl Application {
    /// Binds the listener and starts recovering the store in the background.
    ///
    /// # Errors
    /// Invalid settings, a data dir that cannot be created, or an address that cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        // Installed before anything records: the handles the engine takes at open go to it.
        let metrics_handle = if settings.metrics.enabled {
            crate::telemetry::install_metrics()
        } else {
            None
        };
        let backend = settings.storage.backend;
        if !settings.auth_enabled() {
            tracing::warn!(
                "DEVELOPMENT MODE: authentication is off; every request acts as an admin of \
                 tenant 'default'. Never expose this server."
            );
        }
        let store = Arc::new(StartingStore::new(backend.as_str()));
        // Commit notifications of the store (opened later, by recovery) for every follower.
        let feed = Arc::new(CommitFeed::new(settings.realtime.feed_capacity));
        let as_port: Arc<dyn EventStore> = store.clone();
        let sealed = Arc::new(StartingSealedFiles::new());
        let backup_source = crate::backup::starting_source(backend);
        let state_store = Arc::new(StartingStateStore::new());
        let projection_engine = Arc::new(ProjectionEngine::new(
            as_port.clone(),
            state_store.clone(),
            settings.projections.batch_size,
        ));
        let projections = ProjectionRunner::new(
            projection_engine.clone(),
            std::time::Duration::from_millis(settings.projections.poll_interval_ms),
        );
        let schemas = Arc::new(SchemaRegistry::new(
            state_store.clone(),
            Arc::new(JsonSchemaValidator::new()),
            Arc::new(SystemClock),
            SchemaSettings {
                enforce_by_default: settings.schemas.enforce_by_default,
                default_compatibility: settings.schemas.default_compatibility,
                cache_ttl: std::time::Duration::from_millis(settings.schemas.cache_ttl_ms),
            },
        ));
        let compactor = Arc::new(StartingCompactor::new());
        // The audit log and the policies live in the state store, so they are as durable as
        // the backend's state and need no storage of their own.
        let audit_log = Arc::new(StateAuditLog::new(state_store.clone()));
        let policies = Policies::new(
            state_store.clone(),
            audit_log.clone(),
            Arc::new(SystemClock),
            settings.policies.enabled,
        );
        let state_port: Arc<dyn StateStore> = state_store.clone();
        let reads = if settings.cache.max_states > 0 {
            ReadEvents::with_state_cache(
                as_port.clone(),
                Arc::new(MokaStateCache::new(settings.cache.max_states)),
            )
        } else {
            ReadEvents::new(as_port.clone())
        }
        .with_snapshots(SnapshotArchive::new(state_port.clone()));
        let tenancy = tenancy(
            &settings,
            state_store.clone(),
            audit_log.clone(),
            reads.clone(),
        )?;
        let tenants = tenancy.tenants.clone();
        let identity = build_identity(
            &settings,
            state_store.clone(),
            audit_log.clone(),
            tenants.as_ref(),
        )?;
        let snapshot_policy = SnapshotPolicy {
            every_n_events: settings.snapshots.every_n_events,
            keep_per_entity: settings.snapshots.keep_per_entity,
        };
        let snapshots = Snapshots::new(
            as_port.clone(),
            state_port.clone(),
            Arc::new(SystemClock),
            snapshot_policy,
        );
        let mut append = AppendEvents::new(
            as_port.clone(),
            AppendLimits {
                max_event_bytes: settings.limits.max_event_bytes,
                max_batch_events: settings.limits.max_batch_events,
            },
        )
        // Schema enforcement: events of an enforced subject must pass its latest schema.
        .with_guard(schemas.clone())
        .with_guard(Arc::new(ProjectionNotifier::new(projection_engine.clone())));
        if let Some(tenants) = &tenants {
            // A deleted tenant takes its consumers, consumer groups and webhooks with it.
            tenants.add_members(Arc::new(PurgeNamespaces::new(
                state_port.clone(),
                vec![
                    allsource_application::use_cases::CONSUMERS_NAMESPACE,
                    allsource_application::use_cases::consumer_groups::NAMESPACE,
                    allsource_application::webhooks::records::DEFINITIONS,
                    allsource_application::webhooks::records::CURSORS,
                    allsource_application::webhooks::records::DELIVERIES,
                    allsource_application::pipelines::records::DEFINITIONS,
                    allsource_application::pipelines::records::CHECKPOINTS,
                    allsource_application::pipelines::records::RESULTS,
                ],
            )));
            // Quotas of events per day and storage: checked before, counted after.
            append = append.with_guard(Arc::new(tenants.clone()));
            // Usage changes left unwritten by busy moments are written within a second.
            let tenants = tenants.clone();
            supervise("usage flush", move || flush_usage(tenants.clone()));
        }
        if snapshot_policy.every_n_events > 0 {
            let scheduler = allsource_application::use_cases::BackgroundSnapshots::start(
                snapshots.clone(),
                settings.snapshots.queue_capacity,
            );
            append = append.with_guard(Arc::new(SnapshotTrigger::new(
                snapshot_policy.every_n_events,
                scheduler,
            )));
        }
        // Consumer groups keep their state in the state store and wait on the commit feed.
        let consumer_groups = ConsumerGroups::new(
            as_port.clone(),
            feed.clone(),
            state_port.clone(),
            audit_log.clone(),
            Arc::new(SystemClock),
        );
        let webhooks = build_webhooks(
            &settings,
            WebhookParts {
                store: as_port.clone(),
                feed: feed.clone(),
                state: state_port.clone(),
                quotas: quota_gate(tenants.as_ref()),
                audit: audit_log.clone(),
                tenants: match &tenants {
                    Some(tenants) => Arc::new(tenants.clone()) as Arc<dyn TenantGate>,
                    None => Arc::new(Unlimited),
                },
            },
        )?;
        let projections_api =
            Projections::new(projection_engine.clone(), quota_gate(tenants.as_ref()));
        let pipelines = build_pipelines(
            &settings,
            PipelineDeps {
                store: as_port.clone(),
                feed: feed.clone(),
                state: state_port.clone(),
                append: append.clone(),
                lookups: Arc::new(ReadLookups::new(reads.clone(), projections_api.clone())),
                quotas: quota_gate(tenants.as_ref()),
                audit: audit_log.clone(),
                tenants: match &tenants {
                    Some(tenants) => Arc::new(tenants.clone()) as Arc<dyn TenantGate>,
                    None => Arc::new(Unlimited),
                },
            },
        );
        let consumers = Consumers::new(ConsumersDeps {
            store: as_port.clone(),
            state: state_port.clone(),
            feed: feed.clone(),
            audit: audit_log.clone(),
            clock: Arc::new(SystemClock),
            quotas: quota_gate(tenancy.tenants.as_ref()),
        });
        let state = AppState::from(allsource_presentation::AppServices {
            append,
            reads,
            health: Health::new(env!("CARGO_PKG_VERSION"), as_port.clone()),
            projections: projections_api,
            replays: ReplayJobs::new(projection_engine.clone()),
            schemas,
            // With auth off (`--dev`, `auth.enabled = false`), as documented, every request
            // is an admin of tenant `default`.
            auth: match &identity {
                Some(identity) => AuthMode::Enabled(Arc::new(identity.clone())),
                None => AuthMode::Disabled,
            },
            identity: identity.clone(),
            snapshots,
            compaction: Compaction::new(compactor.clone()),
            audit: AuditTrail::new(audit_log.clone()),
            policies: policies.clone(),
            admission: Admission::for_tenants(tenancy.tenants.clone(), tenancy.rate_limiter),
            consumers: consumers.clone(),
            tenants: tenancy.tenants,
            consumer_groups: consumer_groups.clone(),
            webhooks: webhooks.clone(),
            pipelines: pipelines.clone(),
            analytics: build_analytics(&settings, as_port.clone(), sealed.clone())?,
            backups: crate::backup::backups(&settings, backup_source.clone())?,
        });
        let router = allsource_presentation::router(
            state,
            HttpLimits {
                max_body_bytes: settings.server.max_body_bytes,
                stream_send_timeout: std::time::Duration::from_millis(
                    settings.realtime.send_timeout_ms,
                ),
            },
        );
        let metrics = metrics_handle.map(|handle| {
            let lags = LagProbe::new(LagSources {
                projections: projection_engine.clone(),
                pipelines: pipelines.clone(),
                consumers: consumers.clone(),
                consumer_groups: consumer_groups.clone(),
                tenants: tenants.clone(),
            });
            MetricsEndpoint::new(handle, settings.metrics.public, vec![lag_collector(lags)])
        });
        let router = match &metrics {
            Some(endpoint) => allsource_presentation::with_metrics(router, endpoint.clone()),
            None => router,
        };
        let scrape_listener = match (settings.metrics.listen_addr()?, &metrics) {
            (Some(address), Some(_)) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (metrics.listen)"))?,
            ),
            _ => None,
        };
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address} (server.host, server.port)"))?;
        let addr = listener.local_addr()?;
        let started_with = settings.clone();
        let recovery = tokio::spawn(recover(
            settings,
            backend,
            Stores {
                events: store.clone(),
                state: state_store,
                identity,
                compactor,
                policies: policies.clone(),
                audit: audit_log,
                feed: feed.clone(),
                sealed,
                backup: backup_source,
            },
        ));
        Ok(Self {
            listener,
            router,
            store,
            recovery,
            addr,
            projections,
            tenants,
            feed,
            consumer_groups,
            webhooks,
            pipelines,
            metrics,
            scrape_listener,
            started_with,
            policies,
            reloader: None,
        })
    }

    /// Re-reads the settings from `source` on every SIGHUP and applies what can change while
    /// serving (see [`crate::reload`]); `telemetry` is the installed subscriber, whose log
    /// filter a reload replaces.
    #[must_use]
    pub fn reload_on_sighup(
        mut self,
        source: crate::reload::SettingsSource,
        telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    ) -> Self {
        self.reloader = Some(Arc::new(crate::reload::Reloader::new(
            source,
            self.started_with.clone(),
            telemetry,
            self.metrics.clone(),
            self.policies.clone(),
        )));
        self
    }

    /// The address `metrics.listen` bound (with the real port when 0 was asked).
    pub fn scrape_addr(&self) -> Option<SocketAddr> {
        self.scrape_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// `/metrics`, when metrics are on (its exposure changes on reload).
    pub fn metrics_endpoint(&self) -> Option<MetricsEndpoint> {
        self.metrics.clone()
    }

    /// The address the server listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
    ///
    /// # Errors
    /// Recovery failed (the message says what to do), or serving failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    ///
    /// # Errors
    /// Recovery failed, or serving failed.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            store,
            mut recovery,
            addr,
            projections,
            tenants,
            feed,
            consumer_groups,
            webhooks,
            pipelines,
            metrics,
            scrape_listener,
            started_with: _,
            policies: _,
            reloader,
        } = self;
        let reloading = reloader.map(|r| tokio::spawn(crate::reload::on_sighup(r)));
        tracing::info!(%addr, "listening");
        let (stop_scrape, scrape_stopped) = tokio::sync::oneshot::channel::<()>();
        let scrape = match (scrape_listener, metrics) {
            (Some(listener), Some(endpoint)) => {
                if let Ok(scrape_addr) = listener.local_addr() {
                    tracing::info!(%scrape_addr, "serving /metrics without credentials (metrics.listen)");
                }
                let router = allsource_presentation::scrape_only_router(endpoint);
                Some(tokio::spawn(allsource_presentation::serve(
                    listener,
                    router,
                    async move {
                        let _ = scrape_stopped.await;
                    },
                )))
            }
            _ => None,
        };
        // Long polls end as soon as shutdown starts, so they do not hold the graceful stop.
        let shutdown = async move {
            shutdown.await;
            consumer_groups.stop_waiting();
        };
        // With the peer address (callers without credentials are rate-limited per client) and
        // hyper's limits above the router's own (414/431 problem documents).
        let shutdown = async move {
            shutdown.await;
            // Streams (WebSocket, SSE) end now; otherwise their connections would keep the
            // graceful shutdown waiting for ever.
            feed.close();
        };
        let server = allsource_presentation::serve(listener, router, shutdown);
        tokio::pin!(server);
        let mut runner = None;
        tokio::select! {
            served = &mut server => {
                // Stopped before recovery finished: nothing was acknowledged by this run.
                recovery.abort();
                served.context("server error")?;
            }
            outcome = &mut recovery => {
                outcome.context("recovery task failed")??;
                runner = Some(projections.spawn());
                webhooks.start();
                pipelines.start();
                server.await.context("server error")?;
            }
        }
        if let Some(runner) = runner {
            runner.stop().await;
        }
        webhooks.stop().await;
        pipelines.stop().await;
        if let Some(tenants) = tenants {
            tenants.flush_all().await;
        }
        if let Some(reloading) = reloading {
            reloading.abort();
        }
        let _ = stop_scrape.send(());
        if let Some(scrape) = scrape {
            let _ = scrape.await;
        }
        finish(&store).await
    }
}

/// Sets the lag gauges (`stat` = `max`, `sum`, `count`) before each scrape.
fn lag_collector(lags: LagProbe) -> Collector {
    Arc::new(move || {
        let lags = lags.clone();
        Box::pin(async move {
            set_lag("allsource_projection_lag_events", lags.projections().await);
            set_lag("allsource_pipeline_lag_events", lags.pipelines().await);
            set_lag("allsource_consumer_lag_events", lags.consumers().await);
            set_lag(
                "allsource_consumer_group_lag_events",
                lags.consumer_groups().await,
            );
        })
    })
}

#[allow(clippy::cast_precision_loss)]
fn set_lag(name: &'static str, lag: Lag) {
    metrics::gauge!(name, "stat" => "max").set(lag.max as f64);
    metrics::gauge!(name, "stat" => "sum").set(lag.sum as f64);
    metrics::gauge!(name, "stat" => "count").set(lag.count as f64);
}

/// What the webhooks share with the rest of the server.
struct WebhookParts {
    store: Arc<dyn EventStore>,
    feed: Arc<CommitFeed>,
    state: Arc<dyn StateStore>,
    quotas: Arc<dyn QuotaGate>,
    audit: Arc<dyn AuditLog>,
    tenants: Arc<dyn TenantGate>,
}

/// The webhook use cases and workers of `webhooks.*`, delivering through reqwest, with the
/// REST API's event shape in their bodies.
fn build_webhooks(settings: &Settings, parts: WebhookParts) -> anyhow::Result<Webhooks> {
    let w = &settings.webhooks;
    if w.allow_private_destinations {
        tracing::warn!(
            "webhooks.allow_private_destinations = true: webhooks may deliver to loopback and \
             private addresses"
        );
    }
    let ms = std::time::Duration::from_millis;
    let sender = HttpWebhookSender::new(WebhookSenderConfig {
        timeout: ms(w.timeout_ms),
        allow_private_destinations: w.allow_private_destinations,
    })?;
    Ok(Webhooks::new(
        WebhookDeps {
            store: parts.store,
            feed: parts.feed,
            state: parts.state,
            sender: Arc::new(sender),
            encoder: Arc::new(allsource_presentation::handlers::webhooks::EventJson),
            quotas: parts.quotas,
            audit: parts.audit,
            tenants: parts.tenants,
        },
        WebhookConfig {
            max_attempts: w.max_attempts,
            backoff_base: ms(w.backoff_base_ms),
            backoff_max: ms(w.backoff_max_ms),
            lease: ms(w.lease_ms),
            rescan_interval: ms(w.rescan_interval_ms),
            // One process per data dir (its lock): a restart after a crash is the same node.
            node: match settings.storage.backend {
                Backend::Embedded | Backend::Memory => Some("local".to_owned()),
                Backend::Postgres => None,
            },
        },
    ))
}

/// The analytics, DSL and SQL use cases over the DataFusion engine of `analytics.*`.
fn build_analytics(
    settings: &Settings,
    store: Arc<dyn EventStore>,
    sealed: Arc<StartingSealedFiles>,
) -> anyhow::Result<Analytics> {
    let a = &settings.analytics;
    let engine = DataFusionEngine::new(
        store,
        Some(sealed),
        SqlEngineConfig {
            threads: a.effective_threads(),
            memory_bytes: a.memory_mb.saturating_mul(1024 * 1024),
        },
    )?;
    Ok(Analytics::new(
        Arc::new(engine),
        Arc::new(SystemClock),
        AnalyticsConfig {
            max_range_days: a.max_range_days,
            max_buckets: a.max_buckets,
            sql_max_rows: a.sql_max_rows,
            scan_max_rows: a.scan_max_rows,
            timeout: std::time::Duration::from_millis(a.timeout_ms),
        },
    ))
}

/// The pipeline use cases and workers of `pipelines.*`.
fn build_pipelines(settings: &Settings, deps: PipelineDeps) -> Pipelines {
    let p = &settings.pipelines;
    let ms = std::time::Duration::from_millis;
    Pipelines::new(
        deps,
        PipelineConfig {
            commit_interval: ms(p.commit_interval_ms),
            batch_events: p.batch_events,
            tick: ms(p.tick_ms),
            clock_grace: ms(p.clock_grace_ms),
            lease: ms(p.lease_ms),
            rescan_interval: ms(p.rescan_interval_ms),
            concurrency: p.effective_concurrency(),
            // As for webhooks: one process per data dir is the same node after a restart.
            node: match settings.storage.backend {
                Backend::Embedded | Backend::Memory => Some("local".to_owned()),
                Backend::Postgres => None,
            },
        },
    )
}

/// The quota gate of features that count against a tenant's quotas.
fn quota_gate(tenants: Option<&Tenants>) -> Arc<dyn QuotaGate> {
    match tenants {
        Some(tenants) => Arc::new(tenants.clone()),
        None => Arc::new(Unlimited),
    }
}

/// The tenant use cases and the rate limiter.
struct Tenancy {
    tenants: Option<Tenants>,
    rate_limiter: Option<Arc<dyn RateLimiter>>,
}

/// Tenants (status, quotas, usage) over the state store, and the rate limiter of
/// `rate_limit.*`.
fn tenancy(
    settings: &Settings,
    state: Arc<StartingStateStore>,
    audit: Arc<dyn AuditLog>,
    reads: ReadEvents,
) -> anyhow::Result<Tenancy> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tenants = Tenants::new(state, audit, reads, clock.clone());
    let rate_limiter: Option<Arc<dyn RateLimiter>> = if !settings.rate_limit.enabled {
        None
    } else if settings.rate_limit.backend == RateLimitBackend::Redis {
        Some(Arc::new(RedisRateLimiter::new(
            &settings.rate_limit.redis_url,
        )?))
    } else {
        Some(Arc::new(MemoryRateLimiter::new(clock)))
    };
    Ok(Tenancy {
        tenants: Some(tenants),
        rate_limiter,
    })
}

async fn finish(store: &StartingStore) -> anyhow::Result<()> {
    tracing::info!("stopped accepting requests; flushing the store");
    store
        .shutdown()
        .await
        .context("final flush of the store failed")?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Opens the configured stores (recovering them) and hands them to the server.
async fn recover(settings: Settings, backend: Backend, target: Stores) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let started = Instant::now();
    let mut compactor: Arc<dyn Compactor> = Arc::new(NoCompaction::new(backend.as_str()));
    let (store, state): (Arc<dyn EventStore>, Arc<dyn StateStore>) = match backend {
        Backend::Memory => {
            tracing::warn!("storage.backend = memory: events are lost when the process exits");
            (
                Arc::new(MemoryStore::new(clock).with_feed(target.feed.clone())),
                Arc::new(MemoryStateStore::new()),
            )
        }
        Backend::Embedded => {
            let data_dir = settings.storage.data_dir.clone();
            std::fs::create_dir_all(&data_dir).with_context(|| {
                format!(
                    "cannot create the data dir {} (storage.data_dir)",
                    data_dir.display()
                )
            })?;
            let config = EmbeddedConfig {
                data_dir,
                durability: match settings.durability() {
                    DurabilityMode::Fsync => Durability::Fsync,
                    DurabilityMode::Interval(ms) => Durability::IntervalMs(ms),
                    DurabilityMode::None => Durability::None,
                },
                segment_bytes: settings.storage.segment_bytes,
                cache_bytes: settings.storage.cache_bytes,
                compaction: compaction_config(&settings)?,
                ..EmbeddedConfig::default()
            };
            let state_dir = settings.storage.data_dir.join("state");
            let feed = target.feed.clone();
            let opened = tokio::task::spawn_blocking(move || {
                let events = EmbeddedStore::open_with_feed(config, clock, Some(feed))?;
                // Snapshots can be rebuilt from events: their writes ride on the next sync
                // instead of an fsync each (see FileStateStore's docs).
                let state = FileStateStore::open(&state_dir)?
                    .relax(&[allsource_application::use_cases::SNAPSHOT_NAMESPACE]);
                anyhow::Ok((events, state))
            })
            .await
            .context("recovery panicked")?;
            let (events, state) = opened?;
            compactor = Arc::new(events.compactor());
            target.sealed.set(events.sealed_files());
            let state = Arc::new(state);
            target
                .backup
                .set(Arc::new(events.backup_source(state.clone())));
            (Arc::new(events), state)
        }
        Backend::Postgres => {
            let config = PostgresConfig {
                url: settings.storage.postgres.url.clone(),
                max_connections: settings.storage.postgres.max_connections,
                acquire_timeout: std::time::Duration::from_millis(
                    settings.storage.postgres.acquire_timeout_ms,
                ),
                read_url: settings.storage.postgres.read_url(),
                read_wait: std::time::Duration::from_millis(settings.storage.postgres.read_wait_ms),
            };
            let postgres = PostgresStore::connect(&config, clock).await?;
            // Several nodes may share the database: every node's commits reach this node's
            // followers through LISTEN/NOTIFY, and a read of the log at least this often.
            postgres
                .publish_commits_to(
                    target.feed.clone(),
                    std::time::Duration::from_millis(settings.realtime.postgres_poll_interval_ms),
                )
                .await
                .context("cannot read the head of the event log in PostgreSQL")?;
            let state: Arc<dyn StateStore> =
                Arc::new(PostgresStateStore::new(postgres.pool().clone()));
            let store: Arc<dyn EventStore> = Arc::new(postgres);
            let store = if settings.cache.enabled {
                Arc::new(CachedStore::new(
                    store,
                    CacheConfig {
                        max_capacity: settings.cache.max_capacity,
                        ttl: std::time::Duration::from_secs(settings.cache.ttl_seconds),
                    },
                ))
            } else {
                store
            };
            (store, state)
        }
    };
    tracing::info!(
        backend = store.backend(),
        millis = started.elapsed().as_millis() as u64,
        "store ready"
    );
    // State first: whatever is ready once the event store is (readiness) may use it.
    target.state.set(state);
    if let Some(identity) = &target.identity {
        bootstrap_admin(&settings, identity).await?;
    }
    let seeded = target
        .policies
        .seed_defaults()
        .await
        .context("cannot seed the default policies into the state store")?;
    if seeded > 0 {
        tracing::info!(seeded, "default policies written");
    }
    if !target.policies.enabled() {
        tracing::warn!("policies.enabled = false: no policy is enforced");
    }
    if settings.audit.retention_days > 0 {
        let (audit, retention_days) = (target.audit.clone(), settings.audit.retention_days);
        supervise("audit pruning", move || {
            prune_audit(audit.clone(), retention_days)
        });
    }
    target.events.set(store);
    target.compactor.set(compactor);
    Ok(())
}

/// Creates `auth.bootstrap_admin` when it is configured and no user exists yet.
async fn bootstrap_admin(settings: &Settings, identity: &Identity) -> anyhow::Result<()> {
    let admin = &settings.auth.bootstrap_admin;
    if admin.username.is_empty() {
        return Ok(());
    }
    let tenant = allsource_domain::TenantId::parse(&admin.tenant)
        .map_err(|e| anyhow::anyhow!("invalid setting auth.bootstrap_admin.tenant: {}", e.0))?;
    let created = identity
        .bootstrap_admin(&admin.username, &admin.password, &tenant)
        .await
        .map_err(|e| match e {
            allsource_application::use_cases::identity::IdentityError::Validation(errors) => {
                anyhow::anyhow!(
                    "invalid setting auth.bootstrap_admin: {}",
                    errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
            other => anyhow::Error::new(other).context("cannot create the bootstrap admin"),
        })?;
    if created {
        tracing::warn!(
            username = %admin.username,
            tenant = %tenant,
            "created the bootstrap admin (no user existed); change its password source now"
        );
    } else {
        tracing::info!("users exist; auth.bootstrap_admin is ignored");
    }
    Ok(())
}

/// The embedded engine's compaction settings, and the failpoint of crash tests.
fn compaction_config(settings: &Settings) -> anyhow::Result<CompactionConfig> {
    let c = &settings.compaction;
    let failpoint = match std::env::var(CompactionFailpoint::ENV) {
        Ok(value) => {
            let failpoint = CompactionFailpoint::parse(&value).map_err(anyhow::Error::msg)?;
            tracing::warn!(
                ?failpoint,
                "{} is set: compaction will abort the process (crash tests only)",
                CompactionFailpoint::ENV
            );
            Some(failpoint)
        }
        Err(_) => None,
    };
    Ok(CompactionConfig {
        enabled: c.enabled,
        interval: std::time::Duration::from_secs(c.interval_seconds),
        min_files: c.min_files,
        target_file_bytes: c.target_file_bytes,
        max_small_file_age: (c.max_small_file_age_seconds > 0)
            .then(|| std::time::Duration::from_secs(c.max_small_file_age_seconds)),
        failpoint,
    })
}

/// Writes the usage counters left unwritten by busy moments, every second.
async fn flush_usage(tenants: Tenants) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        tenants.flush_all().await;
    }
}

/// Removes audit records older than `retention_days`, at start and then hourly.
async fn prune_audit(audit: Arc<StateAuditLog>, retention_days: u32) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(retention_days));
        match audit.prune(cutoff).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, retention_days, "old audit records pruned"),
            Err(e) => tracing::warn!(error = %e, "cannot prune the audit log; retrying in an hour"),
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

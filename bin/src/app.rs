//! The application: the one place where adapters are chosen and use cases wired.
//!
//! Start-up order: bind the listener, serve at once (`/health` answers, `/health/ready` says
//! 503 and the API answers `unavailable`), recover the store in the background, then hand over
//! to it. Shutdown (SIGTERM, Ctrl-C, or the future given to [`Application::run_until`]): stop
//! accepting, let in-flight requests (appends waiting for their fsync) finish, then shut the
//! store down, which syncs everything acknowledged.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use allsource_application::ports::{Clock, EventStore};
use allsource_application::use_cases::{AppendEvents, AppendLimits, ReadEvents};
use allsource_infrastructure::cache::{CacheConfig, CachedStore, MokaStateCache};
use allsource_infrastructure::embedded::{Durability, EmbeddedConfig, EmbeddedStore};
use allsource_infrastructure::postgres::{PostgresConfig, PostgresStore};
use allsource_infrastructure::{MemoryStore, StartingStore, SystemClock};
use allsource_presentation::{AppState, HealthInfo, HttpLimits};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::settings::{Backend, DurabilityMode, Settings};

/// A bound, serving-ready AllSource server.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Arc<StartingStore>,
    recovery: JoinHandle<anyhow::Result<()>>,
    addr: SocketAddr,
}

impl Application {
    /// Binds the listener and starts recovering the store in the background.
    ///
    /// # Errors
    /// Invalid settings, a data dir that cannot be created, or an address that cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let backend = settings.backend()?;
        if settings.dev {
            tracing::warn!(
                "DEVELOPMENT MODE: authentication is off; every request acts as an admin of \
                 tenant 'default'. Never expose this server."
            );
        }
        let store = Arc::new(StartingStore::new(match backend {
            Backend::Embedded => "embedded",
            Backend::Memory => "memory",
            Backend::Postgres => "postgres",
        }));
        let as_port: Arc<dyn EventStore> = store.clone();
        let state = AppState {
            append: AppendEvents::new(
                as_port.clone(),
                AppendLimits {
                    max_event_bytes: settings.limits.max_event_bytes,
                    max_batch_events: settings.limits.max_batch_events,
                },
            ),
            reads: if settings.cache.max_states > 0 {
                ReadEvents::with_state_cache(
                    as_port.clone(),
                    Arc::new(MokaStateCache::new(settings.cache.max_states)),
                )
            } else {
                ReadEvents::new(as_port.clone())
            },
            health: HealthInfo {
                version: env!("CARGO_PKG_VERSION"),
                store: as_port,
            },
        };
        let router = allsource_presentation::router(
            state,
            HttpLimits {
                max_body_bytes: settings.server.max_body_bytes,
            },
        );
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address} (server.host, server.port)"))?;
        let addr = listener.local_addr()?;
        let recovery = tokio::spawn(recover(settings, backend, store.clone()));
        Ok(Self {
            listener,
            router,
            store,
            recovery,
            addr,
        })
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
        } = self;
        tracing::info!(%addr, "listening");
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .into_future();
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => {
                // Stopped before recovery finished: nothing was acknowledged by this run.
                recovery.abort();
                served.context("server error")?;
            }
            outcome = &mut recovery => {
                outcome.context("recovery task failed")??;
                server.await.context("server error")?;
            }
        }
        finish(&store).await
    }
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

/// Opens the configured store (recovering it) and hands it to the server.
async fn recover(
    settings: Settings,
    backend: Backend,
    target: Arc<StartingStore>,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let started = Instant::now();
    let store: Arc<dyn EventStore> = match backend {
        Backend::Memory => {
            tracing::warn!("storage.backend = memory: events are lost when the process exits");
            Arc::new(MemoryStore::new(clock))
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
                durability: match settings.durability()? {
                    DurabilityMode::Fsync => Durability::Fsync,
                    DurabilityMode::Interval(ms) => Durability::IntervalMs(ms),
                    DurabilityMode::None => Durability::None,
                },
                segment_bytes: settings.storage.segment_bytes,
                ..EmbeddedConfig::default()
            };
            let opened = tokio::task::spawn_blocking(move || EmbeddedStore::open(config, clock))
                .await
                .context("recovery panicked")?;
            Arc::new(opened?)
        }
        Backend::Postgres => {
            let config = PostgresConfig {
                url: settings.storage.postgres.url.clone(),
                max_connections: settings.storage.postgres.max_connections,
                acquire_timeout: std::time::Duration::from_millis(
                    settings.storage.postgres.acquire_timeout_ms,
                ),
            };
            let store: Arc<dyn EventStore> =
                Arc::new(PostgresStore::connect(&config, clock).await?);
            if settings.cache.enabled {
                Arc::new(CachedStore::new(
                    store,
                    CacheConfig {
                        max_capacity: settings.cache.max_capacity,
                        ttl: std::time::Duration::from_secs(settings.cache.ttl_seconds),
                    },
                ))
            } else {
                store
            }
        }
    };
    tracing::info!(
        backend = store.backend(),
        millis = started.elapsed().as_millis() as u64,
        "store ready"
    );
    target.set(store);
    Ok(())
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

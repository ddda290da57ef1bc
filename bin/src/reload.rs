//! Configuration reload (SIGHUP): the settings are read again from the same sources as at
//! start (defaults, the config file, the environment of the process, the command line), and
//! what can change safely while serving is applied:
//!
//! | setting | on reload |
//! |---|---|
//! | `log.level` (or `RUST_LOG`) | the new filter replaces the old one |
//! | `metrics.public` | `/metrics` on the main port needs a credential or not |
//! | `policies.enabled` | enforcement on or off |
//! | (always) | the policy cache is emptied: policies changed through other nodes apply at once |
//!
//! Every other changed setting is reported as needing a restart (logged at `warn` with its
//! name) and has no effect until then. Nothing is half-applied: settings that do not load or
//! do not validate change nothing (logged at `error`; the server goes on with the old ones),
//! and the only step that could fail (the log filter) is built before anything is applied.
//! Rate limits and quotas are not configuration: they follow each tenant's tier and overrides,
//! which the tenants API changes while serving.

use std::path::PathBuf;
use std::sync::Arc;

use allsource_application::use_cases::Policies;
use allsource_presentation::MetricsEndpoint;
use parking_lot::Mutex;

use crate::settings::{Overrides, Settings};
use crate::telemetry::Telemetry;

/// Where the settings come from, to read them again.
#[derive(Clone)]
pub struct SettingsSource {
    pub config_file: Option<PathBuf>,
    pub overrides: Overrides,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings applied (their keys).
    pub applied: Vec<&'static str>,
    /// Changed settings that take effect only after a restart (keys or sections).
    pub needs_restart: Vec<&'static str>,
}

/// The parts of a running server that a reload changes.
pub struct Reloader {
    source: SettingsSource,
    current: Mutex<Settings>,
    telemetry: Option<Arc<Telemetry>>,
    metrics: Option<MetricsEndpoint>,
    policies: Policies,
}

impl Reloader {
    pub fn new(
        source: SettingsSource,
        current: Settings,
        telemetry: Option<Arc<Telemetry>>,
        metrics: Option<MetricsEndpoint>,
        policies: Policies,
    ) -> Self {
        Self {
            source,
            current: Mutex::new(current),
            telemetry,
            metrics,
            policies,
        }
    }

    /// Reads the settings again and applies them (see the module docs).
    ///
    /// # Errors
    /// Settings that do not load or validate; nothing was changed.
    pub fn reload(&self) -> anyhow::Result<ReloadReport> {
        let new = Settings::load(
            self.source.config_file.as_deref(),
            self.source.overrides.clone(),
        )?;
        self.apply(new)
    }

    /// Applies `new` over the settings in force.
    ///
    /// # Errors
    /// A log filter that cannot be built; nothing was changed.
    pub fn apply(&self, new: Settings) -> anyhow::Result<ReloadReport> {
        let mut current = self.current.lock();
        let report = compare(&current, &new);
        // The one fallible step first, so that a failure changes nothing.
        if report.applied.contains(&"log.level")
            && let Some(telemetry) = &self.telemetry
        {
            telemetry.reload_log_filter(&new.log)?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.set_public(new.metrics.public);
        }
        self.policies.set_enabled(new.policies.enabled);
        self.policies.refresh();
        // What needs a restart keeps its old value here too, so that it is reported again at
        // the next reload until the server restarts.
        let mut kept = current.clone();
        kept.log.level = new.log.level;
        kept.metrics.public = new.metrics.public;
        kept.policies.enabled = new.policies.enabled;
        *current = kept;
        Ok(report)
    }
}

/// What differs between `old` and `new`: applied keys and keys that need a restart.
pub fn compare(old: &Settings, new: &Settings) -> ReloadReport {
    let mut report = ReloadReport::default();
    let mut applied = |changed: bool, key: &'static str| {
        if changed {
            report.applied.push(key);
        }
    };
    applied(old.log.level != new.log.level, "log.level");
    applied(old.metrics.public != new.metrics.public, "metrics.public");
    applied(
        old.policies.enabled != new.policies.enabled,
        "policies.enabled",
    );
    let restart: Vec<(bool, &'static str)> = vec![
        (old.server != new.server, "server.*"),
        (old.storage != new.storage, "storage.*"),
        (old.limits != new.limits, "limits.*"),
        (old.log.format != new.log.format, "log.format"),
        (old.cache != new.cache, "cache.*"),
        (old.projections != new.projections, "projections.*"),
        (old.schemas != new.schemas, "schemas.*"),
        (old.auth != new.auth, "auth.*"),
        (old.snapshots != new.snapshots, "snapshots.*"),
        (old.compaction != new.compaction, "compaction.*"),
        (old.audit != new.audit, "audit.*"),
        (old.rate_limit != new.rate_limit, "rate_limit.*"),
        (old.realtime != new.realtime, "realtime.*"),
        (old.webhooks != new.webhooks, "webhooks.*"),
        (old.pipelines != new.pipelines, "pipelines.*"),
        (old.analytics != new.analytics, "analytics.*"),
        (
            old.metrics.enabled != new.metrics.enabled,
            "metrics.enabled",
        ),
        (old.metrics.listen != new.metrics.listen, "metrics.listen"),
        (old.telemetry != new.telemetry, "telemetry.*"),
        (old.backup != new.backup, "backup.*"),
        (old.dev != new.dev, "dev"),
    ];
    report.needs_restart = restart
        .into_iter()
        .filter(|(changed, _)| *changed)
        .map(|(_, key)| key)
        .collect();
    report
}

/// Reloads on every SIGHUP, for as long as the server runs. Each outcome is logged.
pub async fn on_sighup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; configuration reload is off");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            let reloader = Arc::clone(&reloader);
            // Reading the file and building the filter are blocking work.
            let outcome = tokio::task::spawn_blocking(move || reloader.reload()).await;
            match outcome {
                Ok(Ok(report)) => {
                    tracing::info!(
                        applied = ?report.applied,
                        "configuration reloaded (SIGHUP)"
                    );
                    if !report.needs_restart.is_empty() {
                        tracing::warn!(
                            settings = ?report.needs_restart,
                            "changed settings need a restart; they keep their old values until then"
                        );
                    }
                }
                Ok(Err(e)) => tracing::error!(
                    error = format!("{e:#}"),
                    "configuration reload refused; nothing was changed"
                ),
                Err(e) => tracing::error!(error = %e, "configuration reload failed"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::for_tests(std::path::Path::new("data"))
    }

    #[test]
    fn reloadable_settings_are_applied_and_the_rest_reported() {
        let old = settings();
        let mut new = old.clone();
        new.metrics.public = true;
        new.policies.enabled = !old.policies.enabled;
        new.server.port = 4321;
        new.analytics.timeout_ms = 1234;
        new.log.format = crate::settings::LogFormat::Json;
        let report = compare(&old, &new);
        assert_eq!(report.applied, vec!["metrics.public", "policies.enabled"]);
        assert_eq!(
            report.needs_restart,
            vec!["server.*", "log.format", "analytics.*"]
        );
        assert_eq!(compare(&old, &old.clone()), ReloadReport::default());
    }
}

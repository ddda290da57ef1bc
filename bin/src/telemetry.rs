//! Logs, traces and metrics.
//!
//! - Logs: `tracing` with an env-filter (`RUST_LOG` wins over `log.level`), as human-readable
//!   text or JSON lines. Both filters are checked the same way ([`LogFilter::parse`]): one that
//!   would silence the server is refused at start. The filter can be replaced while running
//!   ([`Telemetry::reload_log_filter`], on SIGHUP).
//! - Traces: with `telemetry.otlp.endpoint` set, every span (requests, use cases, commit
//!   groups and their fsync, PostgreSQL statements) is also exported over OTLP/HTTP
//!   (protobuf) by a batch exporter on its own thread. Off by default.
//! - Metrics: [`install_metrics`] installs the process's Prometheus recorder once, with its
//!   upkeep thread; every server of the process renders from it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::settings::{LogFilter, LogFormat, LogSettings, OtlpSettings, SettingsError};

/// The filter in force: `RUST_LOG` when set and not empty, else `log.level`.
///
/// # Errors
/// A `RUST_LOG` that is not a usable filter (the message names it).
pub fn filter(settings: &LogSettings) -> Result<EnvFilter, SettingsError> {
    let (key, filter) = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.trim().is_empty() => (
            "RUST_LOG",
            LogFilter::parse(&from_env).map_err(|m| SettingsError::new("RUST_LOG", m))?,
        ),
        _ => ("log.level", settings.level.clone()),
    };
    EnvFilter::try_new(filter.as_str()).map_err(|e| SettingsError::new(key, e.to_string()))
}

/// What [`init`] installed: the log filter's reload handle and the trace exporter.
pub struct Telemetry {
    filter: reload::Handle<EnvFilter, Registry>,
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Replaces the log filter (`log.level`, or `RUST_LOG` when set).
    ///
    /// # Errors
    /// An invalid filter; the old one stays.
    pub fn reload_log_filter(&self, settings: &LogSettings) -> anyhow::Result<()> {
        let filter = filter(settings)?;
        self.filter
            .reload(filter)
            .map_err(|e| anyhow::anyhow!("cannot replace the log filter: {e}"))
    }

    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.traces.is_some()
    }

    /// Sends the spans still buffered and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Some(traces) = &self.traces
            && let Err(e) = traces.shutdown()
        {
            eprintln!("warning: the trace exporter did not shut down cleanly: {e}");
        }
    }
}

/// Installs the global subscriber: logs, and traces when `otlp.endpoint` is set. Call once,
/// from `main`, before the async runtime starts (the exporter's HTTP client is blocking).
///
/// # Errors
/// An invalid `RUST_LOG`, an exporter that cannot be built, or a subscriber already installed.
pub fn init(settings: &LogSettings, otlp: &OtlpSettings) -> anyhow::Result<Telemetry> {
    let (filter_layer, filter) = reload::Layer::new(filter(settings)?);
    let traces = otlp
        .traces_url()
        .map(|url| tracer_provider(&url, otlp))
        .transpose()?;
    let json = matches!(settings.format, LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().json().with_target(true));
    // Colours only on a terminal: log files and collectors get plain text.
    let text = matches!(settings.format, LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
    });
    let otel = traces
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("allsource")));
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(json)
        .with(text)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(Telemetry { filter, traces })
}

/// The OTLP/HTTP trace pipeline: a batch exporter on its own thread.
fn tracer_provider(url: &str, otlp: &OtlpSettings) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_millis(otlp.timeout_ms))
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp.endpoint: cannot build the exporter: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(otlp.batch_delay_ms))
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            otlp.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(otlp.service_name.clone())
                .build(),
        )
        .build())
}

/// Buckets of the latency histograms (seconds): 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the commit-group sizes (appends or events per group).
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

/// The process's Prometheus recorder, installed on first use (every server of the process,
/// tests included, records into it). `None` when another recorder was installed first.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Prefix("allsource_commit_group_".into()),
                        GROUP_BUCKETS,
                    )
                })
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!("a metrics recorder is installed already; /metrics is off");
                        return None;
                    }
                    allsource_presentation::metrics::recorder_installed();
                    describe_metrics();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build the metrics recorder; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

/// How often the recorded histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder's upkeep, on a thread of its own for the process: a histogram keeps every
/// sample it records until they are folded into its buckets, which a render does too, so
/// without upkeep a server nobody scrapes would hold every sample of its uptime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep; histograms are folded at scrapes only");
    }
}

/// HELP lines and units of every metric the server records (docs/OPERATIONS.md lists them).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "allsource_http_requests_total",
        "HTTP answers by method, route template and status"
    );
    describe_counter!(
        "allsource_http_request_errors_total",
        "HTTP answers of 4xx (class=client) and 5xx (class=server) by route"
    );
    describe_histogram!(
        "allsource_http_request_duration_seconds",
        Unit::Seconds,
        "Time from the request layer to the response head, by route"
    );
    describe_counter!(
        "allsource_problems_total",
        "Problem documents answered, by code"
    );
    describe_counter!(
        "allsource_refusals_total",
        "Requests refused by a rate limit (rate_limited) or a quota (quota_exceeded)"
    );
    describe_histogram!(
        "allsource_append_duration_seconds",
        Unit::Seconds,
        "Time the store took to make an append durable and visible"
    );
    describe_counter!(
        "allsource_events_appended_total",
        "Events acknowledged by appends (retries of stored events included)"
    );
    describe_histogram!(
        "allsource_wal_fsync_duration_seconds",
        Unit::Seconds,
        "Duration of one WAL fdatasync (embedded store, durability fsync)"
    );
    describe_histogram!(
        "allsource_commit_group_appends",
        "Append requests committed together by one WAL write (embedded store)"
    );
    describe_histogram!(
        "allsource_commit_group_events",
        "Events committed together by one WAL write (embedded store)"
    );
    describe_gauge!("allsource_events", "Events in the store, all tenants");
    describe_gauge!(
        "allsource_entities",
        "Entities (streams) in the store, all tenants"
    );
    describe_gauge!("allsource_wal_bytes", Unit::Bytes, "Bytes of WAL segments");
    describe_gauge!("allsource_wal_segments", "WAL segment files");
    describe_gauge!(
        "allsource_parquet_bytes",
        Unit::Bytes,
        "Bytes of sealed Parquet files"
    );
    describe_gauge!("allsource_parquet_files", "Sealed Parquet files");
    describe_counter!(
        "allsource_seal_failures_total",
        "WAL segments whose sealing into Parquet failed (kept in the WAL, sealed again at start)"
    );
    describe_counter!(
        "allsource_cache_lookups_total",
        "Cache lookups by cache and result (hit ratio: hit / (hit + miss))"
    );
    describe_counter!(
        "allsource_snapshot_jobs_total",
        "Automatic snapshot jobs by outcome (taken, failed, dropped)"
    );
    describe_gauge!(
        "allsource_projection_lag_events",
        "Events between each tenant's head and its projections' checkpoints (stat: max, sum, count)"
    );
    describe_gauge!(
        "allsource_pipeline_lag_events",
        "Matching events after the checkpoints of the pipelines running here (stat: max, sum, count)"
    );
    describe_gauge!(
        "allsource_consumer_lag_events",
        "Positions between each tenant's head and its consumers' cursors (stat: max, sum, count)"
    );
    describe_gauge!(
        "allsource_consumer_group_lag_events",
        "Positions between each tenant's head and its consumer groups' committed positions (stat: max, sum, count)"
    );
    describe_gauge!(
        "allsource_build_info",
        "Always 1; the labels say which build runs"
    );
    metrics::gauge!(
        "allsource_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
}

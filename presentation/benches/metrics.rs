//! What recording metrics costs a request: the measurements one single-event append makes
//! (the request layer's counters and histogram, the use case's histogram and counter, the
//! writer's group histograms, fsync histogram and gauges), without a recorder (the facade's
//! no-op, as with `metrics.enabled = false`) and with the Prometheus recorder the server
//! installs (with its upkeep). The request layer is measured both ways: resolving its handles
//! on every answer (before the recorder is declared installed) and with the handles it keeps.
//! Run: `cargo bench -p allsource-presentation --bench metrics`.

use std::time::{Duration, Instant};

use allsource_presentation::Access;
use allsource_presentation::metrics::{record_request, recorder_installed};
use allsource_presentation::routes::{Route, Verb};
use axum::http::StatusCode;
use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;

const APPEND: Route = Route::new(
    Verb::Post,
    "/api/v1/events",
    Access::Requires(allsource_domain::Permission::Write),
);

/// What one single-event append records on its way (the use case's and the writer's handles
/// are taken once).
fn one_append(handles: &Handles) {
    let started = Instant::now();
    handles.append_duration.record(0.000_2);
    handles.events_appended.increment(1);
    handles.group_appends.record(1.0);
    handles.group_events.record(1.0);
    handles.fsync.record(0.000_1);
    handles.events.set(1_000.0);
    handles.entities.set(100.0);
    handles.wal_bytes.set(1_000_000.0);
    handles.wal_segments.set(1.0);
    record_request(&APPEND, StatusCode::OK, started);
}

struct Handles {
    append_duration: metrics::Histogram,
    events_appended: metrics::Counter,
    group_appends: metrics::Histogram,
    group_events: metrics::Histogram,
    fsync: metrics::Histogram,
    events: metrics::Gauge,
    entities: metrics::Gauge,
    wal_bytes: metrics::Gauge,
    wal_segments: metrics::Gauge,
}

impl Handles {
    fn new() -> Self {
        Self {
            append_duration: metrics::histogram!("allsource_append_duration_seconds"),
            events_appended: metrics::counter!("allsource_events_appended_total"),
            group_appends: metrics::histogram!("allsource_commit_group_appends"),
            group_events: metrics::histogram!("allsource_commit_group_events"),
            fsync: metrics::histogram!("allsource_wal_fsync_duration_seconds"),
            events: metrics::gauge!("allsource_events"),
            entities: metrics::gauge!("allsource_entities"),
            wal_bytes: metrics::gauge!("allsource_wal_bytes"),
            wal_segments: metrics::gauge!("allsource_wal_segments"),
        }
    }
}

fn without_recorder(c: &mut Criterion) {
    let handles = Handles::new();
    c.bench_function("one append's metrics, no recorder", |b| {
        b.iter(|| one_append(&handles));
    });
}

fn with_prometheus(c: &mut Criterion) {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this process");
    // The server's upkeep (bin/src/telemetry.rs), more often: the samples of millions of
    // iterations would otherwise pile up.
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            handle.run_upkeep();
        }
    });
    c.bench_function(
        "one request's metrics (request layer only), handles resolved per answer",
        |b| {
            b.iter(|| record_request(&APPEND, StatusCode::OK, Instant::now()));
        },
    );
    recorder_installed();
    c.bench_function(
        "one request's metrics (request layer only), handles kept",
        |b| {
            b.iter(|| record_request(&APPEND, StatusCode::OK, Instant::now()));
        },
    );
    let handles = Handles::new();
    c.bench_function("one append's metrics, Prometheus recorder", |b| {
        b.iter(|| one_append(&handles));
    });
}

// The no-op runs first: once a recorder is installed it stays for the process.
criterion_group!(benches, without_recorder, with_prometheus);
criterion_main!(benches);

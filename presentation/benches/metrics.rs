//! What recording metrics costs a request: the measurements one single-event append makes
//! (the request layer's counter and histogram, the use case's histogram and counter, the
//! writer's group histograms, fsync histogram and gauges), without a recorder (the facade's
//! no-op, as with `metrics.enabled = false`) and with the Prometheus recorder the server
//! installs. Run: `cargo bench -p allsource-presentation --bench metrics`.

use std::time::Instant;

use allsource_presentation::Access;
use allsource_presentation::metrics::record_request;
use allsource_presentation::routes::{Route, Verb};
use axum::http::StatusCode;
use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;

const APPEND: Route = Route::new(
    Verb::Post,
    "/api/v1/events",
    Access::Requires(allsource_domain::Permission::Write),
);

/// What one single-event append records on its way (the writer's handles are taken once).
fn one_append(writer: &Writer) {
    let started = Instant::now();
    metrics::histogram!("allsource_append_duration_seconds").record(0.000_2);
    metrics::counter!("allsource_events_appended_total").increment(1);
    writer.group_appends.record(1.0);
    writer.group_events.record(1.0);
    writer.fsync.record(0.000_1);
    writer.events.set(1_000.0);
    writer.entities.set(100.0);
    writer.wal_bytes.set(1_000_000.0);
    writer.wal_segments.set(1.0);
    record_request(&APPEND, StatusCode::OK, started);
}

struct Writer {
    group_appends: metrics::Histogram,
    group_events: metrics::Histogram,
    fsync: metrics::Histogram,
    events: metrics::Gauge,
    entities: metrics::Gauge,
    wal_bytes: metrics::Gauge,
    wal_segments: metrics::Gauge,
}

impl Writer {
    fn new() -> Self {
        Self {
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
    let writer = Writer::new();
    c.bench_function("one append's metrics, no recorder", |b| {
        b.iter(|| one_append(&writer));
    });
}

fn with_prometheus(c: &mut Criterion) {
    PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this process");
    let writer = Writer::new();
    c.bench_function("one append's metrics, Prometheus recorder", |b| {
        b.iter(|| one_append(&writer));
    });
    c.bench_function(
        "one request's metrics (request layer only), Prometheus recorder",
        |b| {
            b.iter(|| record_request(&APPEND, StatusCode::OK, Instant::now()));
        },
    );
}

// The no-op runs first: once a recorder is installed it stays for the process.
criterion_group!(benches, without_recorder, with_prometheus);
criterion_main!(benches);

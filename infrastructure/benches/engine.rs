//! In-process benchmarks of the embedded engine (`cargo bench -p allsource-infrastructure
//! --bench engine`): appends under each durability mode, with 1 and 64 concurrent appenders,
//! single events and 100-event batches; reading a 100-event stream from a 1M-event store; and
//! recovery speed. Memory per event is printed while the 1M-event store is built.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_application::ports::{EventStore, StreamRange};
use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion, ProposedEvent, TenantId};
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::embedded::{Durability, EmbeddedConfig, EmbeddedStore};
use allsource_infrastructure::index::Io;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::value::RawValue;

const PAYLOAD: &str = r#"{"amount_cents":129900,"currency":"EUR","customer":"c-1234567","items":[{"sku":"sku-1","qty":2},{"sku":"sku-2","qty":1}]}"#;

fn event(entity: &EntityId, event_type: &EventType) -> ProposedEvent {
    ProposedEvent {
        id: EventId::generate(),
        entity_id: entity.clone(),
        event_type: event_type.clone(),
        payload: RawValue::from_string(PAYLOAD.to_owned()).expect("json"),
        metadata: None,
        expected_version: ExpectedVersion::Any,
    }
}

fn open(dir: &std::path::Path, durability: Durability) -> Arc<EmbeddedStore> {
    let config = EmbeddedConfig {
        data_dir: dir.to_path_buf(),
        durability,
        ..EmbeddedConfig::default()
    };
    Arc::new(EmbeddedStore::open(config, Arc::new(SystemClock)).expect("open"))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tenant = TenantId::default_tenant();
    let event_type = EventType::parse("order.placed").expect("type");
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for (mode, durability) in [("none", Durability::None), ("fsync", Durability::Fsync)] {
        for appenders in [1usize, 64] {
            for batch in [1usize, 100] {
                let dir = tempfile::tempdir_in(".").expect("tempdir");
                let store = open(dir.path(), durability);
                let entities: Vec<EntityId> = (0..appenders * 10)
                    .map(|i| EntityId::parse(&format!("entity-{i}")).expect("entity"))
                    .collect();
                let entities = Arc::new(entities);
                group.throughput(Throughput::Elements((appenders * batch) as u64));
                let id = BenchmarkId::new(mode, format!("{appenders}-appenders-x-{batch}-events"));
                group.bench_function(id, |b| {
                    b.to_async(&runtime).iter(|| {
                        let store = Arc::clone(&store);
                        let entities = Arc::clone(&entities);
                        let tenant = tenant.clone();
                        let event_type = event_type.clone();
                        async move {
                            let tasks: Vec<_> = (0..appenders)
                                .map(|a| {
                                    let store = Arc::clone(&store);
                                    let entities = Arc::clone(&entities);
                                    let tenant = tenant.clone();
                                    let event_type = event_type.clone();
                                    tokio::spawn(async move {
                                        let entity = &entities[a * 10 + (a % 10)];
                                        let events = (0..batch)
                                            .map(|_| event(entity, &event_type))
                                            .collect();
                                        store.append(&tenant, events).await.expect("append");
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.expect("task");
                            }
                        }
                    });
                });
                runtime.block_on(store.shutdown()).expect("shutdown");
            }
        }
    }
    group.finish();
}

fn read_and_recover(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tenant = TenantId::default_tenant();
    let event_type = EventType::parse("order.placed").expect("type");
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let store = open(dir.path(), Durability::None);
    let entities: Vec<EntityId> = (0..10_000)
        .map(|i| EntityId::parse(&format!("entity-{i}")).expect("entity"))
        .collect();
    let before = rss_bytes();
    let started = Instant::now();
    runtime.block_on(async {
        for entity in &entities {
            let events = (0..100).map(|_| event(entity, &event_type)).collect();
            store.append(&tenant, events).await.expect("append");
        }
    });
    let events = 1_000_000u64;
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "built a {events}-event store in {:.1} s; resident memory grew {} MiB = {} bytes/event \
         (payload text {} bytes/event)",
        started.elapsed().as_secs_f64(),
        grown / (1024 * 1024),
        grown / events,
        PAYLOAD.len()
    );

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(100));
    let mut n = 0usize;
    group.bench_function("stream-of-100-in-1M-store", |b| {
        b.iter(|| {
            n = (n + 7919) % entities.len();
            let events = runtime
                .block_on(store.read_stream(&tenant, &entities[n], StreamRange::ALL))
                .expect("read");
            assert_eq!(events.len(), 100);
            events
        });
    });
    group.bench_function("index-stream-of-100-in-1M-store", |b| {
        b.iter(|| {
            n = (n + 7919) % entities.len();
            store
                .index()
                .read_stream(&tenant, &entities[n], StreamRange::ALL, Io::Allowed)
                .expect("read")
        });
    });
    group.finish();

    runtime.block_on(store.shutdown()).expect("shutdown");
    drop(store);
    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(events));
    group.bench_function("open-1M-events", |b| {
        b.iter(|| {
            let store = open(dir.path(), Durability::None);
            assert_eq!(store.index().total_events(), events);
            runtime.block_on(store.shutdown()).expect("shutdown");
        });
    });
    group.finish();
}

criterion_group!(benches, append, read_and_recover);
criterion_main!(benches);

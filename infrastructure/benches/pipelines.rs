//! Events/s through a 4-operator pipeline in process (`cargo bench -p allsource-infrastructure
//! --bench pipelines`): `filter` → `enrich` (the customer's entity state, through the read use
//! case) → `window` (1 s tumbling over the events' timestamps) → `reduce` (count and sum per
//! customer), into a table, over the memory store and the memory state store. One iteration:
//! a fresh pipeline catches up over 20,000 stored events, every commit included (derived rows,
//! checkpoint with the operator state). The HTTP figures (with appends going on) are
//! `allsource bench --pipelines`; both are in docs/BENCHMARKS.md, "Pipelines".
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_application::Caller;
use allsource_application::pipelines::{
    Checkpoint, PipelineConfig, PipelineDeps, PipelineInput, Pipelines, ReadLookups,
};
use allsource_application::ports::{EventStore, StateStore};
use allsource_application::projections::{ProjectionEngine, Projections};
use allsource_application::quota::Unlimited;
use allsource_application::subscriptions::CommitFeed;
use allsource_application::use_cases::{AppendEventInput, AppendEvents, AppendLimits, ReadEvents};
use allsource_domain::TenantId;
use allsource_infrastructure::audit::MemoryAuditLog;
use allsource_infrastructure::state::MemoryStateStore;
use allsource_infrastructure::{MemoryStore, SystemClock};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const EVENTS: u64 = 20_000;
const CUSTOMERS: u64 = 50;

fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&value).expect("json")
}

/// A store with the customers and `EVENTS` orders.
async fn stored() -> (Arc<dyn EventStore>, Arc<CommitFeed>, AppendEvents) {
    let feed = Arc::new(CommitFeed::default());
    let store: Arc<dyn EventStore> =
        Arc::new(MemoryStore::new(Arc::new(SystemClock)).with_feed(feed.clone()));
    let append = AppendEvents::new(store.clone(), AppendLimits::default());
    let caller = Caller::default_tenant();
    let customers = (0..CUSTOMERS)
        .map(|c| AppendEventInput {
            entity_id: Some(format!("customer-{c}")),
            event_type: Some("customer.registered".into()),
            payload: Some(raw(
                json!({"tier": if c % 2 == 0 { "gold" } else { "silver" }}),
            )),
            ..AppendEventInput::default()
        })
        .collect();
    append.batch(&caller, customers).await.expect("customers");
    for chunk in 0..EVENTS / 1000 {
        let orders = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                AppendEventInput {
                    entity_id: Some(format!("order-{n}")),
                    event_type: Some("order.placed".into()),
                    payload: Some(raw(json!({
                        "customer": format!("customer-{}", n % CUSTOMERS),
                        "amount_cents": 1000 + n % 700,
                        "currency": if n % 10 == 0 { "USD" } else { "EUR" },
                        "items": [{"sku": "sku-1", "qty": 2}]
                    }))),
                    ..AppendEventInput::default()
                }
            })
            .collect();
        append.batch(&caller, orders).await.expect("orders");
    }
    (store, feed, append)
}

fn definition() -> PipelineInput {
    PipelineInput {
        name: Some("orders_per_customer_per_second".into()),
        source_event_types: Some(vec!["order.placed".into()]),
        operators: Some(vec![
            json!({"type": "filter", "field": "$.currency", "op": "eq", "value": "EUR"}),
            json!({"type": "enrich", "from": "entity_state", "entity_id_field": "$.customer",
                   "into": "$.customer_state"}),
            json!({"type": "window", "kind": "tumbling", "size_ms": 1000}),
            json!({"type": "reduce", "group_by": ["$.customer", "$.customer_state.tier"],
                   "aggregations": [{"name": "orders", "fn": "count"},
                                    {"name": "revenue", "fn": "sum", "field": "$.amount_cents"}]}),
        ]),
        output: Some(json!({"type": "table"})),
        ..PipelineInput::default()
    }
}

/// One catch-up of a fresh pipeline over the stored events.
async fn catch_up(
    store: Arc<dyn EventStore>,
    feed: Arc<CommitFeed>,
    append: AppendEvents,
) -> Duration {
    let state: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let engine = Arc::new(ProjectionEngine::new(store.clone(), state.clone(), 100));
    let pipelines = Pipelines::new(
        PipelineDeps {
            store: store.clone(),
            feed,
            state: state.clone(),
            append,
            lookups: Arc::new(ReadLookups::new(
                ReadEvents::new(store),
                Projections::new(engine, Arc::new(Unlimited)),
            )),
            quotas: Arc::new(Unlimited),
            audit: Arc::new(MemoryAuditLog::new()),
            tenants: Arc::new(Unlimited),
        },
        PipelineConfig {
            concurrency: 1,
            node: Some("bench".into()),
            ..PipelineConfig::default()
        },
    );
    pipelines.start();
    let started = Instant::now();
    let view = pipelines
        .create(&Caller::default_tenant(), definition())
        .await
        .expect("pipeline");
    let key = view.id.to_string();
    let tenant = TenantId::default_tenant();
    loop {
        if let Ok(Some(entry)) = state
            .get(
                &tenant,
                allsource_application::pipelines::records::CHECKPOINTS,
                &key,
            )
            .await
            && let Ok(checkpoint) = Checkpoint::from_json(&entry.value)
            && checkpoint.counters.processed >= EVENTS
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    pipelines.stop().await;
    elapsed
}

fn bench_pipelines(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (store, feed, append) = runtime.block_on(stored());
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("filter_enrich_window_reduce_catch_up_20k", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                total += runtime.block_on(catch_up(store.clone(), feed.clone(), append.clone()));
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, bench_pipelines);
criterion_main!(benches);

//! Entity-state reads of a long stream with and without snapshots
//! (`cargo bench -p allsource-application --features mocks --bench snapshots`).
//!
//! One entity with 10,000 events (object payloads of eight keys), no state cache. The event
//! store answers from memory (a mock that returns the asked range of `Arc<Event>`s, as the
//! memory and embedded read sides do), the state store is an in-memory map, so the numbers are
//! the use case's own cost: reading the range, parsing and folding payloads, loading the
//! snapshot.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use allsource_application::Caller;
use allsource_application::ports::{
    MockEventStore, StateEntry, StateError, StateStore, clock::MockClock,
};
use allsource_application::use_cases::{
    CreateSnapshotInput, EntityStateInput, ReadEvents, SnapshotArchive, SnapshotPolicy, Snapshots,
};
use allsource_domain::{
    EntityId, Event, EventId, EventType, ExpectedVersion, Position, ProposedEvent, TenantId,
    Version,
};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use serde_json::value::RawValue;

const EVENTS: u64 = 10_000;

fn at(i: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_800_000_000_000_000 + i as i64 * 1000).expect("time")
}

fn stream() -> Vec<Arc<Event>> {
    let entity = EntityId::parse("order-1").expect("entity");
    let event_type = EventType::parse("order.changed").expect("type");
    (1..=EVENTS)
        .map(|v| {
            let payload = format!(
                r#"{{"status":"s{}","amount_cents":{},"currency":"EUR","customer":"c-{}","note{}":"n","rate":{},"items":[{{"sku":"sku-{}","qty":2}}],"tag{}":null}}"#,
                v % 5,
                v * 100,
                v % 97,
                v % 13,
                v as f64 / 7.0,
                v,
                v % 11
            );
            Arc::new(
                ProposedEvent {
                    id: EventId::generate(),
                    entity_id: entity.clone(),
                    event_type: event_type.clone(),
                    payload: RawValue::from_string(payload).expect("json"),
                    metadata: None,
                    expected_version: ExpectedVersion::Any,
                }
                .into_event(
                    TenantId::default_tenant(),
                    Version::new(v),
                    Position::new(v),
                    at(v),
                ),
            )
        })
        .collect()
}

fn event_store(events: Arc<Vec<Arc<Event>>>) -> MockEventStore {
    let mut store = MockEventStore::new();
    store.expect_read_stream().returning(move |_, _, range| {
        let from = usize::try_from(range.from_version.max(1) - 1).unwrap_or(usize::MAX);
        let to = range
            .to_version
            .map_or(events.len(), |t| usize::try_from(t).unwrap_or(usize::MAX))
            .min(events.len());
        Ok(events.get(from..to).map(<[_]>::to_vec).unwrap_or_default())
    });
    store
}

#[derive(Default)]
struct MapStateStore(Mutex<BTreeMap<String, Value>>);

#[async_trait]
impl StateStore for MapStateStore {
    async fn get(
        &self,
        _: &TenantId,
        _: &str,
        key: &str,
    ) -> Result<Option<StateEntry>, StateError> {
        let map = self.0.lock().expect("lock");
        Ok(map.get(key).map(|v| StateEntry {
            value: v.clone(),
            version: 1,
        }))
    }

    async fn put(
        &self,
        _: &TenantId,
        _: &str,
        key: &str,
        value: Value,
        _: Option<u64>,
    ) -> Result<u64, StateError> {
        self.0.lock().expect("lock").insert(key.to_owned(), value);
        Ok(1)
    }

    async fn delete(&self, _: &TenantId, _: &str, key: &str) -> Result<bool, StateError> {
        Ok(self.0.lock().expect("lock").remove(key).is_some())
    }

    async fn list(
        &self,
        _: &TenantId,
        _: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        let map = self.0.lock().expect("lock");
        Ok(map
            .iter()
            .filter(|(k, _)| {
                prefix.as_deref().is_none_or(|p| k.starts_with(p))
                    && after.as_deref().is_none_or(|a| k.as_str() > a)
            })
            .take(limit)
            .map(|(k, v)| {
                (
                    k.clone(),
                    StateEntry {
                        value: v.clone(),
                        version: 1,
                    },
                )
            })
            .collect())
    }
}

/// A state store holding one snapshot, taken over the first `upto` events.
fn snapshotted(
    runtime: &tokio::runtime::Runtime,
    events: &Arc<Vec<Arc<Event>>>,
    upto: u64,
) -> Arc<MapStateStore> {
    let state = Arc::new(MapStateStore::default());
    let prefix: Vec<Arc<Event>> = events[..usize::try_from(upto).expect("small")].to_vec();
    let mut clock = MockClock::new();
    clock.expect_now().returning(Utc::now);
    let snapshots = Snapshots::new(
        Arc::new(event_store(Arc::new(prefix))),
        state.clone(),
        Arc::new(clock),
        SnapshotPolicy::default(),
    );
    runtime
        .block_on(snapshots.create(
            &Caller::default_tenant(),
            CreateSnapshotInput {
                entity_id: "order-1".into(),
                as_of: None,
            },
        ))
        .expect("snapshot");
    state
}

fn state_reads(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let events = Arc::new(stream());
    let caller = Caller::default_tenant();
    let plain = ReadEvents::new(Arc::new(event_store(Arc::clone(&events))));
    let with = |upto: u64| {
        ReadEvents::new(Arc::new(event_store(Arc::clone(&events))))
            .with_snapshots(SnapshotArchive::new(snapshotted(&runtime, &events, upto)))
    };
    let cases = [
        ("no-snapshot", plain.clone()),
        ("snapshot-at-head", with(EVENTS)),
        ("snapshot-99-behind", with(EVENTS - 99)),
    ];
    // The answers agree before anything is measured.
    let answer = |reads: &ReadEvents, input: EntityStateInput| {
        runtime
            .block_on(reads.entity_state(&caller, "order-1", input))
            .expect("state")
            .state
    };
    let as_of = |i: u64| EntityStateInput {
        as_of: Some(at(i).to_rfc3339_opts(SecondsFormat::Micros, true)),
        include_history: None,
    };
    for (_, reads) in &cases {
        assert_eq!(
            answer(reads, EntityStateInput::default()),
            answer(&plain, EntityStateInput::default())
        );
    }
    let mut group = c.benchmark_group("entity-state-10000-events");
    group.sample_size(30);
    for (name, reads) in &cases {
        group.bench_function(*name, |b| {
            b.to_async(&runtime).iter(|| async {
                reads
                    .entity_state(&caller, "order-1", EntityStateInput::default())
                    .await
                    .expect("state")
            });
        });
    }
    group.finish();

    // `as_of` in the middle of the stream: a snapshot at or before it (here 50 events before).
    let middle = with(4_950);
    assert_eq!(answer(&middle, as_of(5_000)), answer(&plain, as_of(5_000)));
    let mut group = c.benchmark_group("entity-state-as-of-event-5000");
    group.sample_size(30);
    for (name, reads) in [("no-snapshot", &plain), ("snapshot-50-before", &middle)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                reads
                    .entity_state(&caller, "order-1", as_of(5_000))
                    .await
                    .expect("state")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, state_reads);
criterion_main!(benches);

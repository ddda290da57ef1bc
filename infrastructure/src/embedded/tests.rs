//! Tests of the embedded engine as a whole: restarts, torn tails, corruption and repair, crashes
//! at every step of sealing, concurrency, durability modes and the data-dir lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use allsource_application::ports::{EventQuery, EventStore, StoreAppendError, StreamRange};
use allsource_domain::{
    EntityId, Event, EventId, EventType, ExpectedVersion, Position, ProposedEvent, TenantId,
    Version,
};
use serde_json::value::RawValue;

use super::*;
use crate::SystemClock;

pub(super) fn config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        data_dir: dir.to_path_buf(),
        durability: Durability::None,
        segment_bytes: 4096,
        ..EmbeddedConfig::default()
    }
}

pub(super) fn open(config: EmbeddedConfig) -> EmbeddedStore {
    EmbeddedStore::open(config, Arc::new(SystemClock)).expect("open")
}

pub(super) fn event(entity: &str, n: usize) -> ProposedEvent {
    ProposedEvent {
        id: EventId::generate(),
        entity_id: EntityId::parse(entity).unwrap(),
        event_type: EventType::parse("test.event").unwrap(),
        payload: RawValue::from_string(format!(r#"{{"n": {n}, "pad": "{}"}}"#, "x".repeat(40)))
            .unwrap(),
        metadata: n
            .is_multiple_of(3)
            .then(|| RawValue::from_string(r#"{"m":1}"#.into()).unwrap()),
        expected_version: ExpectedVersion::Any,
    }
}

pub(super) fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

pub(super) async fn fill(store: &EmbeddedStore, appends: usize) {
    for i in 0..appends {
        let t = if i % 4 == 0 {
            tenant("other")
        } else {
            tenant("default")
        };
        let batch = (0..(1 + i % 3))
            .map(|j| event(&format!("e{}", (i + j) % 5), i))
            .collect();
        store.append(&t, batch).await.expect("append");
    }
}

/// Every event of every tenant, in position order.
pub(super) async fn everything(store: &EmbeddedStore) -> Vec<Event> {
    let mut all = Vec::new();
    for t in [tenant("default"), tenant("other")] {
        let page = store
            .query(
                &t,
                EventQuery {
                    limit: 1_000_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        all.extend(page.events.iter().map(|e| (**e).clone()));
    }
    all.sort_by_key(|e| e.position);
    all
}

#[tokio::test]
async fn restart_round_trip_through_parquet_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(config(dir.path()));
    fill(&store, 200).await;
    let before = everything(&store).await;
    store.shutdown().await.unwrap();
    drop(store);
    let parquet_files = fs::read_dir(dir.path().join("parquet")).unwrap().count();
    assert!(parquet_files > 0, "small segments were sealed into Parquet");

    let store = open(config(dir.path()));
    let after = everything(&store).await;
    assert_eq!(after, before, "every field of every event survives");
    let receipt = store
        .append(&tenant("default"), vec![event("e0", 0)])
        .await
        .unwrap();
    assert_eq!(
        receipt[0].position.get(),
        before.last().unwrap().position.get() + 1
    );
    let stream = store
        .read_stream(
            &tenant("default"),
            &EntityId::parse("e0").unwrap(),
            StreamRange::ALL,
        )
        .await
        .unwrap();
    let versions: Vec<u64> = stream.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    let stats = store.stats(&tenant("default")).await.unwrap();
    assert_eq!(stats.storage["backend"], "embedded");
    assert!(stats.storage["parquet_files"].as_u64().unwrap() > 0);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn torn_tail_is_cut_and_positions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        segment_bytes: 1 << 30,
        ..config(dir.path())
    };
    let store = open(cfg.clone());
    fill(&store, 10).await;
    let before = everything(&store).await;
    store.shutdown().await.unwrap();
    drop(store);
    let (_, segment) = list_segments(dir.path()).unwrap().pop().unwrap();
    let whole = fs::read(&segment).unwrap();
    // Append a record and cut it at several points, as a crash mid-write would.
    let extra = Arc::new(event("e9", 1).into_event(
        tenant("default"),
        Version::new(1),
        Position::new(before.last().unwrap().position.get() + 1),
        chrono::Utc::now(),
    ));
    let mut record = Vec::new();
    wal::encode_append(&mut record, &tenant("default"), &[extra]);
    for cut in [1, 7, 8, record.len() / 2, record.len() - 1] {
        let mut torn = whole.clone();
        torn.extend_from_slice(&record[..cut]);
        fs::write(&segment, &torn).unwrap();
        let store = open(cfg.clone());
        assert_eq!(everything(&store).await, before, "cut at {cut}");
        store.shutdown().await.unwrap();
        drop(store);
        assert_eq!(fs::read(&segment).unwrap(), whole, "torn bytes removed");
    }
}

#[tokio::test]
async fn corruption_refuses_to_start_until_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        segment_bytes: 1 << 30,
        ..config(dir.path())
    };
    let store = open(cfg.clone());
    for i in 0..5 {
        store
            .append(&tenant("default"), vec![event("a", i)])
            .await
            .unwrap();
    }
    let before = everything(&store).await;
    store.shutdown().await.unwrap();
    drop(store);
    let (_, segment) = list_segments(dir.path()).unwrap().pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    // Flip a bit inside the second record's payload.
    let mut first = Vec::new();
    wal::encode_append(
        &mut first,
        &tenant("default"),
        &[Arc::new(before[0].clone())],
    );
    let second_record = wal::HEADER_LEN + first.len();
    bytes[second_record + 60] ^= 0x10;
    fs::write(&segment, &bytes).unwrap();

    let err = EmbeddedStore::open(cfg.clone(), Arc::new(SystemClock))
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(
        matches!(err, OpenError::Corrupt { offset, .. } if offset == second_record),
        "{message}"
    );
    assert!(message.contains("allsource repair --data-dir"), "{message}");
    assert_eq!(
        fs::read(&segment).unwrap(),
        bytes,
        "nothing changed by the refusal"
    );

    let report = repair(dir.path()).unwrap();
    assert_eq!(report.set_aside.len(), 1);
    assert_eq!(
        fs::read(&report.set_aside[0]).unwrap(),
        bytes[second_record..]
    );
    let store = open(cfg);
    assert_eq!(everything(&store).await, before[..1]);
    let next = store
        .append(&tenant("default"), vec![event("a", 9)])
        .await
        .unwrap();
    assert_eq!(next[0].version.get(), 2);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_crash_at_every_step_of_sealing_loses_and_duplicates_nothing() {
    let steps = [
        SealStep::TempWritten,
        SealStep::Renamed,
        SealStep::ManifestUpdated,
        SealStep::SegmentDeleted,
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedConfig {
            seal: false,
            ..config(dir.path())
        };
        let store = open(cfg.clone());
        fill(&store, 60).await;
        let before = everything(&store).await;
        store.shutdown().await.unwrap();
        drop(store);
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() >= 2, "rotation happened");
        let mut manifest = Manifest::load(dir.path()).unwrap();
        seal_segment(dir.path(), &segments[0].1, &mut manifest, Some(step)).unwrap();

        // "Restart": recovery must see exactly the same events, then seal the rest itself.
        let store = open(EmbeddedConfig {
            seal: true,
            ..cfg.clone()
        });
        let after = everything(&store).await;
        assert_eq!(after, before, "after a crash at {step:?}");
        let ids: HashSet<EventId> = after.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), after.len(), "no duplicates after {step:?}");
        let next = store
            .append(&tenant("default"), vec![event("new", 0)])
            .await
            .unwrap();
        assert_eq!(
            next[0].position.get(),
            before.last().unwrap().position.get() + 1
        );
        store.shutdown().await.unwrap();
        drop(store);
        let store = open(cfg);
        assert_eq!(everything(&store).await.len(), before.len() + 1);
        store.shutdown().await.unwrap();
    }
}

/// A crash between the group that filled the active segment and its rotation leaves the last
/// segment full. The next start rotates it and seals it, as the writer would have: it is not
/// kept active until the next append (nor sealed by a shutdown, into a file of its own after a
/// compaction).
#[tokio::test]
async fn a_full_last_segment_is_rotated_and_sealed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    // A large segment size writes one segment that is full for the small one of `config`.
    let store = open(EmbeddedConfig {
        segment_bytes: 1 << 30,
        ..config(dir.path())
    });
    fill(&store, 40).await;
    let before = everything(&store).await;
    store.shutdown().await.unwrap();
    drop(store);
    let segments = list_segments(dir.path()).unwrap();
    assert_eq!(segments.len(), 1);
    let cfg = config(dir.path());
    assert!(fs::metadata(&segments[0].1).unwrap().len() >= cfg.segment_bytes);

    let store = open(cfg.clone());
    let mut storage = serde_json::Value::Null;
    for _ in 0..500 {
        storage = serde_json::Value::Object(store.stats(&tenant("default")).await.unwrap().storage);
        if storage["parquet_files"] == 1 && storage["wal_segments"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        storage["parquet_files"], 1,
        "sealed at the start: {storage}"
    );
    assert_eq!(storage["wal_segments"], 1, "{storage}");
    assert_eq!(storage["wal_bytes"], wal::HEADER_LEN as u64, "{storage}");
    assert_eq!(everything(&store).await, before);
    let last = before.last().unwrap().position.get();
    let manifest = Manifest::load(dir.path()).unwrap();
    let covered: Vec<(u64, u64)> = manifest
        .parquet
        .iter()
        .map(|e| (e.first_position, e.last_position))
        .collect();
    assert_eq!(covered, vec![(1, last)]);
    let segments = list_segments(dir.path()).unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(
        segments[0].0,
        last + 1,
        "the new segment starts after the last event"
    );

    // A shutdown without appends then changes no file.
    store.shutdown().await.unwrap();
    drop(store);
    assert_eq!(Manifest::load(dir.path()).unwrap(), manifest);
    assert_eq!(list_segments(dir.path()).unwrap(), segments);
    let store = open(cfg);
    assert_eq!(everything(&store).await, before);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_gapless_versions_and_unique_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(EmbeddedConfig {
        durability: Durability::Fsync,
        ..config(dir.path())
    }));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20 {
                let receipts = store
                    .append(
                        &tenant("default"),
                        vec![event(&format!("shared-{}", (w + i) % 4), i)],
                    )
                    .await
                    .unwrap();
                acked.extend(receipts);
            }
            acked
        }));
    }
    // Racing `no_stream` appends: exactly one wins.
    let mut racers = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        racers.push(tokio::spawn(async move {
            let mut e = event("race", 0);
            e.expected_version = ExpectedVersion::NoStream;
            store.append(&tenant("default"), vec![e]).await
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreAppendError::Rejected(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(wins, 1);
    let positions: HashSet<u64> = acked.iter().map(|r| r.position.get()).collect();
    assert_eq!(positions.len(), acked.len());
    let mut per_entity: HashMap<String, Vec<u64>> = HashMap::new();
    for r in &acked {
        per_entity
            .entry(r.entity_id.as_str().to_owned())
            .or_default()
            .push(r.version.get());
    }
    for (entity, mut versions) in per_entity {
        versions.sort_unstable();
        assert_eq!(
            versions,
            (1..=versions.len() as u64).collect::<Vec<_>>(),
            "{entity}"
        );
    }
    store.shutdown().await.unwrap();
    let store = open(config(dir.path()));
    let all = everything(&store).await;
    assert_eq!(all.len(), acked.len() + 1);
    for r in &acked {
        let e = store
            .get_event(&tenant("default"), r.event_id)
            .await
            .unwrap()
            .expect("acked event");
        assert_eq!((e.version, e.position), (r.version, r.position));
    }
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn durability_modes_shutdown_and_lock() {
    for durability in [
        Durability::Fsync,
        Durability::IntervalMs(5),
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedConfig {
            durability,
            ..config(dir.path())
        };
        let store = open(cfg.clone());
        fill(&store, 20).await;
        let before = everything(&store).await;
        assert!(matches!(
            EmbeddedStore::open(cfg.clone(), Arc::new(SystemClock)),
            Err(OpenError::Locked { .. })
        ));
        store.shutdown().await.unwrap();
        assert!(matches!(
            store.append(&tenant("default"), vec![event("a", 1)]).await,
            Err(StoreAppendError::Unavailable(_))
        ));
        drop(store);
        let store = open(cfg);
        assert_eq!(everything(&store).await, before, "{durability:?}");
        store.shutdown().await.unwrap();
    }
}

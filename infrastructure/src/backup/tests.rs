//! The embedded cut and restore end to end: a full and an incremental backup into a
//! directory, restored into a new data dir that the engine opens with the same events,
//! positions and state; a point-in-time restore; a non-empty data dir refused.

use std::path::Path;
use std::sync::Arc;

use allsource_application::ports::{EventQuery, EventStore, NoProgress, StateStore};
use allsource_application::use_cases::backups::{self, BackupKind, Backups};
use allsource_domain::{EntityId, Event, EventId, EventType, ProposedEvent, TenantId};
use serde_json::json;
use serde_json::value::RawValue;

use super::*;
use crate::clock::SystemClock;
use crate::embedded::{Durability, EmbeddedConfig, EmbeddedStore};

fn config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        data_dir: dir.to_path_buf(),
        durability: Durability::None,
        segment_bytes: 4096,
        compaction: crate::embedded::CompactionConfig {
            enabled: false,
            ..Default::default()
        },
        ..EmbeddedConfig::default()
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

async fn append(store: &EmbeddedStore, from: usize, to: usize) {
    for i in from..to {
        let t = tenant(if i % 3 == 0 { "other" } else { "default" });
        let event = ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse(&format!("e{}", i % 7)).unwrap(),
            event_type: EventType::parse("thing.happened").unwrap(),
            payload: RawValue::from_string(format!("{{\"n\":{i}}}")).unwrap(),
            metadata: None,
            expected_version: Default::default(),
        };
        store.append(&t, vec![event]).await.unwrap();
    }
}

async fn everything(store: &EmbeddedStore) -> Vec<Event> {
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

async fn state_entries(state: &dyn StateStore) -> Vec<(String, serde_json::Value, u64)> {
    state
        .list(&tenant("default"), "things", None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, e)| (k, e.value, e.version))
        .collect()
}

fn open(dir: &Path) -> (EmbeddedStore, Arc<FileStateStore>) {
    let store = EmbeddedStore::open(config(dir), Arc::new(SystemClock)).unwrap();
    let state = Arc::new(FileStateStore::open(&dir.join("state")).unwrap());
    (store, state)
}

async fn restore_into(target: &DirectoryTarget, dir: &Path, point: RestorePoint) -> u64 {
    let mut sink = EmbeddedRestore::create(dir).unwrap();
    let report = backups::restore(target, None, point, false, &mut sink, &NoProgress)
        .await
        .unwrap();
    report.to_position
}

#[tokio::test]
async fn a_chain_restores_the_same_events_positions_and_state() {
    let src = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let target = Arc::new(DirectoryTarget::new(target_dir.path()));
    let (store, state) = open(src.path());
    for k in 0..5 {
        state
            .put(
                &tenant("default"),
                "things",
                &format!("k{k}"),
                json!({"k": k}),
                None,
            )
            .await
            .unwrap();
    }
    append(&store, 0, 150).await;
    // Let some segments seal into Parquet, so the cut copies files and reads the tail.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let b = Backups::new(
        Arc::new(store.backup_source(Arc::clone(&state))),
        target.clone(),
        Arc::new(SystemClock),
    );
    let full = b
        .create_now(BackupKind::Full, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(full.to_position, 150);
    let state_at_full = state_entries(state.as_ref()).await;
    state
        .put(&tenant("default"), "things", "k0", json!("changed"), None)
        .await
        .unwrap();
    append(&store, 150, 230).await;
    let inc = b
        .create_now(BackupKind::Incremental, None, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        (inc.from_position, inc.to_position, inc.event_count),
        (151, 230, 80)
    );
    let source_events = everything(&store).await;
    let source_state = state_entries(state.as_ref()).await;
    store.shutdown().await.unwrap();

    let restored = tempfile::tempdir().unwrap();
    let dir = restored.path().join("data");
    assert_eq!(restore_into(&target, &dir, RestorePoint::Latest).await, 230);
    let (copy, copy_state) = open(&dir);
    assert_eq!(everything(&copy).await, source_events);
    assert_eq!(state_entries(copy_state.as_ref()).await, source_state);
    // Appends continue after the restored positions.
    append(&copy, 230, 231).await;
    assert_eq!(everything(&copy).await.last().unwrap().position.get(), 231);
    copy.shutdown().await.unwrap();

    // Point in time: stops at the position, with the state of the full backup.
    let dir = restored.path().join("pit");
    assert_eq!(
        restore_into(&target, &dir, RestorePoint::Position(190)).await,
        190
    );
    let (copy, copy_state) = open(&dir);
    assert_eq!(everything(&copy).await, source_events[..190].to_vec());
    assert_eq!(state_entries(copy_state.as_ref()).await, state_at_full);
    copy.shutdown().await.unwrap();

    // A non-empty data dir is refused, untouched.
    let err = EmbeddedRestore::create(restored.path()).err().unwrap();
    assert!(err.to_string().contains("not empty"), "{err}");
}

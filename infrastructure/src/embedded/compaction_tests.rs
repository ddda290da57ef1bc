//! Tests of compaction in the running engine: what is read back never changes, the file count
//! shrinks, positions continue after a restart, a crash at every step loses and duplicates
//! nothing, and compaction runs alongside appends, sealing and reads.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allsource_application::ports::{CompactionError, Compactor, EventStore};
use allsource_domain::EventId;

use super::tests::{config, event, everything, fill, open, tenant};
use super::*;

fn compaction_config(dir: &Path, failpoint: Option<CompactionFailpoint>) -> EmbeddedConfig {
    EmbeddedConfig {
        compaction: CompactionConfig {
            enabled: false,
            target_file_bytes: 1 << 30,
            failpoint,
            ..CompactionConfig::default()
        },
        ..config(dir)
    }
}

/// Waits until the sealer has turned every sealed segment into Parquet and no rotation is due
/// (the writer answers a group before it rotates the segment that group filled).
async fn sealed(store: &EmbeddedStore) {
    for _ in 0..1000 {
        let stats = store.stats(&tenant("default")).await.unwrap();
        let wal_bytes = stats.storage["wal_bytes"].as_u64().unwrap();
        if stats.storage["wal_segments"] == 1 && wal_bytes < store.config.segment_bytes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sealer did not catch up");
}

/// File names in `parquet/`.
fn parquet_files(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("parquet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// File names the manifest lists.
fn listed(dir: &Path) -> BTreeSet<String> {
    Manifest::load(dir)
        .unwrap()
        .parquet
        .into_iter()
        .map(|e| e.file)
        .collect()
}

async fn restart_and_check(cfg: &EmbeddedConfig, before: &[Event]) -> EmbeddedStore {
    let store = open(cfg.clone());
    let after = everything(&store).await;
    assert_eq!(after, before, "every field of every event survives");
    let ids: HashSet<EventId> = after.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), after.len(), "no duplicates");
    assert_eq!(
        parquet_files(&cfg.data_dir),
        listed(&cfg.data_dir),
        "no file outside the manifest is left"
    );
    store
}

#[tokio::test]
async fn compaction_shrinks_the_file_count_and_changes_nothing_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = compaction_config(dir.path(), None);
    let store = open(cfg.clone());
    fill(&store, 200).await;
    sealed(&store).await;
    let before = everything(&store).await;
    let files_before = parquet_files(dir.path()).len() as u64;
    assert!(files_before >= 4, "{files_before} files");

    let report = store.compactor().trigger().await.unwrap();
    assert!(report.compacted, "{report:?}");
    assert_eq!(report.trigger, "api");
    assert_eq!(report.files_before, files_before);
    assert_eq!(report.files_after, 1, "everything fits the target");
    assert_eq!(report.files_merged, files_before);
    assert_eq!(report.files_written, 1);
    assert_eq!(report.bytes_after, report.bytes_written);
    assert_eq!(parquet_files(dir.path()), listed(dir.path()));
    assert_eq!(
        everything(&store).await,
        before,
        "reads are unaffected while running"
    );

    let stats = store.compactor().stats().await.unwrap();
    assert!(stats.applicable);
    assert_eq!((stats.runs, stats.files, stats.failures), (1, 1, 0));
    assert_eq!(stats.files_merged, files_before);
    assert_eq!(stats.last_run.as_ref(), Some(&report));
    let storage = store.stats(&tenant("default")).await.unwrap().storage;
    assert_eq!(storage["parquet_files"], 1);
    assert_eq!(storage["parquet_bytes"], report.bytes_after);

    let again = store.compactor().trigger().await.unwrap();
    assert!(!again.compacted, "one file: nothing left to merge");
    assert!(again.reason.is_some());
    store.shutdown().await.unwrap();
    drop(store);

    let store = restart_and_check(&cfg, &before).await;
    let next = store
        .append(&tenant("default"), vec![event("e0", 0)])
        .await
        .unwrap();
    assert_eq!(
        next[0].position.get(),
        before.last().unwrap().position.get() + 1,
        "positions continue after a restart"
    );
    let stats = store.stats(&tenant("default")).await.unwrap();
    assert_eq!(stats.storage["parquet_files"], 1);
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn merged_files_stay_within_the_target_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = compaction_config(dir.path(), None);
    let store = open(cfg.clone());
    fill(&store, 300).await;
    sealed(&store).await;
    store.shutdown().await.unwrap();
    drop(store);
    let sizes: Vec<u64> = Manifest::load(dir.path())
        .unwrap()
        .parquet
        .iter()
        .map(|e| e.bytes)
        .collect();
    // Room for about three files per merged one.
    cfg.compaction.target_file_bytes = sizes.iter().max().unwrap() * 3;
    let store = open(cfg.clone());
    let before = everything(&store).await;
    let report = store.compactor().trigger().await.unwrap();
    assert!(report.compacted);
    assert!(report.files_after > 1 && report.files_after < sizes.len() as u64);
    for entry in Manifest::load(dir.path()).unwrap().parquet {
        assert!(entry.bytes <= cfg.compaction.target_file_bytes, "{entry:?}");
    }
    store.shutdown().await.unwrap();
    drop(store);
    restart_and_check(&cfg, &before)
        .await
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_crash_at_every_step_of_compaction_loses_and_duplicates_nothing() {
    let steps = [
        CompactionStep::TempWritten,
        CompactionStep::Renamed,
        CompactionStep::ManifestSwapped,
        CompactionStep::FirstOldFileDeleted,
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        let failing = compaction_config(dir.path(), Some(CompactionFailpoint::StopAfter(step)));
        let store = open(failing);
        fill(&store, 120).await;
        sealed(&store).await;
        let before = everything(&store).await;
        let files_before = listed(dir.path()).len();
        assert!(files_before >= 2);
        let stopped = store.compactor().trigger().await;
        assert!(
            matches!(stopped, Err(CompactionError::Internal(_))),
            "{step:?}: {stopped:?}"
        );
        assert_eq!(store.compactor().stats().await.unwrap().failures, 1);
        assert_eq!(
            everything(&store).await,
            before,
            "{step:?}: reads unaffected"
        );
        // What the crash left on disk.
        let on_disk = parquet_files(dir.path());
        match step {
            CompactionStep::TempWritten => {
                assert!(on_disk.iter().any(|f| f.ends_with(".tmp")), "{on_disk:?}")
            }
            CompactionStep::Renamed => assert_eq!(on_disk.len(), files_before + 1),
            CompactionStep::ManifestSwapped => assert_eq!(listed(dir.path()).len(), 1),
            CompactionStep::FirstOldFileDeleted => assert_eq!(on_disk.len(), files_before),
        }
        store.shutdown().await.unwrap();
        drop(store);

        // Restart without the failpoint: the same events, once each, and compaction works.
        let cfg = compaction_config(dir.path(), None);
        let store = restart_and_check(&cfg, &before).await;
        let next = store
            .append(&tenant("default"), vec![event("new", 0)])
            .await
            .unwrap();
        assert_eq!(
            next[0].position.get(),
            before.last().unwrap().position.get() + 1,
            "{step:?}"
        );
        let with_new = everything(&store).await;
        store.compactor().trigger().await.unwrap();
        assert_eq!(listed(dir.path()).len(), 1, "{step:?}");
        store.shutdown().await.unwrap();
        drop(store);
        restart_and_check(&cfg, &with_new)
            .await
            .shutdown()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_alongside_appends_sealing_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = compaction_config(dir.path(), None);
    let store = Arc::new(open(cfg.clone()));
    fill(&store, 100).await;
    sealed(&store).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..100 {
                    let receipts = store
                        .append(&tenant("default"), vec![event(&format!("w{w}"), i)])
                        .await
                        .unwrap();
                    acked.extend(receipts);
                }
                acked
            })
        })
        .collect();
    let compactor = store.compactor();
    let mut merged = 0;
    for _ in 0..10 {
        let snapshot = everything(&store).await;
        let report = compactor.trigger().await.unwrap();
        merged += report.files_merged;
        // Everything read before is still read the same, in the same place.
        let now = everything(&store).await;
        assert_eq!(now[..snapshot.len()], snapshot[..]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(merged > 0);
    sealed(&store).await;
    compactor.trigger().await.unwrap();
    let before = everything(&store).await;
    assert_eq!(before.len(), acked.len() + fill_events(100));
    store.shutdown().await.unwrap();
    assert!(matches!(
        compactor.trigger().await,
        Err(CompactionError::Unavailable(_))
    ));
    drop(compactor);
    drop(store);
    let store = restart_and_check(&cfg, &before).await;
    for r in &acked {
        let e = store
            .get_event(&tenant("default"), r.event_id)
            .await
            .unwrap()
            .expect("acknowledged event");
        assert_eq!((e.version, e.position), (r.version, r.position));
    }
    store.shutdown().await.unwrap();
}

/// Events `fill(store, appends)` appends.
fn fill_events(appends: usize) -> usize {
    (0..appends).map(|i| 1 + i % 3).sum()
}

#[tokio::test]
async fn the_background_policy_compacts_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = compaction_config(dir.path(), None);
    cfg.compaction.enabled = true;
    cfg.compaction.interval = Duration::from_millis(20);
    cfg.compaction.min_files = 3;
    let store = open(cfg.clone());
    fill(&store, 200).await;
    sealed(&store).await;
    let before = everything(&store).await;
    let compactor = store.compactor();
    let mut stats = compactor.stats().await.unwrap();
    for _ in 0..500 {
        stats = compactor.stats().await.unwrap();
        if stats.runs > 0 && stats.files < 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stats.runs > 0 && stats.files < 3, "{stats:?}");
    assert_eq!(
        stats.last_run.as_ref().map(|r| r.trigger.as_str()),
        Some("policy")
    );
    assert_eq!(everything(&store).await, before);
    store.shutdown().await.unwrap();
    drop(store);
    restart_and_check(&cfg, &before)
        .await
        .shutdown()
        .await
        .unwrap();
}

#[tokio::test]
async fn an_empty_store_has_nothing_to_compact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(compaction_config(dir.path(), None));
    let report = store.compactor().trigger().await.unwrap();
    assert!(!report.compacted);
    assert_eq!(report.backend, "embedded");
    assert_eq!((report.files_before, report.files_after), (0, 0));
    let stats = store.compactor().stats().await.unwrap();
    assert_eq!(stats.runs, 0);
    assert!(stats.last_checked_at.is_some());
    assert_eq!(stats.policy.map(|p| p.enabled), Some(false));
    store.shutdown().await.unwrap();
}

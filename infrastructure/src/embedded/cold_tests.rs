//! Reads of sealed events from their Parquet files: with no block cache, every read of a
//! sealed event decodes its block from disk, and every answer must be what memory gave.

use std::time::{Duration, Instant};

use allsource_application::ports::{
    Compactor, EventQuery, EventStore, SortOrder, StoreAppendError, StreamRange,
};
use allsource_domain::{AppendRejection, EntityId, Event};

use super::tests::{config, event, everything, fill, open, tenant};
use super::*;

fn cold_config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        cache_bytes: 0,
        compaction: CompactionConfig {
            enabled: false,
            ..CompactionConfig::default()
        },
        ..config(dir)
    }
}

/// Waits until the sealer has taken every segment but the active one.
fn wait_for_sealing(store: &EmbeddedStore) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.counters.wal_segments.load(Ordering::Acquire) > 1 {
        assert!(Instant::now() < deadline, "sealing did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn stream(store: &EmbeddedStore, t: &str, entity: &str) -> Vec<Event> {
    store
        .read_stream(
            &tenant(t),
            &EntityId::parse(entity).unwrap(),
            StreamRange::ALL,
        )
        .await
        .unwrap()
        .iter()
        .map(|e| (**e).clone())
        .collect()
}

/// The stream's events, picked out of everything.
fn stream_of(all: &[Event], t: &str, entity: &str) -> Vec<Event> {
    all.iter()
        .filter(|e| e.tenant_id.as_str() == t && e.entity_id.as_str() == entity)
        .cloned()
        .collect()
}

fn block_reads(stats: &allsource_application::ports::StoreStats) -> u64 {
    stats.storage["cache"]["block_reads"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_events_are_read_from_disk_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(cold_config(dir.path()));
    fill(&store, 300).await;
    wait_for_sealing(&store);
    let all = everything(&store).await;
    assert_eq!(all.len(), 600);
    assert!(
        store.index().tail_len() < all.len() / 4,
        "sealed events left memory ({} of {} still in the tail)",
        store.index().tail_len(),
        all.len()
    );
    let before = block_reads(&store.stats(&tenant("default")).await.unwrap());
    assert!(before > 0, "the reads went to disk");

    // Streams, in full and in ranges, field for field.
    for entity in ["e0", "e1", "e2", "e3", "e4"] {
        assert_eq!(
            stream(&store, "default", entity).await,
            stream_of(&all, "default", entity)
        );
        let middle = store
            .read_stream(
                &tenant("default"),
                &EntityId::parse(entity).unwrap(),
                StreamRange {
                    from_version: 10,
                    to_version: Some(20),
                    limit: Some(5),
                },
            )
            .await
            .unwrap();
        let versions: Vec<u64> = middle.iter().map(|e| e.version.get()).collect();
        assert_eq!(versions, [10, 11, 12, 13, 14]);
    }

    // Queries page backwards through cold blocks.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(
                &tenant("other"),
                EventQuery {
                    order: SortOrder::Desc,
                    from_position: cursor,
                    limit: 7,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.position.get()));
        cursor = page.events.last().map(|e| e.position);
        if !page.has_more {
            break;
        }
    }
    let mut expected: Vec<u64> = all
        .iter()
        .filter(|e| e.tenant_id.as_str() == "other")
        .map(|e| e.position.get())
        .collect();
    expected.reverse();
    assert_eq!(seen, expected);

    // An event by id, and retries of a sealed event: same content is a duplicate, other
    // content a conflict.
    let oldest = all[0].clone();
    let got = store
        .get_event(&oldest.tenant_id, oldest.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*got, oldest);
    let mut retry = event(oldest.entity_id.as_str(), 0);
    retry.id = oldest.id;
    retry.payload = oldest.payload.clone();
    retry.metadata = oldest.metadata.clone();
    retry.event_type = oldest.event_type.clone();
    let receipts = store.append(&oldest.tenant_id, vec![retry]).await.unwrap();
    assert!(receipts[0].duplicate);
    assert_eq!(receipts[0].position, oldest.position);
    let mut conflicting = event(oldest.entity_id.as_str(), 99);
    conflicting.id = oldest.id;
    let refused = store.append(&oldest.tenant_id, vec![conflicting]).await;
    assert!(
        matches!(
            refused,
            Err(StoreAppendError::Rejected(
                AppendRejection::DuplicateEventId { .. }
            ))
        ),
        "{refused:?}"
    );
    assert!(block_reads(&store.stats(&tenant("default")).await.unwrap()) > before);
    store.shutdown().await.unwrap();
    drop(store);

    // Recovery reads the index columns only; the answers stay the same.
    let store = open(cold_config(dir.path()));
    assert_eq!(everything(&store).await, all);
    assert!(store.index().tail_len() < all.len() / 4);
    // Merging the files changes nothing either.
    let report = store.compactor().trigger().await.unwrap();
    assert!(report.files_before > report.files_after, "{report:?}");
    assert_eq!(everything(&store).await, all);
    for entity in ["e0", "e3"] {
        assert_eq!(
            stream(&store, "other", entity).await,
            stream_of(&all, "other", entity)
        );
    }
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_hot_blocks_and_stays_within_its_bound() {
    for (cache_bytes, fits) in [(16 * 1024 * 1024, true), (512 * 1024, false)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(EmbeddedConfig {
            cache_bytes,
            ..cold_config(dir.path())
        });
        fill(&store, 3000).await;
        wait_for_sealing(&store);
        let first = everything(&store).await;
        let reads_after_first = block_reads(&store.stats(&tenant("default")).await.unwrap());
        assert!(reads_after_first > 0);
        assert_eq!(everything(&store).await, first);
        let stats = store.stats(&tenant("default")).await.unwrap();
        let cache = &stats.storage["cache"];
        assert!(cache["bytes"].as_u64().unwrap() <= cache_bytes, "{cache}");
        if fits {
            assert_eq!(
                block_reads(&stats),
                reads_after_first,
                "a store that fits in the cache is read from disk once"
            );
        } else {
            assert!(
                block_reads(&stats) > reads_after_first,
                "a store larger than the cache is read again"
            );
        }
        store.shutdown().await.unwrap();
    }
}

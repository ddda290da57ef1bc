//! Compaction through the API: the two routes against the real server (embedded and memory
//! backends), and the real binary killed in the middle of a compaction at every step
//! (`ALLSOURCE_FAILPOINT` makes it abort there), then restarted: every acknowledged event is
//! there exactly once, with the same version and position.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allsource_tests::process::ServerProcess;
use allsource_tests::server::TestServer;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::process::{Ledger, start_clients, verify};

/// Every event of the default tenant, in position order.
async fn all_events(server: &TestServer) -> Vec<Value> {
    let reply = server.get("/api/v1/events/query?limit=10000").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["events"].as_array().cloned().unwrap_or_default()
}

/// The segment size of these tests: a few events fill a segment.
const SEGMENT_BYTES: u64 = 4096;

/// Waits until the sealer has turned every sealed WAL segment into Parquet and no rotation is
/// due: one segment, below the segment size. (The writer answers a group before it rotates the
/// segment that group filled, so one segment alone does not mean that nothing is left to seal.)
async fn sealed(base: &str) -> Value {
    let client = reqwest::Client::new();
    let mut stats = Value::Null;
    for _ in 0..1000 {
        stats = client
            .get(format!("{base}/api/v1/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        let storage = &stats["storage"];
        if storage["wal_segments"] == 1
            && storage["wal_bytes"]
                .as_u64()
                .is_some_and(|b| b < SEGMENT_BYTES)
        {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("sealing did not catch up: {stats}");
}

/// Waits until the store has at least `files` Parquet files.
async fn files_at_least(base: &str, files: u64) -> u64 {
    let client = reqwest::Client::new();
    let mut current = 0;
    for _ in 0..1000 {
        let stats: Value = client
            .get(format!("{base}/api/v1/compaction/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        current = stats["current"]["files"].as_u64().unwrap_or(0);
        if current >= files {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    current
}

/// The file names in `data/parquet`, and what the manifest of `data` lists: (file, first,
/// last position) in its order.
fn files_and_manifest(data: &Path) -> (BTreeSet<String>, Vec<(String, u64, u64)>) {
    let files = std::fs::read_dir(data.join("parquet"))
        .expect("parquet dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(data.join("manifest.json")).expect("manifest"))
            .expect("manifest json");
    let listed = manifest["parquet"]
        .as_array()
        .expect("parquet entries")
        .iter()
        .map(|e| {
            (
                e["file"].as_str().expect("file").to_owned(),
                e["first_position"].as_u64().expect("first"),
                e["last_position"].as_u64().expect("last"),
            )
        })
        .collect();
    (files, listed)
}

fn small_files(settings: &mut allsource::Settings) {
    settings.storage.segment_bytes = SEGMENT_BYTES;
    settings.compaction.enabled = false;
}

#[tokio::test]
async fn trigger_compacts_and_nothing_read_back_changes() {
    let server = TestServer::start_with(small_files).await;
    for i in 0..60 {
        let events: Vec<Value> = (0..5)
            .map(|j| {
                json!({
                    "entity_id": format!("order-{}", (i + j) % 7),
                    "event_type": "order.updated",
                    "payload": {"i": i, "j": j, "pad": "x".repeat(100)},
                    "metadata": {"source": "compaction-test"},
                })
            })
            .collect();
        let reply = server
            .post_json("/api/v1/events/batch", &json!({"events": events}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    sealed(&server.base).await;
    let before = all_events(&server).await;
    assert_eq!(before.len(), 300);

    let stats = server.get("/api/v1/compaction/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(stats.body["backend"], "embedded");
    assert_eq!(stats.body["applicable"], true);
    assert_eq!(stats.body["runs"], 0);
    assert_eq!(stats.body["policy"]["enabled"], false);
    let files_before = stats.body["current"]["files"].as_u64().expect("files");
    assert!(files_before >= 4, "{}", stats.body);

    let report = server
        .post_json("/api/v1/compaction/trigger", &json!({}))
        .await;
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.body["compacted"], true);
    assert_eq!(report.body["trigger"], "api");
    assert_eq!(report.body["before"]["files"], files_before);
    assert_eq!(report.body["after"]["files"], 1);
    assert_eq!(report.body["files_merged"], files_before);
    assert_eq!(report.body["events_rewritten"], 300);
    assert!(report.header("x-request-id").is_some());
    assert_eq!(all_events(&server).await, before, "reads unchanged");

    let stats = server.get("/api/v1/compaction/stats").await;
    assert_eq!(stats.body["runs"], 1);
    assert_eq!(stats.body["current"]["files"], 1);
    assert_eq!(stats.body["files_merged"], files_before);
    assert_eq!(stats.body["last_run"]["after"]["files"], 1);
    assert!(stats.body["last_checked_at"].is_string());
    let storage = server.get("/api/v1/stats").await;
    assert_eq!(storage.body["storage"]["parquet_files"], 1);

    let again = server
        .post_json("/api/v1/compaction/trigger", &json!({}))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["compacted"], false);
    assert!(again.body["reason"].is_string());

    let dir = server.stop().await;
    let server = TestServer::start_in(dir, small_files).await;
    assert_eq!(all_events(&server).await, before, "after a restart");
    let stats = server.get("/api/v1/compaction/stats").await;
    assert_eq!(stats.body["current"]["files"], 1);
    let next = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "order-1", "event_type": "t", "payload": {}}),
        )
        .await;
    assert_eq!(
        next.body["position"].as_u64(),
        before
            .last()
            .and_then(|e| e["position"].as_u64())
            .map(|p| p + 1),
        "positions continue"
    );
}

#[tokio::test]
async fn backends_without_files_answer_not_compacted() {
    let server =
        TestServer::start_with(|s| s.storage.backend = allsource::settings::Backend::Memory).await;
    let report = server
        .post_json("/api/v1/compaction/trigger", &json!({}))
        .await;
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.body["backend"], "memory");
    assert_eq!(report.body["compacted"], false);
    assert!(
        report.body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("embedded")),
        "{}",
        report.body
    );
    let stats = server.get("/api/v1/compaction/stats").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.body["applicable"], false);
    assert_eq!(stats.body["runs"], 0);
    let wrong = server.get("/api/v1/compaction/trigger").await;
    assert_eq!(wrong.status, 405);
}

/// The real binary, killed by the failpoint at each step of a compaction while clients
/// append, restarted each time; then compacted for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_compaction_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let segment_bytes = SEGMENT_BYTES.to_string();
    let env = [
        ("ALLSOURCE__STORAGE__DURABILITY", "fsync"),
        ("ALLSOURCE__STORAGE__SEGMENT_BYTES", segment_bytes.as_str()),
        ("ALLSOURCE__COMPACTION__ENABLED", "false"),
        ("ALLSOURCE__COMPACTION__TARGET_FILE_BYTES", "1048576"),
    ];
    let client = reqwest::Client::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for failpoint in [
        "compaction_after_temp",
        "compaction_after_write",
        "compaction_after_manifest",
        "compaction_after_first_delete",
    ] {
        let mut with_failpoint = env.to_vec();
        with_failpoint.push(("ALLSOURCE_FAILPOINT", failpoint));
        let mut server = ServerProcess::start(&data, &with_failpoint).await;
        {
            let ledger = ledger.lock().clone();
            verify(&server.base, &ledger).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let clients = start_clients(&server.base, 4, &ledger, &stop);
        // Wait for files to merge while the clients go on appending.
        let files = files_at_least(&server.base, 3).await;
        assert!(
            files >= 3,
            "{failpoint}: Parquet files were sealed ({files})"
        );
        let answered = client
            .post(format!("{}/api/v1/compaction/trigger", server.base))
            .send()
            .await;
        assert!(
            answered.is_err(),
            "{failpoint}: the process died before answering: {answered:?}"
        );
        let status = tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(10)))
            .expect("the failpoint aborted the process");
        assert!(!status.success(), "{failpoint}: {status:?}");
        assert!(
            server.log_text().contains("compaction failpoint reached"),
            "{failpoint}:\n{}",
            server.log_text()
        );
        stop.store(true, Ordering::Release);
        for c in clients {
            let _ = c.await;
        }
    }

    // Then for real. The restart seals what the crash left in the WAL, with no append needed
    // (also a last segment that the crash left full before its rotation).
    let mut server = ServerProcess::start(&data, &env).await;
    {
        let ledger = ledger.lock().clone();
        verify(&server.base, &ledger).await;
    }
    sealed(&server.base).await;
    // The last crash may have merged every file into one with nothing sealed after it: append
    // until there are files to merge, then stop appending and let the sealer catch up.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&server.base, 2, &ledger, &stop);
    let files = files_at_least(&server.base, 2).await;
    stop.store(true, Ordering::Release);
    for c in clients {
        let _ = c.await;
    }
    assert!(files >= 2, "Parquet files to merge ({files})");
    let ledger = ledger.lock().clone();
    assert!(!ledger.acked.is_empty());
    verify(&server.base, &ledger).await;
    sealed(&server.base).await;
    let report: Value = client
        .post(format!("{}/api/v1/compaction/trigger", server.base))
        .send()
        .await
        .expect("trigger")
        .json()
        .await
        .expect("json");
    assert_eq!(
        report["compacted"],
        true,
        "{report}\n--- server log ---\n{}",
        server.log_text()
    );
    assert_eq!(report["after"]["files"], 1, "{report}");
    verify(&server.base, &ledger).await;
    assert!(server.terminate().success());

    // Nothing was appended since the compaction and nothing was due to be sealed: the restart
    // finds the one file, and no other.
    let server = ServerProcess::start(&data, &env).await;
    let last = verify(&server.base, &ledger).await;
    let (files, listed) = files_and_manifest(&data);
    let names: BTreeSet<String> = listed.iter().map(|(f, _, _)| f.clone()).collect();
    assert_eq!(
        files, names,
        "every file is listed in the manifest: {listed:?}"
    );
    let mut next = 1;
    for (file, first, last_in_file) in &listed {
        assert_eq!(
            *first, next,
            "{file}: the manifest lists each position once: {listed:?}"
        );
        next = last_in_file + 1;
    }
    assert!(
        next <= last + 1,
        "{listed:?} beyond the last position {last}"
    );
    assert_eq!(files.len(), 1, "one file, no leftovers: {files:?}");
}

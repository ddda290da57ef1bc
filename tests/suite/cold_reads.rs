//! Reads of a store that is not in memory: the same server answers, byte for byte, whether the
//! events are in the unsealed tail (memory) or only in Parquet files read back through no
//! cache at all (`storage.segment_bytes` 4 KiB, `storage.cache_bytes` 0).

use std::time::Duration;

use allsource_tests::server::TestServer;
use serde_json::{Value, json};

/// The reads compared, with the events' ids and times filled in.
fn reads(first_id: &str, middle_time: &str) -> Vec<(reqwest::Method, String, Option<Value>)> {
    let time: String = url::form_urlencoded::byte_serialize(middle_time.as_bytes()).collect();
    let get = |path: String| (reqwest::Method::GET, path, None);
    vec![
        get("/api/v1/entities/account-3/events".into()),
        get("/api/v1/entities/account-3/events?from_version=20&to_version=40&limit=7".into()),
        get("/api/v1/entities/account-3/state".into()),
        get(format!(
            "/api/v1/entities/account-3/state?as_of={time}&include_history=true"
        )),
        get(format!("/api/v1/events/{first_id}")),
        get("/api/v1/events/query?limit=10000".into()),
        get("/api/v1/events/query?order=desc&limit=33&offset=5".into()),
        get("/api/v1/events/query?event_type=funds.deposited&from_position=100&limit=50".into()),
        get(format!("/api/v1/events/query?since={time}&limit=40")),
        get(format!(
            "/api/v1/events/query?until={time}&order=desc&limit=40"
        )),
        get("/api/v1/events/query?payload_filter=%7B%22amount%22%3A7%7D".into()),
        get("/api/v1/entities?limit=5".into()),
        get("/api/v1/event-types".into()),
        get("/api/v1/consumers/reader/events?limit=500".into()),
        (
            reqwest::Method::POST,
            "/api/v1/sql".into(),
            Some(
                json!({"query": "SELECT event_type, count(*) AS n, sum(position) AS p FROM events GROUP BY event_type ORDER BY event_type"}),
            ),
        ),
    ]
}

async fn answers(server: &TestServer, first_id: &str, middle_time: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (method, path, body) in reads(first_id, middle_time) {
        let reply = server.call(method, &path, None, body.as_ref()).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        out.push(json!({"path": path, "body": reply.body}));
    }
    out
}

#[tokio::test]
async fn a_store_read_from_disk_answers_as_it_did_from_memory() {
    // First the events sit in the WAL tail, in memory (one large segment).
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir, |s| s.storage.segment_bytes = 64 << 20).await;
    let reply = server
        .post_json(
            "/api/v1/consumers",
            &json!({"consumer_id": "reader", "event_type_filters": ["funds.*"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut first_id = String::new();
    let mut middle_time = String::new();
    for round in 0..6 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let n = round * 100 + i;
                let event_type = ["account.opened", "funds.deposited", "funds.withdrawn"][n % 3];
                json!({
                    "entity_id": format!("account-{}", n % 7),
                    "event_type": event_type,
                    "payload": {"amount": n % 11, "note": "x".repeat(n % 50)},
                    "metadata": if n % 4 == 0 { json!({"by": "test"}) } else { Value::Null },
                })
            })
            .collect();
        let reply = server
            .post_json("/api/v1/events/batch", &json!({"events": events}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if round == 0 {
            let first = server.get("/api/v1/events/query?limit=1").await;
            first_id = first.body["events"][0]["id"].as_str().unwrap().to_owned();
        }
        if round == 2 {
            let last = server.get("/api/v1/events/query?order=desc&limit=1").await;
            middle_time = last.body["events"][0]["timestamp"]
                .as_str()
                .unwrap()
                .to_owned();
            // The next rounds get later timestamps.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let hot = server.get("/api/v1/stats").await;
    assert_eq!(hot.body["storage"]["events_in_memory"], 600, "{}", hot.body);
    let from_memory = answers(&server, &first_id, &middle_time).await;
    let dir = server.stop().await;

    // Then, restarted with tiny segments and no cache, the events are sealed into Parquet and
    // leave memory; every read decodes them from the files.
    let server = TestServer::start_in(dir, |s| {
        s.storage.segment_bytes = 4096;
        s.storage.cache_bytes = 0;
    })
    .await;
    let mut in_memory = u64::MAX;
    for _ in 0..500 {
        let stats = server.get("/api/v1/stats").await;
        in_memory = stats.body["storage"]["events_in_memory"].as_u64().unwrap();
        if in_memory == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_memory, 0, "every event was sealed and left memory");
    let from_disk = answers(&server, &first_id, &middle_time).await;
    for (a, b) in from_memory.iter().zip(&from_disk) {
        assert_eq!(a, b);
    }
    let stats = server.get("/api/v1/stats").await;
    let block_reads = stats.body["storage"]["cache"]["block_reads"]
        .as_u64()
        .unwrap();
    assert!(block_reads > 0, "{}", stats.body);
    server.stop().await;
}

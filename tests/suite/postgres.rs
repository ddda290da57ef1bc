//! PostgreSQL-specific tests: readers paging while writers append never miss an event,
//! concurrent appends share transactions and keep their own answers, a node
//! that loses its database answers 503 and recovers, and two real server processes on one
//! database keep every invariant.
//!
//! Each test creates its own database ([`TestDatabase`]); without PostgreSQL they are skipped
//! loudly, or fail when `ALLSOURCE_REQUIRE_POSTGRES=1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allsource::{Application, Settings};
use allsource_application::ports::EventStore;
use allsource_domain::{ExpectedVersion, ProposedEvent, TenantId};
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::postgres::{PostgresConfig, PostgresStore};
use allsource_tests::pagers::{EVENTS_PER_WRITER, all_positions, event, writers_and_pager};
use allsource_tests::pg::TestDatabase;
use allsource_tests::process::ServerProcess;
use allsource_tests::proxy::CuttableProxy;
use serde_json::{Value, json};

async fn store(db: &TestDatabase) -> Arc<PostgresStore> {
    let config = PostgresConfig {
        url: db.url().to_owned(),
        ..PostgresConfig::default()
    };
    Arc::new(
        PostgresStore::connect(&config, Arc::new(SystemClock))
            .await
            .expect("connect"),
    )
}

/// Writers append concurrently while a pager follows the log by `from_position`; when the
/// writers stop, the pager must have seen every event exactly once, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagers_never_miss_events_committed_by_concurrent_writers() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db).await;
    let tenant = TenantId::default_tenant();
    let seen = writers_and_pager(Arc::clone(&store), Arc::clone(&store), &tenant, 6).await;
    let expected = all_positions(&*store, &tenant).await;
    assert_eq!(expected.len(), 6 * EVENTS_PER_WRITER);
    assert_eq!(seen, expected, "the pager saw every event once, in order");
}

/// Many concurrent appends on one node share transactions (node-level group commit), and each
/// gets the answer it would have had alone: exactly one `no_stream` winner per entity, gapless
/// versions, and a retried id answered with the original's receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_transactions_and_keep_their_own_answers() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db).await;
    let tenant = TenantId::default_tenant();
    // Warm the committer's connection, so the first group is not the one that connects.
    store
        .append(&tenant, vec![event("warm")])
        .await
        .expect("warm");
    let before = store.group_commit_stats();

    let mut racers = Vec::new();
    for n in 0..200 {
        let store = Arc::clone(&store);
        let tenant = tenant.clone();
        racers.push(tokio::spawn(async move {
            let mut e = event(&format!("race-{}", n % 10));
            e.expected_version = ExpectedVersion::NoStream;
            store.append(&tenant, vec![e]).await.is_ok()
        }));
    }
    let retried = event("retried");
    let mut retries = Vec::new();
    for _ in 0..20 {
        let store = Arc::clone(&store);
        let tenant = tenant.clone();
        let again = ProposedEvent {
            id: retried.id,
            entity_id: retried.entity_id.clone(),
            event_type: retried.event_type.clone(),
            payload: retried.payload.clone(),
            metadata: None,
            expected_version: ExpectedVersion::Any,
        };
        retries.push(tokio::spawn(async move {
            store
                .append(&tenant, vec![again])
                .await
                .expect("retry")
                .remove(0)
        }));
    }
    let mut winners = 0;
    for r in racers {
        winners += usize::from(r.await.expect("racer"));
    }
    assert_eq!(winners, 10, "one no_stream winner per entity");
    let mut receipts = Vec::new();
    for r in retries {
        receipts.push(r.await.expect("retry"));
    }
    assert_eq!(receipts.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(
        receipts
            .iter()
            .all(|r| (r.position, r.version) == (receipts[0].position, receipts[0].version)),
        "every retry got the original's receipt"
    );

    let all = all_positions(&*store, &tenant).await;
    assert_eq!(
        all,
        (1..=12).collect::<Vec<_>>(),
        "1 + 10 + 1 events, gapless positions"
    );
    // The 11 appends that wrote events took fewer transactions than appends; the
    // rejections and retries that wrote nothing committed none.
    let after = store.group_commit_stats();
    let (groups, appends) = (after.groups - before.groups, after.appends - before.appends);
    assert!(
        groups < 11,
        "{groups} transactions for 11 appends that wrote"
    );
    assert!(appends > groups, "{appends} appends in {groups} groups");
}

async fn start_node(
    url: &str,
    data_dir: &std::path::Path,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut settings = Settings::for_tests(data_dir);
    settings.storage.backend = allsource::settings::Backend::Postgres;
    settings.storage.postgres.url = url.to_owned();
    settings.storage.postgres.acquire_timeout_ms = 1000;
    let app = Application::build(settings).await.expect("build");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status() == 200
        {
            return (base, stop);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node on {url} never became ready");
}

async fn append_status(client: &reqwest::Client, base: &str, entity: &str) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/v1/events"))
        .json(&json!({"entity_id": entity, "event_type": "t.x", "payload": {"a": 1}}))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Cutting the node off PostgreSQL gives 503 problem responses (never a panic or a hang), and
/// the node serves again once PostgreSQL is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_postgres_answers_503_and_recovers() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let target = url_addr(db.url());
    let proxy = CuttableProxy::start(target).await.expect("proxy");
    let via_proxy = db
        .url()
        .replacen(&target.to_string(), &proxy.addr().to_string(), 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, _stop) = start_node(&via_proxy, dir.path()).await;
    let client = reqwest::Client::new();
    assert_eq!(append_status(&client, &base, "a").await.0, 200);

    proxy.cut();
    let (status, body) = append_status(&client, &base, "a").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    let read = client
        .get(format!("{base}/api/v1/entities/a/events"))
        .send()
        .await
        .expect("request");
    assert_eq!(read.status(), 503);

    proxy.restore();
    let mut recovered = false;
    for _ in 0..100 {
        if append_status(&client, &base, "a").await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the node serves again once PostgreSQL is back");
    let stream: Value = client
        .get(format!("{base}/api/v1/entities/a/events"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let versions: Vec<u64> = stream["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
}

fn url_addr(url: &str) -> std::net::SocketAddr {
    let parsed = url::Url::parse(url).expect("url");
    let host = parsed.host_str().expect("host");
    let port = parsed.port().unwrap_or(5432);
    format!("{host}:{port}")
        .parse()
        .expect("PostgreSQL address must be an IP:port")
}

/// Two real server processes on one database, writers on both: versions stay gapless per
/// entity, positions unique and increasing, every acknowledged event readable on both nodes,
/// and `no_stream` races have exactly one winner across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_keep_every_invariant() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let env = [
        ("ALLSOURCE__STORAGE__BACKEND", "postgres"),
        ("ALLSOURCE__STORAGE__POSTGRES__URL", db.url()),
    ];
    let process_a = ServerProcess::start(&dir.path().join("a"), &env).await;
    let process_b = ServerProcess::start(&dir.path().join("b"), &env).await;
    let (node_a, node_b) = (process_a.base.clone(), process_b.base.clone());
    let nodes = [node_a.clone(), node_b.clone()];
    let client = reqwest::Client::new();

    let mut tasks = Vec::new();
    for w in 0..8 {
        let base = nodes[w % 2].clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25 {
                let entity = format!("shared-{}", i % 5);
                let (status, body) = append_status(&client, &base, &entity).await;
                assert_eq!(status, 200, "{body}");
                acked.push(body);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("writer"));
    }
    // no_stream race across nodes: exactly one winner.
    let mut racers = Vec::new();
    for n in 0..6 {
        let base = nodes[n % 2].clone();
        let client = client.clone();
        racers.push(tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/events"))
                .json(&json!({"entity_id": "race", "event_type": "t.x", "payload": {}, "expected_version": "no_stream"}))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.expect("racer"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409]);

    for base in &nodes {
        let mut all = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let mut url = format!("{base}/api/v1/events/query?limit=50");
            if let Some(c) = cursor {
                url.push_str(&format!("&from_position={c}"));
            }
            let page: Value = client
                .get(url)
                .send()
                .await
                .expect("query")
                .json()
                .await
                .expect("json");
            let events = page["events"].as_array().expect("events").clone();
            if events.is_empty() {
                break;
            }
            cursor = events.last().and_then(|e| e["position"].as_u64());
            all.extend(events);
        }
        assert_eq!(all.len(), 8 * 25 + 1);
        let positions: Vec<u64> = all.iter().filter_map(|e| e["position"].as_u64()).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "positions increase"
        );
        let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in &all {
            versions
                .entry(e["entity_id"].as_str().expect("entity").to_owned())
                .or_default()
                .push(e["version"].as_u64().expect("version"));
        }
        for (entity, v) in &versions {
            assert_eq!(
                v,
                &(1..=v.len() as u64).collect::<Vec<_>>(),
                "{entity} gapless"
            );
        }
        let by_id: HashMap<&str, (u64, u64)> = all
            .iter()
            .filter_map(|e| {
                Some((
                    e["id"].as_str()?,
                    (e["version"].as_u64()?, e["position"].as_u64()?),
                ))
            })
            .collect();
        let unique: HashSet<&str> = by_id.keys().copied().collect();
        assert_eq!(unique.len(), all.len(), "ids unique");
        for ack in &acked {
            let id = ack["event_id"].as_str().expect("event_id");
            assert_eq!(
                by_id.get(id),
                Some(&(
                    ack["version"].as_u64().expect("v"),
                    ack["position"].as_u64().expect("p")
                )),
                "acknowledged event {id} present with its version and position on {base}"
            );
        }
    }
}

/// The crash cycles of the embedded backend, on the postgres backend: every acknowledged event
/// survives a SIGKILL of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_of_a_postgres_node() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    crate::process::crash_cycles(
        &[
            ("ALLSOURCE__STORAGE__BACKEND", "postgres"),
            ("ALLSOURCE__STORAGE__POSTGRES__URL", db.url()),
        ],
        false,
    )
    .await;
}

//! Reads from a streaming-replication standby (`storage.postgres.read_url`), on a primary and a
//! standby made by the test ([`ReplicatedPair`]: `initdb`, then `pg_basebackup`): pagers on the
//! standby never skip an event; a standby that falls behind never hides what the node knows is
//! committed; a standby that fails sends reads to the primary and is used again later; a
//! `read_url` that is not a replica of the primary's database is refused at start; the real
//! server takes the setting from its environment. The contract suite runs on the standby too
//! (`contract::postgres_standby`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_application::ports::{EventStore, StreamRange};
use allsource_domain::{EntityId, TenantId};
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::postgres::{
    PostgresConfig, PostgresOpenError, PostgresStore, STANDBY_RETRY, StandbyStats,
};
use allsource_tests::pagers::{EVENTS_PER_WRITER, all_positions, event, writers_and_pager};
use allsource_tests::pg_cluster::ReplicatedPair;
use allsource_tests::process::ServerProcess;
use allsource_tests::proxy::CuttableProxy;
use serde_json::Value;

async fn connect(url: &str, read_url: Option<&str>, read_wait: Duration) -> Arc<PostgresStore> {
    let config = PostgresConfig {
        url: url.to_owned(),
        read_url: read_url.map(str::to_owned),
        read_wait,
        max_connections: 4,
        acquire_timeout: Duration::from_secs(2),
    };
    Arc::new(
        PostgresStore::connect(&config, Arc::new(SystemClock))
            .await
            .expect("connect"),
    )
}

fn standby_stats(store: &PostgresStore) -> StandbyStats {
    store.standby_stats().expect("the store reads a standby")
}

/// The versions of `entity`'s stream, as `store` reads them.
async fn versions(store: &PostgresStore, entity: &str) -> Vec<u64> {
    store
        .read_stream(
            &TenantId::default_tenant(),
            &EntityId::parse(entity).expect("entity"),
            StreamRange::ALL,
        )
        .await
        .expect("read the stream")
        .iter()
        .map(|e| e.version.get())
        .collect()
}

/// A node reading from a standby: its reads go to the standby once the standby has the schema
/// the node's migrations made and holds what the node knows is committed; another node's commit the node has not heard of may be missing
/// while the standby lags (a shorter log, never a wrong one); the node's own commit is never
/// hidden (the read waits, then reads the primary); a standby cut off sends reads to the
/// primary, and is used again after [`STANDBY_RETRY`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_reads_never_hide_what_the_node_knows_is_committed() {
    let Some(pair) = ReplicatedPair::shared().await else {
        return;
    };
    let db = pair.database().await;
    let proxy = CuttableProxy::start(([127, 0, 0, 1], pair.standby_port).into())
        .await
        .expect("proxy");
    let via_proxy = db.standby_url.replacen(
        &format!(":{}/", pair.standby_port),
        &format!(":{}/", proxy.addr().port()),
        1,
    );
    // Replay paused before the nodes start: the standby has the database but not the tables
    // the nodes' migrations create on the primary.
    pair.pause_replay(true).await;
    let node = connect(
        db.primary.url(),
        Some(&via_proxy),
        Duration::from_millis(1500),
    )
    .await;
    // Another node on the same database, reading the primary; `node` has no commit listener,
    // so it learns of the other node's commits only from the standby.
    let other = connect(db.primary.url(), None, Duration::ZERO).await;
    let tenant = TenantId::default_tenant();

    // Without the schema the standby is not used: the read waits, then reads the primary
    // (and the standby is not counted as failed).
    assert_eq!(versions(&node, "mine").await, Vec::<u64>::new());
    let no_schema = standby_stats(&node);
    assert_eq!(
        (no_schema.reads, no_schema.primary_reads, no_schema.failures),
        (0, 1, 0)
    );
    pair.pause_replay(false).await;

    // Caught up: the node's own append is read back from the standby.
    node.append(&tenant, vec![event("mine")])
        .await
        .expect("append");
    assert_eq!(versions(&node, "mine").await, [1]);
    let caught_up = standby_stats(&node);
    assert!(caught_up.reads >= 1, "{caught_up:?}");
    assert_eq!(caught_up.primary_reads, 1, "{caught_up:?}");

    // Replay paused: another node's append is not on the standby yet, and this node does not
    // know of it: the standby's (shorter) log is the answer, at once.
    pair.pause_replay(true).await;
    other
        .append(&tenant, vec![event("theirs")])
        .await
        .expect("append on the other node");
    let started = Instant::now();
    assert_eq!(versions(&node, "theirs").await, Vec::<u64>::new());
    assert!(started.elapsed() < Duration::from_millis(1000));
    let lagging = standby_stats(&node);
    assert!(lagging.reads > caught_up.reads, "{lagging:?}");

    // Still paused: the node's own append is never hidden — the read waits for the standby,
    // then reads the primary, which also has the other node's append.
    node.append(&tenant, vec![event("mine")])
        .await
        .expect("append");
    assert_eq!(versions(&node, "mine").await, [1, 2]);
    assert_eq!(versions(&node, "theirs").await, [1]);
    let fell_back = standby_stats(&node);
    assert!(fell_back.primary_reads >= 3, "{fell_back:?}");

    // Replay resumes: the standby catches up and serves the reads again.
    pair.pause_replay(false).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while standby_stats(&node).reads == fell_back.reads {
        assert!(Instant::now() < deadline, "the standby never caught up");
        assert_eq!(versions(&node, "mine").await, [1, 2]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The standby cut off: the read goes to the primary, with the same answer.
    proxy.cut();
    node.append(&tenant, vec![event("mine")])
        .await
        .expect("append");
    assert_eq!(versions(&node, "mine").await, [1, 2, 3]);
    let cut = standby_stats(&node);
    assert!(cut.failures >= 1, "{cut:?}");
    assert!(cut.primary_reads > fell_back.primary_reads, "{cut:?}");

    // Back after the retry pause: the standby serves again.
    proxy.restore();
    tokio::time::sleep(STANDBY_RETRY + Duration::from_millis(100)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while standby_stats(&node).reads == cut.reads {
        assert!(
            Instant::now() < deadline,
            "the standby was never used again"
        );
        assert_eq!(versions(&node, "mine").await, [1, 2, 3]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await.expect("shutdown");
    other.shutdown().await.expect("shutdown");
}

/// Writers append on the primary while a pager follows the log on the standby (every read of
/// the pager's store goes to the standby: it knows of no commit the standby lacks): the pager
/// sees every event exactly once, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagers_on_a_standby_never_miss_events_committed_by_concurrent_writers() {
    let Some(pair) = ReplicatedPair::shared().await else {
        return;
    };
    let db = pair.database().await;
    let writer = connect(db.primary.url(), None, Duration::ZERO).await;
    let reader = connect(
        db.primary.url(),
        Some(&db.standby_url),
        Duration::from_millis(250),
    )
    .await;
    let tenant = TenantId::default_tenant();
    // The shared standby's replay may be paused for a while by another test: the pager waits.
    let seen = writers_and_pager(Arc::clone(&writer), Arc::clone(&reader), &tenant, 4).await;
    let expected = all_positions(&*writer, &tenant).await;
    assert_eq!(expected.len(), 4 * EVENTS_PER_WRITER);
    assert_eq!(seen, expected, "the pager saw every event once, in order");
    let stats = standby_stats(&reader);
    assert_eq!(
        stats.primary_reads, 0,
        "every page came from the standby: {stats:?}"
    );
    assert!(stats.reads > 40, "{stats:?}");
}

/// A `read_url` that is not a copy of the primary's database is refused at start, with the
/// reason: another database of the standby, and another server's database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_url_that_is_not_a_replica_of_the_database_is_refused() {
    let Some(pair) = ReplicatedPair::shared().await else {
        return;
    };
    let db = pair.database().await;
    let other_database = pair.standby_url("postgres");
    let other_server = allsource_tests::pg::TestDatabase::create().await;
    let mut wrong = vec![other_database];
    wrong.extend(other_server.as_ref().map(|d| d.url().to_owned()));
    for read_url in wrong {
        let config = PostgresConfig {
            url: db.primary.url().to_owned(),
            read_url: Some(read_url.clone()),
            ..PostgresConfig::default()
        };
        let refused = PostgresStore::connect(&config, Arc::new(SystemClock)).await;
        match refused {
            Err(e @ PostgresOpenError::Standby(_)) => {
                let message = e.to_string();
                assert!(
                    message.contains("is not a replica of the primary's database"),
                    "{message}"
                );
            }
            Err(e) => panic!("{read_url}: refused for another reason: {e}"),
            Ok(_) => panic!("{read_url} was accepted as a standby"),
        }
    }
}

/// The real server reads `storage.postgres.read_url` from its environment: its stats show the
/// standby serving the reads of what was just appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reads_from_the_standby_set_in_its_environment() {
    let Some(pair) = ReplicatedPair::shared().await else {
        return;
    };
    let db = pair.database().await;
    let dir = tempfile::tempdir().expect("dir");
    let server = ServerProcess::start(
        dir.path(),
        &[
            ("ALLSOURCE__STORAGE__BACKEND", "postgres"),
            ("ALLSOURCE__STORAGE__POSTGRES__URL", db.primary.url()),
            ("ALLSOURCE__STORAGE__POSTGRES__READ_URL", &db.standby_url),
            ("ALLSOURCE__STORAGE__POSTGRES__READ_WAIT_MS", "2000"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let appended: Value = client
        .post(format!("{}/api/v1/events", server.base))
        .json(&serde_json::json!({"entity_id": "order-1", "event_type": "order.placed", "payload": {"total": 3}}))
        .send()
        .await
        .expect("append")
        .json()
        .await
        .expect("receipt");
    let stream: Value = client
        .get(format!("{}/api/v1/entities/order-1/events", server.base))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("events");
    assert_eq!(
        stream["events"][0]["id"], appended["event_id"],
        "{stream} after {appended}"
    );
    let stats: Value = client
        .get(format!("{}/api/v1/stats", server.base))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    let standby = &stats["storage"]["standby"];
    assert!(standby["reads"].as_u64().is_some_and(|r| r >= 1), "{stats}");
    assert!(
        standby["confirmed_position"]
            .as_u64()
            .is_some_and(|p| p >= 1),
        "{stats}"
    );
}

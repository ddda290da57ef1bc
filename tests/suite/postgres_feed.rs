//! Live delivery across nodes on the postgres backend: several `PostgresStore` "nodes" (each
//! with its own pool, commit listener and `CommitFeed`) on one database.
//! - every event appended concurrently through any node reaches a subscription on another
//!   node, in position order, with no gap and no duplicate, including a subscription opened
//!   mid-stream (catch-up, then live);
//! - a commit whose notification never comes, and a killed listening connection, lose
//!   nothing: the poll, or the reconnect's catch-up read, publishes what was missed;
//! - the notify → publish latency across nodes is measured and reported (not asserted);
//! - black-box: two real servers on one database; SSE and WebSocket subscribers on one
//!   receive the appends made on the other.
//!
//! Each test creates its own database; without PostgreSQL they are skipped loudly, or fail
//! when `ALLSOURCE_REQUIRE_POSTGRES=1`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use allsource_application::ports::EventStore;
use allsource_application::subscriptions::{CommitFeed, CommitGroup, Delivery, Subscription};
use allsource_domain::{EventFilter, TenantId};
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::postgres::{
    APPEND_LOCK_KEY, CommitListenerStats, LISTENER_APPLICATION_NAME, PostgresConfig, PostgresStore,
};
use allsource_tests::pagers::event;
use allsource_tests::pg::TestDatabase;
use allsource_tests::server::TestServer;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

/// The generous bound of every wait: far above any delay these tests expect.
const PATIENCE: Duration = Duration::from_secs(10);

/// One AllSource node: its store (own pool and commit listener) and its feed.
struct Node {
    store: Arc<PostgresStore>,
    feed: Arc<CommitFeed>,
}

impl Node {
    async fn start(db: &TestDatabase, poll_interval: Duration) -> Self {
        let config = PostgresConfig {
            url: db.url().to_owned(),
            ..PostgresConfig::default()
        };
        let store = PostgresStore::connect(&config, Arc::new(SystemClock))
            .await
            .expect("connect");
        // Room for every group of these tests: the raw receivers below never lag.
        let feed = Arc::new(CommitFeed::new(1 << 16));
        store
            .publish_commits_to(Arc::clone(&feed), poll_interval)
            .await
            .expect("commit listener");
        let node = Self {
            store: Arc::new(store),
            feed,
        };
        node.wait_for(|s| s.listening, "the listener to listen")
            .await;
        node
    }

    fn stats(&self) -> CommitListenerStats {
        self.store
            .commit_listener_stats()
            .expect("listener started")
    }

    async fn wait_for(&self, done: impl Fn(&CommitListenerStats) -> bool, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.stats()) {
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {what}: {:?}",
                self.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn port(&self) -> Arc<dyn EventStore> {
        Arc::clone(&self.store) as Arc<dyn EventStore>
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

/// Receives groups until one ends at or past `last`, checking that they are contiguous from
/// `after + 1`; returns the positions received.
async fn receive_through(
    receiver: &mut broadcast::Receiver<Arc<CommitGroup>>,
    after: u64,
    last: u64,
) -> Vec<u64> {
    let mut positions = Vec::new();
    let mut covered = after;
    while covered < last {
        let group = tokio::time::timeout(PATIENCE, receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("no group within {PATIENCE:?}; covered {covered}/{last}"))
            .expect("receiver");
        assert_eq!(
            group.first.get(),
            covered + 1,
            "groups are contiguous (no gap, no overlap)"
        );
        let inside: Vec<u64> = group.events.iter().map(|e| e.position.get()).collect();
        assert_eq!(
            inside,
            (group.first.get()..=group.last.get()).collect::<Vec<_>>(),
            "a group holds its positions in order"
        );
        positions.extend(inside);
        covered = group.last.get();
    }
    positions
}

/// Collects what a subscription hands out into `into`, until the test ends.
fn follow(mut subscription: Subscription, into: Arc<Mutex<Vec<Delivery>>>) {
    tokio::spawn(async move {
        while let Ok(delivery) = subscription.next().await {
            into.lock().push(delivery);
        }
    });
}

/// The positions of the events among `deliveries`, and the index of `CaughtUp` if any.
fn positions(deliveries: &[Delivery]) -> (Vec<u64>, Option<usize>) {
    let mut out = Vec::new();
    let mut caught_up = None;
    for (i, d) in deliveries.iter().enumerate() {
        match d {
            Delivery::Event { event, .. } => out.push(event.position.get()),
            Delivery::CaughtUp => caught_up = Some(i),
        }
    }
    (out, caught_up)
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writers on both nodes append concurrently for two tenants. On node B, a subscription
/// opened before the first append and one opened mid-stream (from position 0) each get every
/// event of their tenant exactly once, in position order; the mid-stream one says `CaughtUp`
/// once and then gets later appends live. Both nodes' feeds carry every position exactly once,
/// in contiguous groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_two_nodes_reach_subscribers_on_node_b_in_order() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = Node::start(&db, Duration::from_secs(1)).await;
    let b = Node::start(&db, Duration::from_secs(1)).await;
    let (red, blue) = (tenant("red"), tenant("blue"));
    let mut raw_a = a.feed.subscribe();
    let mut raw_b = b.feed.subscribe();
    let early = Arc::new(Mutex::new(Vec::new()));
    follow(
        Subscription::open(
            b.port(),
            Arc::clone(&b.feed),
            red.clone(),
            EventFilter::everything(),
            Some(0),
        ),
        Arc::clone(&early),
    );

    const WRITERS_PER_NODE: usize = 4;
    const BATCHES: usize = 30;
    let appended = Arc::new(AtomicUsize::new(0));
    let receipts = Arc::new(Mutex::new(Vec::<(TenantId, u64)>::new()));
    let mut writers = Vec::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let store = Arc::clone(&node.store);
            let tenant = if w % 2 == 0 {
                red.clone()
            } else {
                blue.clone()
            };
            let (appended, receipts) = (Arc::clone(&appended), Arc::clone(&receipts));
            writers.push(tokio::spawn(async move {
                for i in 0..BATCHES {
                    let batch = (0..(1 + i % 3))
                        .map(|_| event(&format!("n{n}-w{w}-{}", i % 5)))
                        .collect();
                    let done = store.append(&tenant, batch).await.expect("append");
                    appended.fetch_add(done.len(), Ordering::Relaxed);
                    receipts
                        .lock()
                        .extend(done.iter().map(|r| (tenant.clone(), r.position.get())));
                }
            }));
        }
    }
    // Mid-stream: once about half the events are in, a subscription from the beginning.
    let total_events = 2 * WRITERS_PER_NODE * (10 + 2 * 10 + 3 * 10);
    wait_until("half the appends", || {
        appended.load(Ordering::Relaxed) >= total_events / 2
    })
    .await;
    let mid = Arc::new(Mutex::new(Vec::new()));
    follow(
        Subscription::open(
            b.port(),
            Arc::clone(&b.feed),
            red.clone(),
            EventFilter::everything(),
            Some(0),
        )
        .with_page_size(17),
        Arc::clone(&mid),
    );
    for w in writers {
        w.await.expect("writer");
    }
    // Once the mid-stream subscription has caught up, more appends must reach it live.
    wait_until("the mid-stream subscription to catch up", || {
        positions(&mid.lock()).1.is_some()
    })
    .await;
    for node in [&a, &b] {
        let done = node
            .store
            .append(&red, vec![event("after-catch-up")])
            .await
            .expect("append");
        receipts.lock().push((red.clone(), done[0].position.get()));
    }

    let receipts = receipts.lock().clone();
    let last = receipts.iter().map(|(_, p)| *p).max().expect("appended");
    assert_eq!(receipts.len(), total_events + 2);
    assert_eq!(last, receipts.len() as u64, "positions are gapless");
    let mut red_positions: Vec<u64> = receipts
        .iter()
        .filter(|(t, _)| *t == red)
        .map(|(_, p)| *p)
        .collect();
    red_positions.sort_unstable();

    // Both feeds: every position once, in contiguous groups.
    let everything: Vec<u64> = (1..=last).collect();
    assert_eq!(receive_through(&mut raw_a, 0, last).await, everything);
    assert_eq!(receive_through(&mut raw_b, 0, last).await, everything);

    for (name, deliveries) in [("early", &early), ("mid-stream", &mid)] {
        wait_until(
            &format!("the {name} subscription to get every event"),
            || positions(&deliveries.lock()).0.len() >= red_positions.len(),
        )
        .await;
        // Nothing more than expected arrives afterwards either.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let deliveries = deliveries.lock().clone();
        let (got, caught_up) = positions(&deliveries);
        assert_eq!(
            got, red_positions,
            "{name}: every event of the tenant once, in order"
        );
        let caught_up = caught_up.expect("CaughtUp");
        assert_eq!(
            deliveries
                .iter()
                .filter(|d| matches!(d, Delivery::CaughtUp))
                .count(),
            1,
            "{name}: CaughtUp once"
        );
        for (i, d) in deliveries.iter().enumerate() {
            if let Delivery::Event { event, live } = d {
                assert_eq!(event.tenant_id, red, "{name}: tenant-scoped");
                if i < caught_up {
                    assert!(!live, "{name}: before CaughtUp, from storage");
                }
            }
        }
    }
    // The appends made after the mid-stream subscription caught up came live.
    let mid = mid.lock().clone();
    let live_tail: Vec<u64> = mid
        .iter()
        .rev()
        .take(2)
        .filter_map(|d| match d {
            Delivery::Event { event, live: true } => Some(event.position.get()),
            _ => None,
        })
        .collect();
    assert_eq!(live_tail.len(), 2, "the last two events came live: {mid:?}");
    let stats = b.stats();
    assert!(stats.notifications > 0, "{stats:?}");
    assert_eq!(stats.events, last, "{stats:?}");
}

/// Inserts one event and moves the head the way an append does, but without notifying: a
/// notification that was lost.
async fn append_without_notification(store: &PostgresStore, tenant: &TenantId) -> u64 {
    let mut tx = store.pool().begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .expect("lock");
    let head: i64 = sqlx::query_scalar("SELECT last_position FROM allsource_log_head")
        .fetch_one(&mut *tx)
        .await
        .expect("head");
    let position = head + 1;
    sqlx::query(
        "INSERT INTO allsource_events \
           (position, tenant_id, entity_id, event_type, version, id, recorded_at, payload) \
         VALUES ($1, $2, $3, 'test.silent', 1, $4, now(), '{}')",
    )
    .bind(position)
    .bind(tenant.as_str())
    .bind(format!("silent-{position}"))
    .bind(uuid::Uuid::new_v4())
    .execute(&mut *tx)
    .await
    .expect("insert");
    sqlx::query("UPDATE allsource_log_head SET last_position = $1, last_timestamp = now()")
        .bind(position)
        .execute(&mut *tx)
        .await
        .expect("head");
    tx.commit().await.expect("commit");
    position as u64
}

/// A commit whose notification never comes is published by the next poll of the log, and
/// the feed stays contiguous with the notified commits around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_notification_is_published_by_the_poll() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = Node::start(&db, Duration::from_secs(60)).await;
    let b = Node::start(&db, Duration::from_millis(200)).await;
    let t = TenantId::default_tenant();
    let mut raw = b.feed.subscribe();
    let mut raw_a = a.feed.subscribe();
    a.store.append(&t, vec![event("x")]).await.expect("append");
    assert_eq!(receive_through(&mut raw, 0, 1).await, vec![1]);
    let before = b.stats();

    let silent = append_without_notification(&a.store, &t).await;
    assert_eq!(silent, 2);
    let started = Instant::now();
    assert_eq!(receive_through(&mut raw, 1, 2).await, vec![2]);
    eprintln!(
        "a commit without notification was published {} ms after it committed (poll 200 ms)",
        started.elapsed().as_millis()
    );
    // The figures are counted right after the publish.
    b.wait_for(
        |s| s.polls_with_news > before.polls_with_news,
        "the poll to count its find",
    )
    .await;
    let after = b.stats();
    assert_eq!(
        after.notifications, before.notifications,
        "no notification announced it: {after:?}"
    );

    // Notified commits go on right after it.
    a.store.append(&t, vec![event("x")]).await.expect("append");
    assert_eq!(receive_through(&mut raw, 2, 3).await, vec![3]);
    // Node A's poll is a minute away: it publishes position 2 once notified of 3, in order.
    assert_eq!(receive_through(&mut raw_a, 0, 3).await, vec![1, 2, 3]);
}

/// Killing the listening connections (`pg_terminate_backend`) loses nothing: the listener
/// logs, reconnects, reads what committed meanwhile, and notifications work again. The poll
/// is a minute away, so only the reconnect can deliver within the test's patience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listening_connection_reconnects_and_misses_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = Node::start(&db, Duration::from_secs(60)).await;
    let b = Node::start(&db, Duration::from_secs(60)).await;
    let t = TenantId::default_tenant();
    let mut raw = b.feed.subscribe();
    a.store.append(&t, vec![event("x")]).await.expect("append");
    assert_eq!(receive_through(&mut raw, 0, 1).await, vec![1]);

    for round in 0..3u64 {
        for node in [&a, &b] {
            node.wait_for(|s| s.listening, "the listener to listen")
                .await;
        }
        wait_for_listening_connections(&a, 2).await;
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(LISTENER_APPLICATION_NAME)
        .fetch_all(a.store.pool())
        .await
        .expect("terminate");
        assert_eq!(
            killed,
            vec![true, true],
            "both nodes' listening connections"
        );
        // Appends right away, while B's listener is gone or coming back.
        let first = 2 + round * 10;
        for _ in 0..5 {
            a.store.append(&t, vec![event("x")]).await.expect("append");
        }
        b.wait_for(
            |s| s.connection_losses > round && s.listening,
            "the listener to reconnect",
        )
        .await;
        assert_eq!(
            receive_through(&mut raw, first - 1, first + 4).await,
            (first..=first + 4).collect::<Vec<_>>(),
            "what committed while the listener was away"
        );
        // Notifications again, on the new connection.
        let notified = b.stats().notifications;
        for _ in 0..5 {
            a.store.append(&t, vec![event("x")]).await.expect("append");
        }
        assert_eq!(
            receive_through(&mut raw, first + 4, first + 9).await,
            (first + 5..=first + 9).collect::<Vec<_>>()
        );
        assert!(b.stats().notifications > notified, "{:?}", b.stats());
    }
}

/// Waits until PostgreSQL lists exactly `count` listening connections of the nodes.
async fn wait_for_listening_connections(node: &Node, count: i64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(LISTENER_APPLICATION_NAME)
        .fetch_one(node.store.pool())
        .await
        .expect("pg_stat_activity");
        if listed == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{listed} listening connections, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Reports (does not assert) how long an append acknowledged by node A takes to be published
/// by node B's feed, one append at a time and under concurrent load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_to_publish_latency_across_nodes_is_reported() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = Node::start(&db, Duration::from_secs(1)).await;
    let b = Node::start(&db, Duration::from_secs(1)).await;
    let t = TenantId::default_tenant();
    // Arrival time of every position on B.
    let arrivals = Arc::new(Mutex::new(BTreeMap::<u64, Instant>::new()));
    {
        let mut raw = b.feed.subscribe();
        let arrivals = Arc::clone(&arrivals);
        tokio::spawn(async move {
            while let Ok(group) = raw.recv().await {
                let now = Instant::now();
                let mut arrivals = arrivals.lock();
                for e in &group.events {
                    arrivals.insert(e.position.get(), now);
                }
            }
        });
    }
    let acked = Arc::new(Mutex::new(BTreeMap::<u64, Instant>::new()));
    // One append at a time, then 8 appenders at once.
    for (label, writers, per_writer) in [("sequential", 1usize, 300usize), ("8 concurrent", 8, 60)]
    {
        let first = a.feed.head() + 1;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (store, acked, t) = (Arc::clone(&a.store), Arc::clone(&acked), t.clone());
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        let done = store
                            .append(&t, vec![event(&format!("w{w}-{i}"))])
                            .await
                            .expect("append");
                        acked.lock().insert(done[0].position.get(), Instant::now());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
        let last = first - 1 + (writers * per_writer) as u64;
        wait_until("every append to reach node B", || {
            arrivals.lock().range(first..=last).count() == writers * per_writer
        })
        .await;
        let (acked, arrivals) = (acked.lock(), arrivals.lock());
        let mut early = 0;
        let mut latencies: Vec<Duration> = (first..=last)
            .map(|p| {
                let (sent, got) = (acked[&p], arrivals[&p]);
                // B may publish before A's client has its answer: count it as zero.
                if got < sent {
                    early += 1;
                }
                got.saturating_duration_since(sent)
            })
            .collect();
        latencies.sort_unstable();
        eprintln!(
            "node A ack -> node B publish, {label}, {} appends: p50 {:?}, p99 {:?}, max {:?} \
             ({early} published before A's ack returned)",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1],
        );
        assert!(
            latencies[latencies.len() - 1] < PATIENCE,
            "sanity bound only"
        );
    }
}

/// A real server on the shared database. Its poll is a minute away: within the test's
/// patience, only the notifications (and the listener's catch-up when it connects) deliver.
async fn server_node(db: &TestDatabase) -> TestServer {
    let url = db.url().to_owned();
    TestServer::start_with(move |settings| {
        settings.storage.backend = allsource::settings::Backend::Postgres;
        settings.storage.postgres.url = url;
        settings.realtime.postgres_poll_interval_ms = 60_000;
    })
    .await
}

async fn append_http(server: &TestServer, entity: &str) -> u64 {
    let reply = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": entity, "event_type": "order.placed", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["position"].as_u64().expect("position")
}

/// `(id, data)` of the next `count` Server-Sent Events (comments skipped).
async fn sse_events(response: &mut reqwest::Response, count: usize) -> Vec<(u64, Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("an SSE chunk within {PATIENCE:?}; got {events:?}"))
            .expect("read")
            .expect("the stream is open");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data, mut is_event) = (None, Value::Null, false);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    is_event = v.trim() == "event";
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).expect("JSON data");
                }
            }
            if is_event {
                events.push((id.expect("id"), data));
            }
        }
    }
    events
}

/// The next text frame of a WebSocket as JSON (pings skipped).
async fn ws_frame<S>(socket: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .unwrap_or_else(|_| panic!("a frame within {PATIENCE:?}"))
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
}

/// Two real servers on one database: an SSE subscriber on node B receives, in order, what is
/// appended on node A (replayed, then live), and a WebSocket subscriber on node A receives
/// what is appended on node B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_one_server_receive_appends_made_on_another() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = server_node(&db).await;
    let b = server_node(&db).await;
    for i in 0..3 {
        append_http(&a, &format!("before-{i}")).await;
    }
    let mut sse = b
        .client
        .get(b.url("/api/v1/events/sse?from_position=0"))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    let replayed = sse_events(&mut sse, 3).await;
    assert_eq!(
        replayed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "{}/api/v1/events/stream",
        a.base.replacen("http://", "ws://", 1)
    ))
    .await
    .expect("websocket");
    socket
        .send(Message::Text(
            json!({"type": "subscribe", "filters": [], "from_position": 3})
                .to_string()
                .into(),
        ))
        .await
        .expect("subscribe");
    // Nothing after position 3 yet: the replay is empty, and then the socket is live.
    assert_eq!(
        ws_frame(&mut socket).await,
        json!({"type": "replay_complete", "replayed": 0})
    );

    let mut expected = Vec::new();
    for i in 0..10 {
        let node = if i % 3 == 2 { &b } else { &a };
        expected.push(append_http(node, &format!("live-{i}")).await);
    }
    let live = sse_events(&mut sse, expected.len()).await;
    assert_eq!(
        live.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        expected,
        "node B's SSE stream: every append of both nodes, in order"
    );
    for (id, data) in &live {
        assert_eq!(data["position"], *id);
        assert_eq!(data["event_type"], "order.placed");
    }
    let mut on_a = Vec::new();
    while on_a.len() < expected.len() {
        let f = ws_frame(&mut socket).await;
        assert!(f.get("type").is_none(), "live events are bare: {f}");
        on_a.push(f["position"].as_u64().expect("position"));
    }
    assert_eq!(
        on_a, expected,
        "node A's WebSocket: every append of both nodes, in order"
    );
    a.stop().await;
    b.stop().await;
}

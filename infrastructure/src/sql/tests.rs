//! The SQL engine over the memory store and over the embedded store (sealed files + tail):
//! tenant scoping that statements cannot widen, read-only refusal, the bounds, the JSON
//! functions, and the same answers from files as from memory.

use std::sync::Arc;
use std::time::Duration;

use allsource_application::ports::{Clock, EventStore, SqlEngine, SqlError, SqlLimits, Table};
use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion, ProposedEvent, TenantId};
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{DataFusionEngine, SqlEngineConfig};
use crate::memory::MemoryStore;

/// A clock the test sets.
pub struct ManualClock(pub Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn at(t: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(t)))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock() = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

pub fn proposed(entity: &str, event_type: &str, payload: Value) -> ProposedEvent {
    ProposedEvent {
        id: EventId::generate(),
        entity_id: EntityId::parse(entity).expect("entity id"),
        event_type: EventType::parse(event_type).expect("event type"),
        payload: RawValue::from_string(payload.to_string()).expect("json"),
        metadata: None,
        expected_version: ExpectedVersion::Any,
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

const LIMITS: SqlLimits = SqlLimits {
    max_rows: 1000,
    timeout: Duration::from_secs(20),
};

/// Two tenants: `acme` with 3 orders, `globex` with 2 (one of them for the same entity id).
async fn two_tenants() -> (Arc<MemoryStore>, DataFusionEngine) {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0).unwrap());
    let store = Arc::new(MemoryStore::new(clock));
    store
        .append(
            &tenant("acme"),
            vec![
                proposed(
                    "order-1",
                    "order.placed",
                    json!({"total": 10, "customer": {"tier": "gold"}}),
                ),
                proposed(
                    "order-2",
                    "order.placed",
                    json!({"total": 25.5, "customer": {"tier": "silver"}}),
                ),
                proposed("order-1", "order.shipped", json!({"carrier": "ups"})),
            ],
        )
        .await
        .expect("append acme");
    store
        .append(
            &tenant("globex"),
            vec![
                proposed("order-1", "order.placed", json!({"total": 1000})),
                proposed("secret", "order.placed", json!({"total": 7})),
            ],
        )
        .await
        .expect("append globex");
    let engine = DataFusionEngine::new(
        store.clone() as Arc<dyn EventStore>,
        None,
        SqlEngineConfig::default(),
    )
    .expect("engine");
    (store, engine)
}

async fn run(engine: &DataFusionEngine, who: &str, sql: &str) -> Result<Table, SqlError> {
    engine.run(&tenant(who), sql, LIMITS).await
}

fn column(table: &Table, name: &str) -> Vec<Value> {
    let i = table.column(name).expect("column");
    table.rows.iter().map(|r| r[i].clone()).collect()
}

#[tokio::test]
async fn a_tenant_sees_its_own_events_with_every_column() {
    let (_, engine) = two_tenants().await;
    let t = run(&engine, "acme", "SELECT * FROM events ORDER BY position")
        .await
        .expect("query");
    assert_eq!(
        t.columns,
        [
            "id",
            "entity_id",
            "event_type",
            "version",
            "position",
            "timestamp",
            "payload",
            "metadata"
        ]
    );
    assert_eq!(t.rows.len(), 3);
    assert_eq!(
        column(&t, "entity_id"),
        [json!("order-1"), json!("order-2"), json!("order-1")]
    );
    assert_eq!(column(&t, "version"), [json!(1), json!(1), json!(2)]);
    assert_eq!(t.rows[0][5], json!("2026-02-01T12:00:00.000000Z"));
    assert_eq!(t.rows[2][7], Value::Null);
    let id = t.rows[0][0].as_str().expect("id text");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn statements_cannot_reach_another_tenant() {
    let (_, engine) = two_tenants().await;
    let t = run(
        &engine,
        "acme",
        "SELECT count(*) AS n FROM events WHERE entity_id = 'secret' OR 1=1",
    )
    .await
    .expect("or 1=1");
    assert_eq!(column(&t, "n"), [json!(3)], "only the tenant's own three");
    for sql in [
        "SELECT count(*) AS n FROM (SELECT * FROM events UNION ALL SELECT * FROM events WHERE true) WHERE entity_id = 'secret'",
        "SELECT count(*) AS n FROM events WHERE entity_id IN (SELECT entity_id FROM events) AND entity_id = 'secret'",
        "SELECT count(*) AS n FROM events e1 JOIN events e2 ON true WHERE e1.entity_id = 'secret' OR e2.entity_id = 'secret'",
    ] {
        let t = run(&engine, "acme", sql).await.expect(sql);
        assert_eq!(column(&t, "n"), [json!(0)], "{sql}");
    }
    let t = run(
        &engine,
        "acme",
        "SELECT sum(json_get_float(payload, 'total')) AS s FROM events",
    )
    .await
    .expect("sum");
    assert_eq!(column(&t, "s"), [json!(35.5)]);
    let t = run(
        &engine,
        "globex",
        "SELECT sum(json_get_float(payload, 'total')) AS s FROM events",
    )
    .await
    .expect("sum");
    assert_eq!(column(&t, "s"), [json!(1007.0)]);
    for sql in [
        "SELECT * FROM other_table",
        "SELECT * FROM allsource.public.globex",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM 'data/parquet/events-1-2.parquet'",
    ] {
        let e = run(&engine, "acme", sql).await.expect_err(sql);
        assert!(matches!(e, SqlError::Invalid(_)), "{sql}: {e:?}");
    }
}

#[tokio::test]
async fn only_queries_run() {
    let (store, engine) = two_tenants().await;
    for sql in [
        "DROP TABLE events",
        "CREATE TABLE t AS SELECT * FROM events",
        "INSERT INTO events SELECT * FROM events",
        "DELETE FROM events",
        "UPDATE events SET entity_id = 'x'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/'",
        "COPY events TO '/tmp/out.csv'",
    ] {
        let e = run(&engine, "acme", sql).await.expect_err(sql);
        assert!(
            matches!(e, SqlError::Refused(_) | SqlError::Invalid(_)),
            "{sql}: {e:?}"
        );
    }
    let page = store
        .query(
            &tenant("acme"),
            allsource_application::ports::EventQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("query");
    assert_eq!(page.events.len(), 3);
}

#[tokio::test]
async fn a_bad_statement_is_invalid_with_the_parsers_message() {
    let (_, engine) = two_tenants().await;
    let e = run(&engine, "acme", "SELEC * FROM events")
        .await
        .expect_err("bad");
    let SqlError::Invalid(message) = e else {
        panic!("{e:?}")
    };
    assert!(message.contains("SELEC"), "{message}");
    let e = run(&engine, "acme", "SELECT nope FROM events")
        .await
        .expect_err("bad");
    assert!(matches!(e, SqlError::Invalid(_)), "{e:?}");
}

#[tokio::test]
async fn the_row_limit_and_the_time_limit_hold() {
    let (_, engine) = two_tenants().await;
    let small = SqlLimits {
        max_rows: 2,
        timeout: Duration::from_secs(20),
    };
    let e = engine
        .run(&tenant("acme"), "SELECT * FROM events", small)
        .await
        .expect_err("3 rows > 2");
    assert!(matches!(e, SqlError::TooManyRows(2)), "{e:?}");
    let t = engine
        .run(&tenant("acme"), "SELECT * FROM events LIMIT 2", small)
        .await
        .expect("2 rows");
    assert_eq!(t.rows.len(), 2);
    let quick = SqlLimits {
        max_rows: 10,
        timeout: Duration::from_millis(200),
    };
    let e = engine
        .run(
            &tenant("acme"),
            "SELECT count(*) FROM generate_series(1, 10000000000) a",
            quick,
        )
        .await
        .expect_err("too slow");
    assert!(matches!(e, SqlError::Timeout(_)), "{e:?}");
}

#[tokio::test]
async fn memory_is_bounded_by_the_pool() {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0).unwrap());
    let store = Arc::new(MemoryStore::new(clock));
    let engine = DataFusionEngine::new(
        store as Arc<dyn EventStore>,
        None,
        SqlEngineConfig {
            threads: 1,
            memory_bytes: 2 * 1024 * 1024,
        },
    )
    .expect("engine");
    let e = engine
        .run(
            &tenant("acme"),
            "SELECT a.value % 1000000 AS k, count(*) FROM generate_series(1, 5000000) a GROUP BY 1 ORDER BY 1",
            SqlLimits {
                max_rows: 10,
                timeout: Duration::from_secs(60),
            },
        )
        .await
        .expect_err("needs more than 2 MiB");
    assert!(
        matches!(
            e,
            SqlError::ResourcesExhausted(_) | SqlError::TooManyRows(_)
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn explain_shows_the_plan() {
    let (_, engine) = two_tenants().await;
    let t = run(
        &engine,
        "acme",
        "EXPLAIN SELECT event_type, count(*) FROM events WHERE entity_id = 'order-1' GROUP BY 1",
    )
    .await
    .expect("explain");
    assert_eq!(t.columns, ["plan_type", "plan"]);
    assert!(t.rows.len() >= 2, "{t:?}");
}

#[tokio::test]
async fn json_functions_read_the_payload() {
    let (_, engine) = two_tenants().await;
    let t = run(
        &engine,
        "acme",
        "SELECT json_get_str(payload, 'customer', 'tier') AS tier, payload->>'total' AS total \
         FROM events WHERE event_type = 'order.placed' ORDER BY position",
    )
    .await
    .expect("query");
    assert_eq!(column(&t, "tier"), [json!("gold"), json!("silver")]);
    assert_eq!(column(&t, "total"), [json!("10"), json!("25.5")]);
    let t = run(
        &engine,
        "acme",
        "SELECT event_type, count(*) AS n FROM events \
         WHERE timestamp >= TIMESTAMP '2026-02-01T00:00:00Z' GROUP BY event_type ORDER BY event_type",
    )
    .await
    .expect("query");
    assert_eq!(
        column(&t, "event_type"),
        [json!("order.placed"), json!("order.shipped")]
    );
    assert_eq!(column(&t, "n"), [json!(2), json!(1)]);
}

mod embedded {
    use super::*;
    use crate::clock::SystemClock;
    use crate::embedded::{Durability, EmbeddedConfig, EmbeddedStore};
    use allsource_application::ports::{Compactor, EventQuery};

    fn open(dir: &std::path::Path) -> Arc<EmbeddedStore> {
        let config = EmbeddedConfig {
            data_dir: dir.to_path_buf(),
            durability: Durability::None,
            segment_bytes: 4096,
            ..EmbeddedConfig::default()
        };
        Arc::new(EmbeddedStore::open(config, Arc::new(SystemClock)).expect("open"))
    }

    /// Appends 300 events over two tenants and waits until most of them are in Parquet.
    async fn filled(store: &EmbeddedStore) {
        for i in 0..150 {
            let who = if i % 3 == 0 { "globex" } else { "acme" };
            store
                .append(
                    &tenant(who),
                    vec![
                        proposed(
                            &format!("e{}", i % 7),
                            "item.added",
                            json!({"n": i, "pad": "x".repeat(60)}),
                        ),
                        proposed(&format!("e{}", i % 5), "item.removed", json!({"n": -i})),
                    ],
                )
                .await
                .expect("append");
        }
        for _ in 0..1000 {
            let stats = store.stats(&tenant("acme")).await.expect("stats");
            if stats.storage["parquet_files"].as_u64().unwrap_or(0) >= 3
                && stats.storage["wal_segments"] == 1
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the sealer did not catch up");
    }

    async fn through_the_port(store: &EmbeddedStore, who: &str) -> Vec<Value> {
        let page = store
            .query(
                &tenant(who),
                EventQuery {
                    limit: 10_000,
                    ..EventQuery::default()
                },
            )
            .await
            .expect("query");
        page.events
            .iter()
            .map(|e| {
                json!([
                    e.id.as_uuid().hyphenated().to_string(),
                    e.entity_id.as_str(),
                    e.event_type.as_str(),
                    e.version.get(),
                    e.position.get(),
                    e.payload.get(),
                ])
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_files_and_the_tail_give_what_the_port_gives() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        filled(&store).await;
        let engine = DataFusionEngine::new(
            store.clone() as Arc<dyn EventStore>,
            Some(store.sealed_files()),
            SqlEngineConfig::default(),
        )
        .expect("engine");
        for who in ["acme", "globex"] {
            let t = engine
                .run(
                    &tenant(who),
                    "SELECT id, entity_id, event_type, version, position, payload FROM events ORDER BY position",
                    LIMITS,
                )
                .await
                .expect("select");
            let rows: Vec<Value> = t.rows.iter().map(|r| Value::Array(r.clone())).collect();
            assert_eq!(rows, through_the_port(&store, who).await, "{who}");
        }
        let t = engine
            .run(
                &tenant("acme"),
                "SELECT count(*) AS n, sum(json_get_int(payload, 'n')) AS s FROM events \
                 WHERE event_type = 'item.added' AND position > 10",
                LIMITS,
            )
            .await
            .expect("aggregate");
        let (mut n, mut s) = (0_i64, 0_i64);
        for i in 0..150_i64 {
            // acme's appends are those with i % 3 != 0; positions count every append's two events.
            if i % 3 != 0 && 2 * i + 1 > 10 {
                n += 1;
                s += i;
            }
        }
        assert_eq!(t.rows, [vec![json!(n), json!(s)]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relative_data_dir_is_read_too() {
        let dir = tempfile::tempdir_in(".").expect("dir");
        let relative = std::path::Path::new(".").join(dir.path().file_name().expect("name"));
        let store = open(&relative);
        filled(&store).await;
        let engine = DataFusionEngine::new(
            store.clone() as Arc<dyn EventStore>,
            Some(store.sealed_files()),
            SqlEngineConfig::default(),
        )
        .expect("engine");
        let t = engine
            .run(&tenant("acme"), "SELECT count(*) AS n FROM events", LIMITS)
            .await
            .expect("count");
        assert_eq!(t.rows, [vec![json!(200)]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_does_not_delete_files_a_statement_still_reads() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        filled(&store).await;
        let cut = store.sealed_files().sealed().await;
        assert!(cut.files.len() >= 3);
        let compactor = store.compactor();
        let compaction = tokio::spawn(async move { compactor.trigger().await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (path, _) in &cut.files {
            assert!(path.exists(), "{} deleted under a reader", path.display());
        }
        assert!(!compaction.is_finished(), "compaction waits for the reader");
        drop(cut);
        let report = compaction.await.expect("join").expect("compaction");
        assert!(report.compacted, "{report:?}");
    }
}

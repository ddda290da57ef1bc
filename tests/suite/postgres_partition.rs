//! The postgres backend's log partitioned by tenant (`admin postgres-partition`): converting a
//! populated log keeps every answer of every tenant and the position sequence, a store opened
//! before the conversion keeps working, a second run changes nothing, another partition count
//! is refused without changes; the CLI on the real binary. The contract suite runs on a
//! partitioned log too (`contract::postgres_partitioned`).

use std::process::Command;
use std::sync::Arc;

use allsource_application::ports::{
    EntityListQuery, EntityOrder, EventQuery, EventStore, StreamRange,
};
use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion, ProposedEvent, TenantId};
use allsource_infrastructure::SystemClock;
use allsource_infrastructure::postgres::{
    EventsLayout, PartitionError, PostgresConfig, PostgresStore,
};
use allsource_tests::pg::TestDatabase;
use allsource_tests::process::binary;
use serde_json::Value;
use serde_json::value::RawValue;

fn event(entity: &str, n: usize) -> ProposedEvent {
    ProposedEvent {
        id: EventId::generate(),
        entity_id: EntityId::parse(entity).expect("entity"),
        event_type: EventType::parse(if n.is_multiple_of(2) {
            "order.placed"
        } else {
            "order.paid"
        })
        .expect("type"),
        payload: RawValue::from_string(format!(r#"{{"n": {n}, "text": "ä \u00e9"}}"#))
            .expect("json"),
        metadata: None,
        expected_version: ExpectedVersion::Any,
    }
}

async fn connect(url: &str) -> PostgresStore {
    let config = PostgresConfig {
        url: url.to_owned(),
        max_connections: 4,
        ..PostgresConfig::default()
    };
    PostgresStore::connect(&config, Arc::new(SystemClock))
        .await
        .expect("connect")
}

fn tenants() -> Vec<TenantId> {
    ["default", "acme", "globex"]
        .into_iter()
        .map(|t| TenantId::parse(t).expect("tenant"))
        .collect()
}

/// Everything a tenant can read, as text: the whole log, one stream, the entities, the types
/// and the event count.
async fn everything(store: &PostgresStore, tenant: &TenantId) -> String {
    let log = store
        .query(
            tenant,
            EventQuery {
                limit: 10_000,
                ..Default::default()
            },
        )
        .await
        .expect("query");
    let stream = store
        .read_stream(
            tenant,
            &EntityId::parse("order-1").expect("entity"),
            StreamRange::ALL,
        )
        .await
        .expect("stream");
    let entities = store
        .list_entities(
            tenant,
            EntityListQuery {
                limit: 1000,
                offset: 0,
                event_type_prefix: None,
                order: EntityOrder::Asc,
            },
        )
        .await
        .expect("entities");
    let types = store.event_types(tenant).await.expect("types");
    let stats = store.stats(tenant).await.expect("stats");
    format!(
        "{:?}\n{stream:?}\n{entities:?}\n{types:?}\n{}",
        log.events, stats.total_events
    )
}

/// A populated log of three tenants, converted under a store that stays open: every answer of
/// every tenant is the same after, positions and versions continue, and a fresh node reads
/// the same; a second run with the same count changes nothing; another count is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioning_a_populated_log_keeps_every_answer() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = connect(db.url()).await;
    let mut n = 0;
    for round in 0..5 {
        for tenant in tenants() {
            let batch = (0..=round)
                .map(|i| {
                    n += 1;
                    event(&format!("order-{}", i % 3), n)
                })
                .collect();
            store.append(&tenant, batch).await.expect("append");
        }
    }
    assert_eq!(
        store.events_layout().await.expect("layout"),
        EventsLayout::Plain
    );
    let mut before = Vec::new();
    for tenant in tenants() {
        before.push(everything(&store, &tenant).await);
    }

    let mut reports = Vec::new();
    let outcome = store
        .partition_by_tenant(3, |copied, total| reports.push((copied, total)))
        .await
        .expect("partition");
    assert_eq!(outcome.partitions, 3);
    assert_eq!(outcome.events, 45);
    assert!(!outcome.unchanged);
    assert_eq!(reports.first(), Some(&(0, 45)));
    assert_eq!(reports.last(), Some(&(45, 45)));
    assert_eq!(
        store.events_layout().await.expect("layout"),
        EventsLayout::ByTenant { partitions: 3 }
    );

    // The store opened before the conversion: same answers, and appends continue the log.
    for (tenant, before) in tenants().iter().zip(&before) {
        assert_eq!(&everything(&store, tenant).await, before, "{tenant:?}");
    }
    let acme = TenantId::parse("acme").expect("tenant");
    let receipt = store
        .append(
            &acme,
            vec![ProposedEvent {
                // order-0 got events at i = 0 in every round and at i = 3 in the last two.
                expected_version: ExpectedVersion::Exact(7),
                ..event("order-0", 46)
            }],
        )
        .await
        .expect("append after partitioning");
    assert_eq!(receipt[0].position.get(), 46);
    assert_eq!(receipt[0].version.get(), 8);

    // A fresh node (its migrations check the partitioned table) reads the same of the
    // tenants that did not append since.
    let fresh = connect(db.url()).await;
    for (tenant, before) in tenants().iter().zip(&before) {
        if *tenant != acme {
            assert_eq!(&everything(&fresh, tenant).await, before, "{tenant:?}");
        }
    }

    let again = store
        .partition_by_tenant(3, |_, _| {})
        .await
        .expect("same count again");
    assert!(again.unchanged, "{again:?}");
    match store.partition_by_tenant(5, |_, _| {}).await {
        Err(e @ PartitionError::OtherCount { existing: 3 }) => {
            assert!(e.to_string().contains("already partitioned"), "{e}");
        }
        other => panic!("another partition count: {other:?}"),
    }
    assert_eq!(
        fresh.events_layout().await.expect("layout"),
        EventsLayout::ByTenant { partitions: 3 }
    );
    assert_eq!(
        fresh.stats(&acme).await.expect("stats").total_events,
        16,
        "nothing changed"
    );
    fresh.shutdown().await.expect("shutdown");
    store.shutdown().await.expect("shutdown");
}

/// The real binary: converts, prints what it did, changes nothing the second time, refuses a
/// count out of range as a usage error and a config without postgres with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_partitions_the_log_of_a_database() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(["admin", "postgres-partition"])
            .args(args)
            .env_remove("ALLSOURCE__STORAGE__BACKEND")
            .output()
            .expect("run the binary")
    };
    let first = run(&["--url", db.url(), "--partitions", "2"]);
    assert!(first.status.success(), "{first:?}");
    let printed: Value = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!(printed["partitions"], 2, "{printed}");
    assert_eq!(printed["unchanged"], false, "{printed}");
    let second = run(&["--url", db.url(), "--partitions", "2"]);
    let printed: Value = serde_json::from_slice(&second.stdout).expect("json");
    assert_eq!(printed["unchanged"], true, "{printed}");

    let refused = run(&["--url", db.url(), "--partitions", "3"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already partitioned by tenant into 2"),
        "{refused:?}"
    );
    let out_of_range = run(&["--url", db.url(), "--partitions", "0"]);
    assert_eq!(out_of_range.status.code(), Some(2), "{out_of_range:?}");
    assert!(
        String::from_utf8_lossy(&out_of_range.stderr).contains("--partitions"),
        "{out_of_range:?}"
    );
    let no_postgres = run(&["--partitions", "2"]);
    assert_eq!(no_postgres.status.code(), Some(1), "{no_postgres:?}");
    assert!(
        String::from_utf8_lossy(&no_postgres.stderr).contains("storage.backend is not postgres"),
        "{no_postgres:?}"
    );
}

//! Use-case tests of consumers and followers: the shared multi-tenant log, the in-memory state
//! store, an audit log that accepts everything, and quota gates that are told what to answer.

use std::sync::Arc;

use allsource_domain::{Role, TenantId};
use chrono::{DateTime, Utc};

use super::*;
use crate::Principal;
use crate::ports::MockAuditLog;
use crate::quota::{MockQuotaGate, Unlimited};
use crate::subscriptions::Delivery;
use crate::testing::{MemoryStateStore, SharedLog};

struct NowClock;
impl Clock for NowClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

fn audit() -> Arc<MockAuditLog> {
    let mut audit = MockAuditLog::new();
    audit.expect_record().returning(|_| Ok(()));
    Arc::new(audit)
}

struct World {
    log: Arc<SharedLog>,
    state: Arc<MemoryStateStore>,
    consumers: Consumers,
}

fn world_with(quotas: Arc<dyn QuotaGate>) -> World {
    let log = SharedLog::new(64);
    let state = Arc::new(MemoryStateStore::new());
    let consumers = Consumers::new(ConsumersDeps {
        store: log.clone(),
        state: state.clone(),
        feed: log.feed(),
        audit: audit(),
        clock: Arc::new(NowClock),
        quotas,
    });
    World {
        log,
        state,
        consumers,
    }
}

fn world() -> World {
    world_with(Arc::new(Unlimited))
}

fn caller(tenant: &str, role: Role) -> Caller {
    Caller::authenticated(
        TenantId::parse(tenant).expect("tenant"),
        role,
        Principal::User {
            user_id: "u1".into(),
            username: "alice".into(),
        },
    )
}

fn writer(tenant: &str) -> Caller {
    caller(tenant, Role::ServiceAccount)
}

fn register(id: &str, filters: &[&str]) -> RegisterConsumerInput {
    RegisterConsumerInput {
        consumer_id: Some(id.into()),
        event_type_filters: Some(filters.iter().map(|f| (*f).to_owned()).collect()),
    }
}

fn fields(e: ConsumerError) -> Vec<String> {
    match e {
        ConsumerError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn an_upsert_creates_then_changes_filters_and_keeps_the_cursor() {
    let w = world();
    let a = writer("a");
    let created = w
        .consumers
        .upsert(&a, register("w1", &["order.*"]))
        .await
        .expect("created");
    assert_eq!(created.cursor_position, None);
    assert_eq!(created.filters.to_strings(), ["order.*"]);
    w.log
        .append("a", &[("o1", "order.placed"), ("o1", "order.paid")]);
    assert_eq!(w.consumers.ack(&a, "w1", Some(1)).await.expect("ack"), 1);
    let updated = w
        .consumers
        .upsert(&a, register("w1", &["order.paid"]))
        .await
        .expect("updated");
    assert_eq!(updated.cursor_position, Some(1), "the cursor is kept");
    assert_eq!(updated.filters.to_strings(), ["order.paid"]);
    assert_eq!(updated.created_at, created.created_at);
    let listed = w.consumers.list(&a).await.expect("list");
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn bad_names_and_filters_are_refused_naming_the_field() {
    let w = world();
    let a = writer("a");
    let e = w
        .consumers
        .upsert(&a, register("bad name", &["ok", "not ok"]))
        .await
        .expect_err("refused");
    assert_eq!(fields(e), ["consumer_id", "event_type_filters[1]"]);
    let e = w
        .consumers
        .upsert(&a, RegisterConsumerInput::default())
        .await
        .expect_err("refused");
    assert_eq!(fields(e), ["consumer_id"]);
    assert!(
        w.state
            .keys(&TenantId::parse("a").expect("t"), CONSUMERS_NAMESPACE)
            .is_empty()
    );
}

#[tokio::test]
async fn a_poll_returns_matching_events_after_the_cursor_until_acked() {
    let w = world();
    let a = writer("a");
    w.consumers
        .upsert(&a, register("w1", &["x.*"]))
        .await
        .expect("created");
    w.log
        .append("a", &[("e", "x.one"), ("e", "y"), ("e", "x.two")]);
    w.log.append("b", &[("e", "x.one")]);
    let polled = w.consumers.poll(&a, "w1", None).await.expect("poll");
    let positions: Vec<u64> = polled.events.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, [1, 3]);
    assert!(!polled.has_more);
    let again = w.consumers.poll(&a, "w1", Some("1")).await.expect("poll");
    assert_eq!(again.events[0].position.get(), 1, "unacked: the same again");
    assert!(again.has_more);
    w.consumers.ack(&a, "w1", Some(1)).await.expect("ack");
    let after = w.consumers.poll(&a, "w1", None).await.expect("poll");
    assert_eq!(after.events.len(), 1);
    assert_eq!(after.events[0].position.get(), 3);
    for bad in ["0", "10001", "x", "-1"] {
        let e = w
            .consumers
            .poll(&a, "w1", Some(bad))
            .await
            .expect_err("refused");
        assert_eq!(fields(e), ["limit"], "{bad}");
    }
}

#[tokio::test]
async fn acks_are_monotonic_and_bounded_by_the_log() {
    let w = world();
    let a = writer("a");
    w.consumers
        .upsert(&a, register("w1", &[]))
        .await
        .expect("created");
    w.log.append("a", &[("e", "t"), ("e", "t"), ("e", "t")]);
    assert_eq!(w.consumers.ack(&a, "w1", Some(2)).await.expect("ack"), 2);
    assert_eq!(
        w.consumers.ack(&a, "w1", Some(1)).await.expect("older"),
        2,
        "an older ack answers the cursor"
    );
    let e = w
        .consumers
        .ack(&a, "w1", Some(4))
        .await
        .expect_err("past the log");
    assert_eq!(fields(e), ["position"]);
    let e = w.consumers.ack(&a, "w1", None).await.expect_err("missing");
    assert_eq!(fields(e), ["position"]);
    // Another tenant's later events do not widen this tenant's bound.
    w.log.append("b", &[("e", "t"), ("e", "t")]);
    assert!(w.consumers.ack(&a, "w1", Some(5)).await.is_err());
    assert_eq!(
        w.consumers
            .get(&a, "w1")
            .await
            .expect("get")
            .cursor_position,
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_leave_the_highest() {
    let w = world();
    let a = writer("a");
    w.consumers
        .upsert(&a, register("w1", &[]))
        .await
        .expect("created");
    let events: Vec<(&str, &str)> = (0..50).map(|_| ("e", "t")).collect();
    w.log.append("a", &events);
    let mut tasks = Vec::new();
    for p in 1..=50u64 {
        let consumers = w.consumers.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            consumers.ack(&a, "w1", Some(p)).await.expect("ack")
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        w.consumers
            .get(&a, "w1")
            .await
            .expect("get")
            .cursor_position,
        Some(50)
    );
}

#[tokio::test]
async fn consumers_of_another_tenant_are_invisible() {
    let w = world();
    w.consumers
        .upsert(&writer("a"), register("w1", &[]))
        .await
        .expect("created");
    let b = writer("b");
    assert!(matches!(
        w.consumers.get(&b, "w1").await,
        Err(ConsumerError::NotFound(_))
    ));
    assert!(matches!(
        w.consumers.poll(&b, "w1", None).await,
        Err(ConsumerError::NotFound(_))
    ));
    assert!(matches!(
        w.consumers.delete(&b, "w1").await,
        Err(ConsumerError::NotFound(_))
    ));
    assert!(w.consumers.list(&b).await.expect("list").is_empty());
    w.consumers
        .delete(&writer("a"), "w1")
        .await
        .expect("deleted");
    assert!(matches!(
        w.consumers.delete(&writer("a"), "w1").await,
        Err(ConsumerError::NotFound(_))
    ));
}

#[tokio::test]
async fn following_a_consumer_replays_after_its_cursor_then_goes_live() {
    let w = world();
    let a = writer("a");
    w.consumers
        .upsert(&a, register("w1", &["x"]))
        .await
        .expect("created");
    w.log.append("a", &[("e", "x"), ("e", "y"), ("e", "x")]);
    w.consumers.ack(&a, "w1", Some(1)).await.expect("ack");
    let (view, mut followed) = w.consumers.follow_consumer(&a, "w1").await.expect("follow");
    assert_eq!(view.cursor_position, Some(1));
    let Delivery::Event { event, .. } = followed.subscription.next().await.expect("next") else {
        panic!("an event first");
    };
    assert_eq!(event.position.get(), 3);
    assert_eq!(
        followed.subscription.next().await.expect("next"),
        Delivery::CaughtUp
    );
    w.log.append("a", &[("e", "x")]);
    let Delivery::Event { event, live } = followed.subscription.next().await.expect("next") else {
        panic!("a live event");
    };
    assert_eq!((event.position.get(), live), (4, true));
}

#[tokio::test]
async fn following_a_missing_consumer_creates_it_only_for_writers() {
    let w = world();
    let e = w
        .consumers
        .follow_consumer(&caller("a", Role::Readonly), "w1")
        .await
        .expect_err("forbidden");
    assert!(matches!(e, ConsumerError::Forbidden(_)), "{e:?}");
    let (view, _followed) = w
        .consumers
        .follow_consumer(&writer("a"), "w1")
        .await
        .expect("created");
    assert_eq!(view.cursor_position, None);
    assert!(view.filters.matches_all());
    // Now it exists, a reader may follow it.
    w.consumers
        .follow_consumer(&caller("a", Role::Readonly), "w1")
        .await
        .expect("follows");
}

#[tokio::test]
async fn a_follower_takes_a_subscription_and_gives_it_back_when_gone() {
    let mut quotas = MockQuotaGate::new();
    quotas
        .expect_consume()
        .withf(|t, kind, n| t.as_str() == "a" && *kind == QuotaKind::Subscriptions && *n == 1)
        .times(1)
        .returning(|_, _, _| Ok(()));
    quotas.expect_consume().times(1).returning(|_, _, _| {
        Err(GateError::QuotaExceeded(QuotaExceeded {
            quota: "max_subscriptions".into(),
            limit: 1,
            used: 1,
            retry_after_secs: 60,
        }))
    });
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let release = std::sync::Mutex::new(Some(release));
    quotas
        .expect_release()
        .withf(|t, kind, n| t.as_str() == "a" && *kind == QuotaKind::Subscriptions && *n == 1)
        .times(1)
        .returning(move |_, _, _| {
            if let Some(tx) = release.lock().expect("lock").take() {
                let _ = tx.send(());
            }
        });
    let w = world_with(Arc::new(quotas));
    let a = writer("a");
    let followed = w
        .consumers
        .follow(&a, FollowInput::default())
        .await
        .expect("first");
    let e = w
        .consumers
        .follow(&a, FollowInput::default())
        .await
        .expect_err("second");
    assert!(matches!(e, ConsumerError::QuotaExceeded(_)), "{e:?}");
    drop(followed);
    tokio::time::timeout(std::time::Duration::from_secs(5), released)
        .await
        .expect("released")
        .expect("sent");
}

#[tokio::test]
async fn follow_input_is_validated() {
    let w = world();
    let e = w
        .consumers
        .follow(
            &writer("a"),
            FollowInput {
                filters: vec!["ok.*".into(), "bad*".into()],
                entity_id: Some(String::new()),
                after: None,
            },
        )
        .await
        .expect_err("refused");
    assert_eq!(fields(e), ["filters[1]", "entity_id"]);
}

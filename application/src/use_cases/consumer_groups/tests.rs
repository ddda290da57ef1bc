//! Consumer groups over [`SharedLog`] (a multi-tenant log publishing to a real feed) and the
//! in-memory state store: competing members, redelivery, nack, parking and replay, crashes
//! between delivery and ack (a new use-case instance over the same state), and two instances
//! racing on one state store (as two nodes on one database).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use allsource_domain::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::Value;

use super::*;
use crate::ports::{AuditError, AuditQuery, StateEntry};
use crate::testing::{MemoryStateStore, SharedLog};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn caller(name: &str) -> Caller {
    Caller::new(tenant(name))
}

/// Time that moves only when told to.
struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            DateTime::from_timestamp_millis(1_800_000_000_000).expect("time"),
        )))
    }

    fn advance(&self, ms: i64) {
        let mut now = self.0.lock();
        *now += chrono::Duration::milliseconds(ms);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

/// The wall clock, for the tests of long polls.
struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Keeps every audit record.
#[derive(Default)]
struct Recorded(Mutex<Vec<AuditRecord>>);

#[async_trait]
impl AuditLog for Recorded {
    async fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        self.0.lock().push(record);
        Ok(())
    }
    async fn query(&self, _: AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self.0.lock().clone())
    }
}

/// A state store that counts the compare-and-swap writes it refused.
struct CountingConflicts {
    inner: Arc<MemoryStateStore>,
    conflicts: AtomicUsize,
}

#[async_trait]
impl StateStore for CountingConflicts {
    async fn get(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<Option<StateEntry>, StateError> {
        self.inner.get(tenant, namespace, key).await
    }
    async fn put(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
        value: Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let outcome = self
            .inner
            .put(tenant, namespace, key, value, expected)
            .await;
        if matches!(outcome, Err(StateError::VersionConflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        outcome
    }
    async fn delete(
        &self,
        tenant: &TenantId,
        namespace: &str,
        key: &str,
    ) -> Result<bool, StateError> {
        self.inner.delete(tenant, namespace, key).await
    }
    async fn list(
        &self,
        tenant: &TenantId,
        namespace: &str,
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, StateEntry)>, StateError> {
        self.inner
            .list(tenant, namespace, prefix, after, limit)
            .await
    }
}

struct Fixture {
    log: Arc<SharedLog>,
    state: Arc<MemoryStateStore>,
    clock: Arc<ManualClock>,
    audit: Arc<Recorded>,
    groups: ConsumerGroups,
}

impl Fixture {
    fn new() -> Self {
        let log = SharedLog::new(64);
        let state = Arc::new(MemoryStateStore::new());
        let clock = ManualClock::new();
        let audit = Arc::new(Recorded::default());
        let groups = over(&log, state.clone(), clock.clone(), audit.clone());
        Self {
            log,
            state,
            clock,
            audit,
            groups,
        }
    }

    /// A new use-case instance over the same log and state (a restarted node).
    fn restart(&self) -> ConsumerGroups {
        over(
            &self.log,
            self.state.clone(),
            self.clock.clone(),
            self.audit.clone(),
        )
    }

    fn append(&self, tenant: &str, n: usize, event_type: &str) -> Vec<u64> {
        let events: Vec<(String, &str)> = (0..n).map(|i| (format!("e{i}"), event_type)).collect();
        let refs: Vec<(&str, &str)> = events.iter().map(|(e, t)| (e.as_str(), *t)).collect();
        self.log
            .append(tenant, &refs)
            .iter()
            .map(|e| e.position.get())
            .collect()
    }
}

fn over(
    log: &Arc<SharedLog>,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    audit: Arc<dyn AuditLog>,
) -> ConsumerGroups {
    ConsumerGroups::new(log.clone(), log.feed(), state, audit, clock)
        .with_recheck(Duration::from_millis(20))
}

fn group(name: &str) -> GroupInput {
    GroupInput {
        group: Some(name.into()),
        ..GroupInput::default()
    }
}

fn poll_input(member: &str, max: u64) -> PollInput {
    PollInput {
        member: Some(member.into()),
        max: Some(max),
        wait_ms: None,
    }
}

async fn poll(groups: &ConsumerGroups, name: &str, member: &str, max: u64) -> Vec<Message> {
    groups
        .poll(&caller("acme"), name, poll_input(member, max))
        .await
        .expect("poll")
}

fn positions(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.event.position.get()).collect()
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.delivery_id.clone()).collect()
}

async fn ack(groups: &ConsumerGroups, name: &str, ids: Vec<String>) -> Settled {
    groups
        .ack(&caller("acme"), name, Some(ids))
        .await
        .expect("ack")
}

fn fields(error: GroupError) -> Vec<String> {
    match error {
        GroupError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("not a validation error: {other:?}"),
    }
}

#[tokio::test]
async fn a_group_is_created_with_defaults_listed_read_updated_and_deleted_with_audit() {
    let f = Fixture::new();
    let created = f
        .groups
        .create(&caller("acme"), group("workers"))
        .await
        .expect("create");
    assert_eq!(created.group, "workers");
    assert_eq!(created.config.filters, Vec::<String>::new());
    assert_eq!(created.config.ack_timeout_ms, DEFAULT_ACK_TIMEOUT_MS);
    assert_eq!(
        u64::from(created.config.max_in_flight),
        DEFAULT_MAX_IN_FLIGHT
    );
    assert_eq!(
        u64::from(created.config.max_deliveries),
        DEFAULT_MAX_DELIVERIES
    );
    let again = f.groups.create(&caller("acme"), group("workers")).await;
    assert!(matches!(again, Err(GroupError::Conflict(_))), "{again:?}");

    let updated = f
        .groups
        .update(
            &caller("acme"),
            "workers",
            GroupInput {
                event_type_filters: Some(vec!["order.*".into(), "order.*".into()]),
                max_deliveries: Some(2),
                ..GroupInput::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.config.filters, vec!["order.*".to_owned()]);
    assert_eq!(updated.config.max_deliveries, 2);
    assert_eq!(
        updated.config.ack_timeout_ms, DEFAULT_ACK_TIMEOUT_MS,
        "kept"
    );
    let read = f.groups.get(&caller("acme"), "workers").await.expect("get");
    assert_eq!(read, updated);
    assert_eq!(f.groups.list(&caller("acme")).await.expect("list").len(), 1);

    f.groups
        .delete(&caller("acme"), "workers")
        .await
        .expect("delete");
    assert!(matches!(
        f.groups.get(&caller("acme"), "workers").await,
        Err(GroupError::NotFound(_))
    ));
    assert!(matches!(
        f.groups.delete(&caller("acme"), "workers").await,
        Err(GroupError::NotFound(_))
    ));
    assert!(
        f.groups
            .list(&caller("acme"))
            .await
            .expect("list")
            .is_empty()
    );
    // The name can be used again; the new group starts from scratch.
    let fresh = f
        .groups
        .create(&caller("acme"), group("workers"))
        .await
        .expect("again");
    assert_eq!(fresh.config.max_deliveries as u64, DEFAULT_MAX_DELIVERIES);

    let actions: Vec<String> = f.audit.0.lock().iter().map(|r| r.action.clone()).collect();
    assert_eq!(
        actions,
        [
            "consumer_group.create",
            "consumer_group.update",
            "consumer_group.delete",
            "consumer_group.create"
        ]
    );
    assert!(
        f.audit
            .0
            .lock()
            .iter()
            .all(|r| r.tenant_id == "acme" && r.resource.as_deref() == Some("workers"))
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_every_field_and_changes_nothing() {
    let f = Fixture::new();
    let bad = f
        .groups
        .create(
            &caller("acme"),
            GroupInput {
                group: Some("a b".into()),
                event_type_filters: Some(vec!["ok".into(), "bad type".into()]),
                start_position: None,
                ack_timeout_ms: Some(5),
                max_in_flight: Some(0),
                max_deliveries: Some(MAX_DELIVERIES + 1),
            },
        )
        .await
        .expect_err("refused");
    assert_eq!(
        fields(bad),
        [
            "group",
            "event_type_filters[1]",
            "ack_timeout_ms",
            "max_in_flight",
            "max_deliveries"
        ]
    );
    let missing = f
        .groups
        .create(&caller("acme"), GroupInput::default())
        .await;
    assert_eq!(fields(missing.expect_err("refused")), ["group"]);
    let past_end = f
        .groups
        .create(
            &caller("acme"),
            GroupInput {
                start_position: Some(5),
                ..group("g")
            },
        )
        .await;
    assert_eq!(fields(past_end.expect_err("refused")), ["start_position"]);
    assert!(f.state.keys(&tenant("acme"), NAMESPACE).is_empty());

    f.groups
        .create(&caller("acme"), group("g"))
        .await
        .expect("create");
    let poll = f
        .groups
        .poll(
            &caller("acme"),
            "g",
            PollInput {
                member: Some("x/y".into()),
                max: Some(0),
                wait_ms: Some(MAX_WAIT_MS + 1),
            },
        )
        .await;
    assert_eq!(
        fields(poll.expect_err("refused")),
        ["member", "max", "wait_ms"]
    );
    let no_member = f
        .groups
        .poll(&caller("acme"), "g", PollInput::default())
        .await;
    assert_eq!(fields(no_member.expect_err("refused")), ["member"]);
    let bad_group = f
        .groups
        .poll(&caller("acme"), "a b", poll_input("m", 1))
        .await;
    assert_eq!(fields(bad_group.expect_err("refused")), ["group"]);
    for ids in [None, Some(vec![]), Some(vec!["not-a-uuid".to_owned()])] {
        let refused = f.groups.ack(&caller("acme"), "g", ids.clone()).await;
        let named = fields(refused.expect_err("refused"));
        assert!(named[0].starts_with("delivery_ids"), "{ids:?}: {named:?}");
    }
    let change_start = f
        .groups
        .update(
            &caller("acme"),
            "g",
            GroupInput {
                start_position: Some(1),
                ..GroupInput::default()
            },
        )
        .await;
    assert_eq!(
        fields(change_start.expect_err("refused")),
        ["start_position"]
    );
    let other_name = f.groups.update(&caller("acme"), "g", group("h")).await;
    assert_eq!(fields(other_name.expect_err("refused")), ["group"]);
    let limit = f
        .groups
        .parked(
            &caller("acme"),
            "g",
            ParkedInput {
                limit: Some("0".into()),
                after: Some("x".into()),
            },
        )
        .await;
    assert_eq!(fields(limit.expect_err("refused")), ["limit", "after"]);
    let unknown = f
        .groups
        .poll(&caller("acme"), "nope", poll_input("m", 1))
        .await;
    assert!(matches!(unknown, Err(GroupError::NotFound(_))));
}

#[tokio::test]
async fn messages_follow_the_filters_and_the_start_position_in_position_order() {
    let f = Fixture::new();
    let first = f.append("acme", 2, "order.placed");
    f.append("acme", 2, "customer.created");
    let later = f.append("acme", 3, "order.paid");
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                event_type_filters: Some(vec!["order.*".into()]),
                start_position: Some(first[0]),
                ..group("orders")
            },
        )
        .await
        .expect("create");
    let got = poll(&f.groups, "orders", "m", 100).await;
    let mut expected = vec![first[1]];
    expected.extend(&later);
    assert_eq!(positions(&got), expected);
    assert!(got.iter().all(|m| m.attempt == 1));
    let distinct: BTreeSet<_> = ids(&got).into_iter().collect();
    assert_eq!(distinct.len(), got.len(), "one delivery id per message");
    assert!(
        poll(&f.groups, "orders", "m", 100).await.is_empty(),
        "all leased"
    );
}

#[tokio::test]
async fn max_in_flight_bounds_what_is_leased_at_once() {
    let f = Fixture::new();
    f.append("acme", 10, "t");
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                max_in_flight: Some(3),
                ..group("g")
            },
        )
        .await
        .expect("create");
    let a = poll(&f.groups, "g", "a", 2).await;
    let b = poll(&f.groups, "g", "b", 10).await;
    assert_eq!((a.len(), b.len()), (2, 1));
    assert!(poll(&f.groups, "g", "c", 10).await.is_empty());
    ack(&f.groups, "g", ids(&a)).await;
    let c = poll(&f.groups, "g", "c", 10).await;
    assert_eq!(positions(&c), vec![4, 5]);
    let stats = f.groups.stats(&caller("acme"), "g").await.expect("stats");
    assert_eq!((stats.in_flight, stats.waiting, stats.lag), (3, 0, 5));
    assert_eq!((stats.read_position, stats.committed_position), (5, 2));
    assert_eq!(stats.counters.delivered, 5);
    assert_eq!(stats.counters.acked, 2);
    let members: Vec<_> = stats
        .members
        .iter()
        .map(|m| (m.member.as_str(), m.in_flight))
        .collect();
    assert_eq!(members, [("a", 0), ("b", 1), ("c", 2)]);
}

#[tokio::test]
async fn an_unacked_message_goes_to_another_member_after_its_ack_timeout_only() {
    let f = Fixture::new();
    f.append("acme", 3, "t");
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                ack_timeout_ms: Some(1000),
                ..group("g")
            },
        )
        .await
        .expect("create");
    let a = poll(&f.groups, "g", "a", 10).await;
    assert_eq!(positions(&a), vec![1, 2, 3]);
    f.clock.advance(999);
    assert!(
        poll(&f.groups, "g", "b", 10).await.is_empty(),
        "still held by a"
    );
    f.clock.advance(1);
    let b = poll(&f.groups, "g", "b", 10).await;
    assert_eq!(positions(&b), vec![1, 2, 3]);
    assert!(b.iter().all(|m| m.attempt == 2));
    assert!(
        ids(&b).iter().all(|id| !ids(&a).contains(id)),
        "new delivery ids"
    );
    // a's acks come too late: the messages went out again.
    let late = ack(&f.groups, "g", ids(&a)).await;
    assert_eq!((late.settled, late.ignored.len()), (0, 3));
    let on_time = ack(&f.groups, "g", ids(&b)).await;
    assert_eq!((on_time.settled, on_time.ignored.len()), (3, 0));
    f.clock.advance(10_000);
    assert!(
        poll(&f.groups, "g", "a", 10).await.is_empty(),
        "acked for good"
    );
    let stats = f.groups.stats(&caller("acme"), "g").await.expect("stats");
    assert_eq!(stats.counters.expired, 3);
    assert_eq!(stats.counters.redelivered, 3);
    assert_eq!(stats.committed_position, 3);
}

#[tokio::test]
async fn an_ack_after_the_timeout_counts_while_the_message_has_not_gone_out_again() {
    let f = Fixture::new();
    f.append("acme", 1, "t");
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                ack_timeout_ms: Some(100),
                ..group("g")
            },
        )
        .await
        .expect("create");
    let a = poll(&f.groups, "g", "a", 10).await;
    f.clock.advance(5000);
    assert_eq!(ack(&f.groups, "g", ids(&a)).await.settled, 1);
    assert!(poll(&f.groups, "g", "b", 10).await.is_empty());
}

#[tokio::test]
async fn nack_redelivers_at_once_and_counts_an_attempt() {
    let f = Fixture::new();
    f.append("acme", 2, "t");
    f.groups
        .create(&caller("acme"), group("g"))
        .await
        .expect("create");
    let a = poll(&f.groups, "g", "a", 10).await;
    let nacked = f
        .groups
        .nack(&caller("acme"), "g", Some(vec![a[0].delivery_id.clone()]))
        .await
        .expect("nack");
    assert_eq!((nacked.settled, nacked.ignored.len()), (1, 0));
    let b = poll(&f.groups, "g", "b", 10).await;
    assert_eq!(positions(&b), vec![1]);
    assert_eq!(b[0].attempt, 2);
    let unknown = uuid::Uuid::new_v4().to_string();
    let again = f
        .groups
        .nack(&caller("acme"), "g", Some(vec![unknown.clone()]))
        .await
        .expect("nack");
    assert_eq!(again.ignored, vec![unknown]);
}

#[tokio::test]
async fn after_max_deliveries_a_message_is_parked_and_a_replay_delivers_it_again() {
    let f = Fixture::new();
    f.append("acme", 3, "t");
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                ack_timeout_ms: Some(100),
                max_deliveries: Some(2),
                ..group("g")
            },
        )
        .await
        .expect("create");
    let first = poll(&f.groups, "g", "a", 10).await;
    ack(&f.groups, "g", vec![first[1].delivery_id.clone()]).await;
    f.clock.advance(100);
    let second = poll(&f.groups, "g", "a", 10).await;
    assert_eq!(positions(&second), vec![1, 3]);
    f.clock.advance(100);
    assert!(
        poll(&f.groups, "g", "a", 10).await.is_empty(),
        "parked, not delivered"
    );
    let parked = f
        .groups
        .parked(&caller("acme"), "g", ParkedInput::default())
        .await
        .expect("parked");
    assert_eq!(parked.total, 2);
    let listed: Vec<_> = parked
        .messages
        .iter()
        .map(|p| (p.position, p.attempts))
        .collect();
    assert_eq!(listed, [(1, 2), (3, 2)]);
    assert_eq!(parked.messages[0].event.position.get(), 1);
    assert_eq!(parked.messages[0].member.as_deref(), Some("a"));
    let page = f
        .groups
        .parked(
            &caller("acme"),
            "g",
            ParkedInput {
                limit: Some("1".into()),
                after: Some("1".into()),
            },
        )
        .await
        .expect("page");
    assert_eq!(
        (
            page.messages.len(),
            page.messages[0].position,
            page.has_more
        ),
        (1, 3, false)
    );
    let stats = f.groups.stats(&caller("acme"), "g").await.expect("stats");
    assert_eq!((stats.parked, stats.in_flight, stats.waiting), (2, 0, 0));
    assert_eq!(stats.committed_position, 3, "acked or parked");

    let replayed = f
        .groups
        .replay_parked(&caller("acme"), "g")
        .await
        .expect("replay");
    assert_eq!(replayed, 2);
    let again = poll(&f.groups, "g", "b", 10).await;
    assert_eq!(positions(&again), vec![1, 3]);
    assert!(again.iter().all(|m| m.attempt == 1), "fresh attempts");
    ack(&f.groups, "g", ids(&again)).await;
    let stats = f.groups.stats(&caller("acme"), "g").await.expect("stats");
    assert_eq!(
        (stats.parked, stats.counters.parked, stats.counters.replayed),
        (0, 2, 2)
    );
    assert_eq!(stats.counters.acked, 3);
}

#[tokio::test]
async fn lowering_max_deliveries_parks_what_has_had_enough_attempts() {
    let f = Fixture::new();
    f.append("acme", 1, "t");
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                ack_timeout_ms: Some(100),
                ..group("g")
            },
        )
        .await
        .expect("create");
    poll(&f.groups, "g", "a", 10).await;
    f.clock.advance(100);
    poll(&f.groups, "g", "a", 10).await;
    f.clock.advance(100);
    f.groups
        .update(
            &caller("acme"),
            "g",
            GroupInput {
                max_deliveries: Some(2),
                ..GroupInput::default()
            },
        )
        .await
        .expect("update");
    let stats = f.groups.stats(&caller("acme"), "g").await.expect("stats");
    assert_eq!(stats.parked, 1);
}

#[tokio::test]
async fn a_crash_between_delivery_and_ack_loses_no_message_and_repeats_no_ack() {
    let f = Fixture::new();
    f.append("acme", 6, "t");
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                ack_timeout_ms: Some(1000),
                ..group("g")
            },
        )
        .await
        .expect("create");
    let node = f.restart();
    let a = poll(&node, "g", "a", 4).await;
    ack(
        &node,
        "g",
        vec![a[0].delivery_id.clone(), a[2].delivery_id.clone()],
    )
    .await;
    // The node dies: nothing of the instance survives but the state store.
    drop(node);
    let restarted = f.restart();
    // Before the ack timeout the leases still hold: only the messages never delivered.
    let b = poll(&restarted, "g", "b", 10).await;
    assert_eq!(positions(&b), vec![5, 6]);
    ack(&restarted, "g", ids(&b)).await;
    f.clock.advance(1000);
    let c = poll(&restarted, "g", "c", 10).await;
    assert_eq!(
        positions(&c),
        vec![2, 4],
        "the unacked ones, never the acked"
    );
    assert!(c.iter().all(|m| m.attempt == 2));
    ack(&restarted, "g", ids(&c)).await;
    drop(restarted);
    let again = f.restart();
    f.clock.advance(60_000);
    assert!(poll(&again, "g", "d", 10).await.is_empty());
    let stats = again.stats(&caller("acme"), "g").await.expect("stats");
    assert_eq!((stats.committed_position, stats.counters.acked), (6, 6));
}

#[tokio::test]
async fn two_members_share_the_messages_and_never_hold_one_at_once() {
    let f = Fixture::new();
    let all: BTreeSet<u64> = f.append("acme", 60, "t").into_iter().collect();
    f.groups
        .create(
            &caller("acme"),
            GroupInput {
                max_in_flight: Some(8),
                ..group("g")
            },
        )
        .await
        .expect("create");
    let seen = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let mut tasks = Vec::new();
    for member in ["a", "b"] {
        let (groups, seen) = (f.groups.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let got = poll(&groups, "g", member, 3).await;
                if got.is_empty() {
                    return;
                }
                for m in &got {
                    seen.lock()
                        .push((member.to_owned(), m.event.position.get()));
                }
                tokio::task::yield_now().await;
                ack(&groups, "g", ids(&got)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("member");
    }
    let seen = seen.lock().clone();
    let delivered: BTreeSet<u64> = seen.iter().map(|(_, p)| *p).collect();
    assert_eq!(delivered, all, "every message delivered");
    assert_eq!(seen.len(), all.len(), "none delivered twice: {seen:?}");
    let by_member: HashMap<&str, usize> = seen.iter().fold(HashMap::new(), |mut m, (who, _)| {
        *m.entry(who.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_member.len(), 2, "both members got work: {by_member:?}");
}

#[tokio::test]
async fn two_instances_racing_on_one_state_store_never_lease_a_message_twice() {
    let log = SharedLog::new(64);
    let all: BTreeSet<u64> = log
        .append("acme", &vec![("e", "t"); 80])
        .iter()
        .map(|e| e.position.get())
        .collect();
    let memory = Arc::new(MemoryStateStore::new());
    // Every call takes a little while, so the two instances' reads and writes interleave.
    memory.set_latency(Some(Duration::from_millis(2)));
    let state = Arc::new(CountingConflicts {
        inner: memory,
        conflicts: AtomicUsize::new(0),
    });
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let audit: Arc<dyn AuditLog> = Arc::new(Recorded::default());
    let nodes = [
        over(&log, state.clone(), clock.clone(), audit.clone()),
        over(&log, state.clone(), clock.clone(), audit.clone()),
    ];
    nodes[0]
        .create(&caller("acme"), group("g"))
        .await
        .expect("create");
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for member in 0..3 {
            let (groups, seen) = (node.clone(), seen.clone());
            let member = format!("n{n}-m{member}");
            tasks.push(tokio::spawn(async move {
                loop {
                    let got = poll(&groups, "g", &member, 4).await;
                    if got.is_empty() {
                        return;
                    }
                    seen.lock().extend(positions(&got));
                    ack(&groups, "g", ids(&got)).await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("member");
    }
    let seen = seen.lock().clone();
    let delivered: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(delivered, all);
    assert_eq!(seen.len(), all.len(), "a message leased twice: {seen:?}");
    assert!(
        state.conflicts.load(Ordering::SeqCst) > 0,
        "the instances never raced: the test proves nothing"
    );
    let stats = nodes[1].stats(&caller("acme"), "g").await.expect("stats");
    assert_eq!((stats.counters.delivered, stats.counters.acked), (80, 80));
}

#[tokio::test]
async fn tenants_never_see_each_others_groups_or_events() {
    let f = Fixture::new();
    f.append("acme", 3, "t");
    let globex = f.append("globex", 2, "t");
    f.groups
        .create(&caller("acme"), group("g"))
        .await
        .expect("create");
    assert!(matches!(
        f.groups.get(&caller("globex"), "g").await,
        Err(GroupError::NotFound(_))
    ));
    assert!(matches!(
        f.groups
            .poll(&caller("globex"), "g", poll_input("m", 10))
            .await,
        Err(GroupError::NotFound(_))
    ));
    assert!(
        f.groups
            .list(&caller("globex"))
            .await
            .expect("list")
            .is_empty()
    );
    // The same name in the other tenant is another group, with the other tenant's events.
    f.groups
        .create(&caller("globex"), group("g"))
        .await
        .expect("create");
    let got = f
        .groups
        .poll(&caller("globex"), "g", poll_input("m", 10))
        .await
        .expect("poll");
    assert_eq!(positions(&got), globex);
    assert!(got.iter().all(|m| m.event.tenant_id.as_str() == "globex"));
    let acme_ids = ids(&poll(&f.groups, "g", "m", 10).await);
    let cross = f
        .groups
        .ack(&caller("globex"), "g", Some(acme_ids))
        .await
        .expect("ack");
    assert_eq!(
        cross.settled, 0,
        "another tenant's deliveries are unknown here"
    );
}

#[tokio::test]
async fn a_long_poll_wakes_on_a_commit_and_an_empty_one_answers_after_its_wait() {
    let log = SharedLog::new(64);
    let groups = ConsumerGroups::new(
        log.clone(),
        log.feed(),
        Arc::new(MemoryStateStore::new()),
        Arc::new(Recorded::default()),
        Arc::new(WallClock),
    )
    // Only a commit can wake the poll in time.
    .with_recheck(Duration::from_secs(3600));
    groups
        .create(
            &caller("acme"),
            GroupInput {
                event_type_filters: Some(vec!["wanted".into()]),
                ..group("g")
            },
        )
        .await
        .expect("create");
    let waiting = {
        let groups = groups.clone();
        tokio::spawn(async move {
            groups
                .poll(
                    &caller("acme"),
                    "g",
                    PollInput {
                        member: Some("m".into()),
                        max: Some(10),
                        wait_ms: Some(MAX_WAIT_MS),
                    },
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    // Commits that do not concern the poll do not answer it.
    log.append("globex", &[("e", "wanted")]);
    log.append("acme", &[("e", "unwanted")]);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!waiting.is_finished());
    let wanted = log.append("acme", &[("e", "wanted")]);
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by the commit, long before the wait ends")
        .expect("task")
        .expect("poll");
    assert_eq!(positions(&got), vec![wanted[0].position.get()]);

    let empty = groups
        .poll(
            &caller("acme"),
            "g",
            PollInput {
                member: Some("m".into()),
                max: Some(10),
                wait_ms: Some(50),
            },
        )
        .await
        .expect("poll");
    assert!(empty.is_empty());
}

#[tokio::test]
async fn a_long_poll_wakes_when_a_nack_frees_a_message_and_stops_at_shutdown() {
    let f = Fixture::new();
    f.append("acme", 1, "t");
    let groups = f.groups.clone().with_recheck(Duration::from_secs(3600));
    groups
        .create(&caller("acme"), group("g"))
        .await
        .expect("create");
    let held = poll(&groups, "g", "a", 10).await;
    let waiting = {
        let groups = groups.clone();
        tokio::spawn(async move {
            groups
                .poll(
                    &caller("acme"),
                    "g",
                    PollInput {
                        member: Some("b".into()),
                        max: Some(10),
                        wait_ms: Some(MAX_WAIT_MS),
                    },
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    groups
        .nack(&caller("acme"), "g", Some(ids(&held)))
        .await
        .expect("nack");
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by the nack")
        .expect("task")
        .expect("poll");
    assert_eq!((got.len(), got[0].attempt), (1, 2));

    let idle = {
        let groups = groups.clone();
        tokio::spawn(async move {
            groups
                .poll(
                    &caller("acme"),
                    "g",
                    PollInput {
                        member: Some("c".into()),
                        max: Some(10),
                        wait_ms: Some(MAX_WAIT_MS),
                    },
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    groups.stop_waiting();
    let stopped = tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .expect("ended by the shutdown")
        .expect("task")
        .expect("poll");
    assert!(stopped.is_empty());
}

#[tokio::test]
async fn a_storage_failure_is_unavailable_and_changes_nothing() {
    let f = Fixture::new();
    f.append("acme", 2, "t");
    f.groups
        .create(&caller("acme"), group("g"))
        .await
        .expect("create");
    f.state.fail_puts_after(NAMESPACE, 0);
    let refused = f
        .groups
        .poll(&caller("acme"), "g", poll_input("m", 10))
        .await;
    assert!(
        matches!(refused, Err(GroupError::Unavailable(_))),
        "{refused:?}"
    );
    f.state.heal();
    // The failed poll leased nothing: the first real poll gets both messages, first attempts.
    let got = poll(&f.groups, "g", "m", 10).await;
    assert_eq!(positions(&got), vec![1, 2]);
    assert!(got.iter().all(|m| m.attempt == 1));
    f.log.fail_queries.store(true, Ordering::SeqCst);
    ack(&f.groups, "g", ids(&got)).await;
    let stats = f.groups.stats(&caller("acme"), "g").await;
    assert!(matches!(stats, Err(GroupError::Unavailable(_))));
}

#[tokio::test]
async fn the_stored_record_stays_small() {
    let f = Fixture::new();
    f.append("acme", 500, "t");
    f.groups
        .create(&caller("acme"), group("g"))
        .await
        .expect("create");
    for _ in 0..50 {
        let got = poll(&f.groups, "g", "m", 10).await;
        ack(&f.groups, "g", ids(&got)).await;
    }
    let entry = f
        .state
        .get(&tenant("acme"), NAMESPACE, "g")
        .await
        .expect("get")
        .expect("stored");
    let record: GroupRecord = serde_json::from_value(entry.value.clone()).expect("record");
    assert_eq!((record.committed, record.read), (500, 500));
    assert!(record.leases.is_empty());
    let members: BTreeMap<_, _> = record.members.clone();
    assert_eq!(members.len(), 1);
    assert!(entry.value.to_string().len() < 1000, "{}", entry.value);
}

#[tokio::test]
async fn calls_naming_groups_that_do_not_exist_leave_nothing_behind() {
    let f = Fixture::new();
    let id = uuid::Uuid::new_v4().to_string();
    for i in 0..20 {
        let name = format!("nope-{i}");
        let polled = f
            .groups
            .poll(&caller("acme"), &name, poll_input("m", 1))
            .await;
        assert!(matches!(polled, Err(GroupError::NotFound(_))));
        let acked = f
            .groups
            .ack(&caller("acme"), &name, Some(vec![id.clone()]))
            .await;
        assert!(matches!(acked, Err(GroupError::NotFound(_))));
        let deleted = f.groups.delete(&caller("acme"), &name).await;
        assert!(matches!(deleted, Err(GroupError::NotFound(_))));
    }
    assert_eq!(f.groups.inner.local.lock().len(), 0);
    f.groups
        .create(&caller("acme"), group("real"))
        .await
        .expect("create");
    poll(&f.groups, "real", "m", 1).await;
    assert_eq!(f.groups.inner.local.lock().len(), 1);
    f.groups
        .delete(&caller("acme"), "real")
        .await
        .expect("delete");
    assert_eq!(f.groups.inner.local.lock().len(), 0);
}

//! Snapshot use cases with mocked ports, the in-memory state store of [`crate::testing`] (which
//! round-trips values through JSON text, as the durable adapters do), and the property test:
//! state through snapshots equals the full fold.

use allsource_domain::{EventId, EventType, ProposedEvent};
use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;
use serde_json::value::RawValue;

use super::*;
use crate::ports::clock::MockClock;
use crate::ports::{MockEventStore, MockSnapshotScheduler, MockStateStore};
use crate::testing::MemoryStateStore;
use crate::use_cases::{EntityStateInput, ReadError, ReadEvents};

// ---------------------------------------------------------------------------------------------
// Fixtures

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
}

fn event(entity: &str, version: u64, second: i64, payload: &str) -> Arc<Event> {
    Arc::new(
        ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse(entity).unwrap(),
            event_type: EventType::parse("t").unwrap(),
            payload: RawValue::from_string(payload.into()).unwrap(),
            metadata: None,
            expected_version: Default::default(),
        }
        .into_event(
            TenantId::default_tenant(),
            Version::new(version),
            Position::new(version * 10),
            at(second),
        ),
    )
}

/// An event store over one fixed stream (of any entity asked), honouring the range.
fn stream_store(events: Vec<Arc<Event>>) -> MockEventStore {
    let mut store = MockEventStore::new();
    store.expect_read_stream().returning(move |_, _, range| {
        Ok(events
            .iter()
            .filter(|e| {
                e.version.get() >= range.from_version
                    && range.to_version.is_none_or(|to| e.version.get() <= to)
            })
            .take(range.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    });
    store
}

fn clock() -> Arc<dyn Clock> {
    let mut clock = MockClock::new();
    clock.expect_now().returning(|| at(1_000));
    Arc::new(clock)
}

fn caller() -> Caller {
    Caller::default_tenant()
}

fn tenant() -> TenantId {
    TenantId::default_tenant()
}

fn entity(raw: &str) -> EntityId {
    EntityId::parse(raw).unwrap()
}

fn five_events() -> Vec<Arc<Event>> {
    vec![
        event("o-1", 1, 10, r#"{"status":"new","n":1}"#),
        event("o-1", 2, 20, r#"{"status":"paid"}"#),
        event("o-1", 3, 30, r#"{"n":null,"total":1.5}"#),
        event("o-1", 4, 40, r#"{"items":[1,2]}"#),
        event("o-1", 5, 50, r#"{"status":"shipped"}"#),
    ]
}

fn snapshots_over(events: Vec<Arc<Event>>, state: Arc<dyn StateStore>, keep: usize) -> Snapshots {
    Snapshots::new(
        Arc::new(stream_store(events)),
        state,
        clock(),
        SnapshotPolicy {
            every_n_events: 2,
            keep_per_entity: keep,
        },
    )
}

fn create_input(entity: &str) -> CreateSnapshotInput {
    CreateSnapshotInput {
        entity_id: entity.into(),
        as_of: None,
    }
}

fn fields(err: SnapshotError) -> Vec<String> {
    match err {
        SnapshotError::Invalid(e) => e.into_iter().map(|e| e.field).collect(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

#[test]
fn keys_sort_by_version_and_never_mix_entities() {
    assert_eq!(
        key(&entity("o-1"), Version::new(7)),
        "o-1/00000000000000000007"
    );
    assert!(key(&entity("o"), Version::new(9)) < key(&entity("o"), Version::new(10)));
    // `a/b`'s keys must not start with `a`'s prefix, nor `a%2Fb`'s with `a/b`'s.
    assert!(!key(&entity("a/b"), Version::new(1)).starts_with(&prefix(&entity("a"))));
    assert_ne!(prefix(&entity("a/b")), prefix(&entity("a%2Fb")));
    assert!(!key(&entity("a%2Fb"), Version::new(1)).starts_with(&prefix(&entity("a/b"))));
}

#[test]
fn stored_form_round_trips_and_foreign_values_are_skipped() {
    let snapshot = Snapshot {
        state: EntityState::fold(five_events().iter().map(AsRef::as_ref)).unwrap(),
        position: Position::new(50),
        created_at: at(99),
        origin: SnapshotOrigin::Automatic,
    };
    let value = snapshot.to_value().unwrap();
    assert_eq!(value["format"], 1);
    assert_eq!(value["version"], 5);
    assert_eq!(Snapshot::from_value(value), Some(snapshot));
    assert_eq!(Snapshot::from_value(json!({"hello": 1})), None);
    assert_eq!(Snapshot::from_value(json!(3)), None);
}

// ---------------------------------------------------------------------------------------------
// Create, latest, list

#[tokio::test]
async fn create_snapshots_the_current_state_and_latest_finds_it() {
    let state = Arc::new(MemoryStateStore::new());
    let uc = snapshots_over(five_events(), state.clone(), 3);
    let snapshot = uc.create(&caller(), create_input("o-1")).await.unwrap();
    assert_eq!(snapshot.state.version, Version::new(5));
    assert_eq!(snapshot.state.event_count, 5);
    assert_eq!(snapshot.position, Position::new(50));
    assert_eq!(snapshot.state.last_updated, at(50));
    assert_eq!(snapshot.created_at, at(1_000));
    assert_eq!(snapshot.origin, SnapshotOrigin::Manual);
    assert_eq!(
        snapshot.state.state,
        json!({"status": "shipped", "total": 1.5, "items": [1, 2]})
    );
    assert_eq!(state.all_keys(), ["o-1/00000000000000000005"]);
    assert_eq!(uc.latest(&caller(), "o-1").await.unwrap(), snapshot);
}

#[tokio::test]
async fn create_as_of_snapshots_the_past_state() {
    let state = Arc::new(MemoryStateStore::new());
    let uc = snapshots_over(five_events(), state, 3);
    let snapshot = uc
        .create(
            &caller(),
            CreateSnapshotInput {
                entity_id: "o-1".into(),
                as_of: Some(at(25).to_rfc3339()),
            },
        )
        .await
        .unwrap();
    assert_eq!(snapshot.state.version, Version::new(2));
    assert_eq!(snapshot.state.state, json!({"status": "paid", "n": 1}));
    let before_first = uc
        .create(
            &caller(),
            CreateSnapshotInput {
                entity_id: "o-1".into(),
                as_of: Some(at(0).to_rfc3339()),
            },
        )
        .await;
    assert!(matches!(before_first, Err(SnapshotError::NotFound(_))));
}

#[tokio::test]
async fn create_folds_only_the_tail_after_the_newest_snapshot() {
    let state = Arc::new(MemoryStateStore::new());
    let first = snapshots_over(five_events()[..3].to_vec(), state.clone(), 3);
    first.create(&caller(), create_input("o-1")).await.unwrap();
    let mut events = MockEventStore::new();
    let all = five_events();
    events
        .expect_read_stream()
        .withf(|_, _, r| r.from_version == 4 && r.to_version.is_none())
        .times(1)
        .returning(move |_, _, _| Ok(all[3..].to_vec()));
    let uc = Snapshots::new(Arc::new(events), state, clock(), SnapshotPolicy::default());
    let snapshot = uc.create(&caller(), create_input("o-1")).await.unwrap();
    let full = EntityState::fold(five_events().iter().map(AsRef::as_ref)).unwrap();
    assert_eq!(snapshot.state, full);
}

#[tokio::test]
async fn only_the_newest_k_are_kept() {
    let state = Arc::new(MemoryStateStore::new());
    let events = five_events();
    for version in 1..=5 {
        let uc = snapshots_over(events[..version].to_vec(), state.clone(), 2);
        uc.create(&caller(), create_input("o-1")).await.unwrap();
    }
    assert_eq!(
        state.all_keys(),
        ["o-1/00000000000000000004", "o-1/00000000000000000005"]
    );
}

#[tokio::test]
async fn create_rejects_bad_input_without_touching_the_stores() {
    let mut events = MockEventStore::new();
    events.expect_read_stream().never();
    let mut state = MockStateStore::new();
    state.expect_put().never();
    state.expect_list().never();
    let uc = Snapshots::new(
        Arc::new(events),
        Arc::new(state),
        clock(),
        SnapshotPolicy::default(),
    );
    let err = uc
        .create(
            &caller(),
            CreateSnapshotInput {
                entity_id: "".into(),
                as_of: Some("yesterday".into()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(fields(err), ["entity_id", "as_of"]);
    assert_eq!(
        fields(uc.latest(&caller(), " x").await.unwrap_err()),
        ["entity_id"]
    );
}

#[tokio::test]
async fn create_of_an_unknown_entity_is_not_found_and_writes_nothing() {
    let mut state = MockStateStore::new();
    state.expect_list().returning(|_, _, _, _, _| Ok(vec![]));
    state.expect_put().never();
    let uc = Snapshots::new(
        Arc::new(stream_store(vec![])),
        Arc::new(state),
        clock(),
        SnapshotPolicy::default(),
    );
    assert!(matches!(
        uc.create(&caller(), create_input("nobody")).await,
        Err(SnapshotError::NotFound(_))
    ));
}

#[tokio::test]
async fn create_reports_an_unavailable_snapshot_store() {
    let mut state = MockStateStore::new();
    // Reading the base fails (ignored: full fold), writing fails (reported).
    state
        .expect_list()
        .returning(|_, _, _, _, _| Err(StateError::Unavailable("down".into())));
    state
        .expect_put()
        .times(1)
        .returning(|_, _, _, _, _| Err(StateError::Unavailable("down".into())));
    let uc = Snapshots::new(
        Arc::new(stream_store(five_events())),
        Arc::new(state),
        clock(),
        SnapshotPolicy::default(),
    );
    assert!(matches!(
        uc.create(&caller(), create_input("o-1")).await,
        Err(SnapshotError::Unavailable(_))
    ));
}

#[tokio::test]
async fn create_reports_an_unavailable_event_store() {
    let mut events = MockEventStore::new();
    events
        .expect_read_stream()
        .returning(|_, _, _| Err(StoreError::Unavailable("recovering".into())));
    let uc = Snapshots::new(
        Arc::new(events),
        Arc::new(MemoryStateStore::new()),
        clock(),
        SnapshotPolicy::default(),
    );
    assert!(matches!(
        uc.create(&caller(), create_input("o-1")).await,
        Err(SnapshotError::Unavailable(_))
    ));
}

#[tokio::test]
async fn latest_without_snapshots_is_not_found() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .withf(|_, ns, prefix, _, _| ns == NAMESPACE && prefix.as_deref() == Some("o-1/"))
        .returning(|_, _, _, _, _| Ok(vec![]));
    let uc = Snapshots::new(
        Arc::new(MockEventStore::new()),
        Arc::new(state),
        clock(),
        SnapshotPolicy::default(),
    );
    assert!(matches!(
        uc.latest(&caller(), "o-1").await,
        Err(SnapshotError::NotFound(_))
    ));
}

#[tokio::test]
async fn list_pages_through_all_entities_with_a_cursor() {
    let state = Arc::new(MemoryStateStore::new());
    for name in ["a", "b", "c"] {
        let events: Vec<_> = (1..=2)
            .map(|v| event(name, v, v as i64, r#"{"x":1}"#))
            .collect();
        for upto in 1..=2 {
            snapshots_over(events[..upto].to_vec(), state.clone(), 5)
                .create(&caller(), create_input(name))
                .await
                .unwrap();
        }
    }
    let uc = snapshots_over(vec![], state, 5);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = uc
            .list(
                &caller(),
                ListSnapshotsInput {
                    entity_id: None,
                    after: after.take(),
                    limit: Some("4".into()),
                },
            )
            .await
            .unwrap();
        seen.extend(
            page.snapshots
                .iter()
                .map(|s| format!("{}@{}", s.state.entity_id, s.state.version)),
        );
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ["a@1", "a@2", "b@1", "b@2", "c@1", "c@2"]);
    let only_b = uc
        .list(
            &caller(),
            ListSnapshotsInput {
                entity_id: Some("b".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(only_b.snapshots.len(), 2);
    assert!(only_b.next_cursor.is_none());
}

#[tokio::test]
async fn list_rejects_bad_parameters() {
    let mut state = MockStateStore::new();
    state.expect_list().never();
    let uc = Snapshots::new(
        Arc::new(MockEventStore::new()),
        Arc::new(state),
        clock(),
        SnapshotPolicy::default(),
    );
    let err = uc
        .list(
            &caller(),
            ListSnapshotsInput {
                entity_id: Some("a".into()),
                after: Some("b/00000000000000000001".into()),
                limit: Some("1001".into()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(fields(err), ["limit", "after"]);
}

// ---------------------------------------------------------------------------------------------
// Automatic trigger

fn receipt(entity: &str, version: u64, duplicate: bool) -> AppendReceipt {
    AppendReceipt::for_event(&event(entity, version, 0, "1"), duplicate)
}

#[test]
fn due_picks_multiples_ignores_duplicates_and_keeps_the_newest_per_entity() {
    let trigger = SnapshotTrigger::new(3, Arc::new(MockSnapshotScheduler::new()));
    let receipts = [
        receipt("a", 2, false),
        receipt("a", 3, false),
        receipt("b", 6, true),
        receipt("a", 4, false),
        receipt("a", 5, false),
        receipt("a", 6, false),
        receipt("c", 9, false),
    ];
    assert_eq!(
        trigger.due(&receipts),
        [
            (entity("a"), Version::new(6)),
            (entity("c"), Version::new(9))
        ]
    );
    let off = SnapshotTrigger::new(0, Arc::new(MockSnapshotScheduler::new()));
    assert!(off.due(&receipts).is_empty());
}

#[tokio::test]
async fn after_append_schedules_without_failing_even_when_dropped() {
    let mut scheduler = MockSnapshotScheduler::new();
    scheduler
        .expect_schedule()
        .withf(|t, e, v| t.as_str() == "default" && e.as_str() == "a" && *v == Version::new(10))
        .times(1)
        .return_const(false);
    let trigger = SnapshotTrigger::new(5, Arc::new(scheduler));
    trigger
        .before_append(&caller(), &[], false)
        .await
        .expect("never refuses");
    trigger
        .after_append(
            &caller(),
            &[receipt("a", 9, false), receipt("a", 10, false)],
            &[2, 2],
        )
        .await;
}

#[tokio::test]
async fn take_automatic_snapshots_exactly_the_version_asked() {
    let state = Arc::new(MemoryStateStore::new());
    let uc = snapshots_over(five_events(), state.clone(), 3);
    let snapshot = uc
        .take_automatic(&tenant(), &entity("o-1"), Version::new(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snapshot.state.version, Version::new(4));
    assert_eq!(snapshot.origin, SnapshotOrigin::Automatic);
    assert!(
        uc.take_automatic(&tenant(), &entity("o-1"), Version::new(9))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(state.all_keys(), ["o-1/00000000000000000004"]);
}

// ---------------------------------------------------------------------------------------------
// Entity state through snapshots

#[tokio::test]
async fn state_read_folds_only_the_tail_after_the_newest_snapshot() {
    let state = Arc::new(MemoryStateStore::new());
    snapshots_over(five_events()[..3].to_vec(), state.clone(), 3)
        .create(&caller(), create_input("o-1"))
        .await
        .unwrap();
    let mut events = MockEventStore::new();
    let all = five_events();
    events
        .expect_read_stream()
        .withf(|_, _, r| r.from_version == 4)
        .times(1)
        .returning(move |_, _, _| Ok(all[3..].to_vec()));
    let view = ReadEvents::new(Arc::new(events))
        .with_snapshots(SnapshotArchive::new(state))
        .entity_state(&caller(), "o-1", EntityStateInput::default())
        .await
        .unwrap();
    let full = EntityState::fold(five_events().iter().map(AsRef::as_ref)).unwrap();
    assert_eq!(*view.state, full);
}

#[tokio::test]
async fn state_read_as_of_skips_snapshots_newer_than_as_of() {
    let state = Arc::new(MemoryStateStore::new());
    snapshots_over(five_events()[..4].to_vec(), state.clone(), 3)
        .create(&caller(), create_input("o-1"))
        .await
        .unwrap();
    let view = ReadEvents::new(Arc::new(stream_store(five_events())))
        .with_snapshots(SnapshotArchive::new(state))
        .entity_state(
            &caller(),
            "o-1",
            EntityStateInput {
                as_of: Some(at(35).to_rfc3339()),
                include_history: None,
            },
        )
        .await
        .unwrap();
    let expected = EntityState::fold(five_events()[..3].iter().map(AsRef::as_ref)).unwrap();
    assert_eq!(*view.state, expected);
}

#[tokio::test]
async fn state_read_survives_an_unavailable_snapshot_store() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .returning(|_, _, _, _, _| Err(StateError::Unavailable("down".into())));
    let mut events = MockEventStore::new();
    let all = five_events();
    events
        .expect_read_stream()
        .withf(|_, _, r| r.from_version == 1)
        .returning(move |_, _, _| Ok(all.clone()));
    let view = ReadEvents::new(Arc::new(events))
        .with_snapshots(SnapshotArchive::new(Arc::new(state)))
        .entity_state(&caller(), "o-1", EntityStateInput::default())
        .await
        .unwrap();
    assert_eq!(view.state.version, Version::new(5));
}

#[tokio::test]
async fn state_read_of_an_unknown_entity_is_still_not_found() {
    let view = ReadEvents::new(Arc::new(stream_store(vec![])))
        .with_snapshots(SnapshotArchive::new(Arc::new(MemoryStateStore::new())))
        .entity_state(&caller(), "nobody", EntityStateInput::default())
        .await;
    assert!(matches!(view, Err(ReadError::NotFound(_))));
}

// ---------------------------------------------------------------------------------------------
// Property: through snapshots == full fold

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Any finite float: snapshots must survive the trip through JSON text unchanged.
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
    ]
}

fn payload() -> impl Strategy<Value = Value> {
    let object = proptest::collection::btree_map("[a-d]", json_leaf(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    prop_oneof![
        6 => object,
        1 => json_leaf(),
        1 => proptest::collection::vec(json_leaf(), 0..3).prop_map(Value::Array),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    payloads: Vec<Value>,
    /// Seconds between consecutive events (0 = same timestamp).
    gaps: Vec<i64>,
    /// Versions (1-based, clamped) at which snapshots are taken.
    snapshot_at: Vec<usize>,
    /// Seconds after the first event (may be before it or after the last).
    as_of: i64,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..40).prop_flat_map(|n| {
        (
            proptest::collection::vec(payload(), n),
            proptest::collection::vec(0i64..3, n),
            proptest::collection::vec(1..=n, 0..5),
            -2i64..(3 * n as i64 + 2),
        )
            .prop_map(|(payloads, gaps, snapshot_at, as_of)| Case {
                payloads,
                gaps,
                snapshot_at,
                as_of,
            })
    })
}

fn events_of(case: &Case) -> Vec<Arc<Event>> {
    let mut second = 0;
    case.payloads
        .iter()
        .zip(&case.gaps)
        .enumerate()
        .map(|(i, (payload, gap))| {
            second += gap;
            event("p", i as u64 + 1, second, &payload.to_string())
        })
        .collect()
}

async fn check(case: Case) -> Result<(), TestCaseError> {
    let events = events_of(&case);
    let state = Arc::new(MemoryStateStore::new());
    let uc = snapshots_over(events.clone(), state.clone(), 10);
    for &version in &case.snapshot_at {
        uc.take_automatic(&tenant(), &entity("p"), Version::new(version as u64))
            .await
            .unwrap();
    }
    let plain = ReadEvents::new(Arc::new(stream_store(events.clone())));
    let through =
        ReadEvents::new(Arc::new(stream_store(events))).with_snapshots(SnapshotArchive::new(state));
    let as_of = at(case.as_of).to_rfc3339();
    for input in [
        EntityStateInput::default(),
        EntityStateInput {
            as_of: Some(as_of),
            include_history: None,
        },
    ] {
        let expected = plain.entity_state(&caller(), "p", input.clone()).await;
        let actual = through.entity_state(&caller(), "p", input).await;
        match (expected, actual) {
            (Ok(e), Ok(a)) => prop_assert_eq!(e.state, a.state),
            (Err(ReadError::NotFound(_)), Err(ReadError::NotFound(_))) => {}
            (e, a) => prop_assert!(false, "full fold {e:?} but through snapshots {a:?}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn state_through_snapshots_equals_the_full_fold(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(check(case))?;
    }
}

//! Use-case tests of projections and replay: a given log of events, the in-memory state store
//! of [`crate::testing`] (told to fail where a test needs it), and mocked quotas.

use std::collections::BTreeMap;
use std::sync::Arc;

use allsource_domain::projection::ProjectionSpec;
use allsource_domain::{EntityId, EventId, Position, TenantId, Version};
use serde_json::{Value, json};

use super::*;
use crate::ports::StateError;
use crate::quota::{MockQuotaGate, QuotaExceeded, Unlimited};
use crate::testing::{Given, MemoryStateStore};

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn caller() -> Caller {
    Caller::new(tenant())
}

struct World {
    log: Given,
    state: Arc<MemoryStateStore>,
    engine: Arc<ProjectionEngine>,
    projections: Projections,
}

fn world_with(quotas: Arc<dyn QuotaGate>, batch: usize) -> World {
    let log = Given::tenant("acme");
    let state = Arc::new(MemoryStateStore::new());
    let engine = Arc::new(ProjectionEngine::new(log.store(), state.clone(), batch));
    World {
        projections: Projections::new(engine.clone(), quotas),
        log,
        state,
        engine,
    }
}

fn world() -> World {
    world_with(Arc::new(Unlimited), 2)
}

fn spec(v: Value) -> ProjectionSpec {
    serde_json::from_value(v).unwrap()
}

fn revenue() -> ProjectionSpec {
    spec(json!({
        "name": "revenue",
        "filter": {"event_types": ["order.placed"]},
        "key": "$.customer",
        "fields": {"orders": {"reducer": "count"}, "total": {"reducer": "sum", "path": "$.amount"}}
    }))
}

async fn state_of(w: &World, name: &str) -> BTreeMap<String, Value> {
    w.projections
        .state(&caller(), name, StateInput::default())
        .await
        .unwrap()
        .entries
        .into_iter()
        .collect()
}

fn orders(w: &World, n: usize) {
    for i in 0..n {
        let customer = if i % 2 == 0 { "alice" } else { "bob" };
        w.log.push(
            &format!("order-{i}"),
            "order.placed",
            json!({"customer": customer, "amount": 10}),
        );
        w.log
            .push(&format!("order-{i}"), "order.shipped", json!({}));
    }
}

#[tokio::test]
async fn create_consumes_the_quota_and_a_duplicate_name_is_a_conflict() {
    let mut quotas = MockQuotaGate::new();
    quotas
        .expect_consume()
        .withf(|t, k, n| t.as_str() == "acme" && *k == QuotaKind::Projections && *n == 1)
        .times(1)
        .returning(|_, _, _| Ok(()));
    let w = world_with(Arc::new(quotas), 2);
    let view = w.projections.create(&caller(), revenue()).await.unwrap();
    assert_eq!(view.definition.name.as_str(), "revenue");
    assert!(!view.builtin);
    let again = w.projections.create(&caller(), revenue()).await;
    assert!(
        matches!(again, Err(ProjectionError::Conflict(_))),
        "{again:?}"
    );
}

#[tokio::test]
async fn an_invalid_definition_lists_its_fields_and_touches_nothing() {
    // No expectations: calling the quota gate would fail the test.
    let w = world_with(Arc::new(MockQuotaGate::new()), 2);
    let err = w
        .projections
        .create(
            &caller(),
            spec(json!({"name": "Bad", "fields": {"a": {"reducer": "sum"}}})),
        )
        .await
        .unwrap_err();
    let ProjectionError::Invalid(fields) = err else {
        panic!("expected Invalid, got {err:?}");
    };
    let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(names, ["name", "fields.a.path"]);
    assert_eq!(w.state.puts(), 0);
}

#[tokio::test]
async fn an_exhausted_quota_refuses_and_stores_nothing() {
    let mut quotas = MockQuotaGate::new();
    quotas.expect_consume().returning(|_, _, _| {
        Err(GateError::QuotaExceeded(QuotaExceeded {
            quota: "max_projections".into(),
            limit: 1,
            used: 1,
            retry_after_secs: 60,
        }))
    });
    let w = world_with(Arc::new(quotas), 2);
    let err = w
        .projections
        .create(&caller(), revenue())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ProjectionError::Gate(GateError::QuotaExceeded(_))
    ));
    assert!(w.engine.head(&tenant(), "revenue").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_releases_the_quota_and_the_state() {
    let mut quotas = MockQuotaGate::new();
    quotas.expect_consume().times(1).returning(|_, _, _| Ok(()));
    quotas
        .expect_release()
        .withf(|_, k, n| *k == QuotaKind::Projections && *n == 1)
        .times(1)
        .return_const(());
    let w = world_with(Arc::new(quotas), 2);
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 3);
    w.engine.catch_up_all().await;
    w.projections.delete(&caller(), "revenue").await.unwrap();
    assert!(matches!(
        w.projections.get(&caller(), "revenue").await,
        Err(ProjectionError::NotFound(_))
    ));
    assert!(matches!(
        w.projections.delete(&caller(), "revenue").await,
        Err(ProjectionError::NotFound(_))
    ));
    let left = w.state.all_keys_outside(engine::TENANTS);
    assert!(left.is_empty(), "state left behind: {left:?}");
}

#[tokio::test]
async fn catch_up_folds_matching_events_and_reports_status() {
    let w = world();
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 5);
    let before = w.projections.get(&caller(), "revenue").await.unwrap();
    assert_eq!(before.status.checkpoint, 0);
    assert_eq!(before.status.head_position, 10);
    assert_eq!(before.status.lag_events, 10);
    w.engine.catch_up_all().await;
    let after = w.projections.get(&caller(), "revenue").await.unwrap();
    assert_eq!(after.status.checkpoint, 10);
    assert_eq!(after.status.lag_events, 0);
    assert_eq!(after.status.keys, 2);
    let state = state_of(&w, "revenue").await;
    assert_eq!(state["alice"], json!({"orders": 3, "total": 30}));
    assert_eq!(state["bob"], json!({"orders": 2, "total": 20}));
    let key = w
        .projections
        .state_of(&caller(), "revenue", "bob")
        .await
        .unwrap();
    assert_eq!(key.position, 7);
    assert!(matches!(
        w.projections.state_of(&caller(), "revenue", "carol").await,
        Err(ProjectionError::NotFound(_))
    ));
    // Catching up again changes nothing.
    w.engine.catch_up_all().await;
    assert_eq!(state_of(&w, "revenue").await, state);
}

#[tokio::test]
async fn a_crash_between_state_and_checkpoint_never_double_counts() {
    let w = world();
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 6);
    // The first page's keys are written, then the checkpoint write fails.
    w.state.fail_puts_after(engine::CHECKPOINTS, 0);
    let err = w.engine.catch_up(&tenant(), "revenue").await.unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)));
    let view = w.projections.get(&caller(), "revenue").await.unwrap();
    assert_eq!(view.status.checkpoint, 0);
    assert!(view.status.last_error.is_some());
    // Three more failures at later pages.
    for allowed in [1, 2, 3] {
        w.state.fail_puts_after(engine::CHECKPOINTS, allowed);
        let _ = w.engine.catch_up(&tenant(), "revenue").await;
    }
    w.state.heal();
    w.engine.catch_up(&tenant(), "revenue").await.unwrap();
    let state = state_of(&w, "revenue").await;
    assert_eq!(state["alice"], json!({"orders": 3, "total": 30}));
    assert_eq!(state["bob"], json!({"orders": 3, "total": 30}));
    assert!(
        w.projections
            .get(&caller(), "revenue")
            .await
            .unwrap()
            .status
            .last_error
            .is_none()
    );
}

#[tokio::test]
async fn names_and_state_parameters_are_validated() {
    let w = world();
    assert!(matches!(
        w.projections.get(&caller(), "Bad Name").await,
        Err(ProjectionError::Invalid(_))
    ));
    assert!(matches!(
        w.projections.get(&caller(), "missing").await,
        Err(ProjectionError::NotFound(_))
    ));
    w.projections.create(&caller(), revenue()).await.unwrap();
    for limit in ["0", "x", "10001"] {
        let r = w
            .projections
            .state(
                &caller(),
                "revenue",
                StateInput {
                    limit: Some(limit.into()),
                    after: None,
                },
            )
            .await;
        assert!(matches!(r, Err(ProjectionError::Invalid(_))), "{limit}");
    }
}

#[tokio::test]
async fn state_pages_by_key() {
    let w = world();
    w.projections
        .create(&caller(), spec(json!({"name": "event_counter"})))
        .await
        .unwrap();
    orders(&w, 2);
    w.log.push("x", "other", json!(1));
    w.engine.catch_up_all().await;
    let page = w
        .projections
        .state(
            &caller(),
            "event_counter",
            StateInput {
                limit: Some("2".into()),
                after: None,
            },
        )
        .await
        .unwrap();
    assert!(page.has_more);
    assert_eq!(page.checkpoint, 5);
    let keys: Vec<_> = page.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["order.placed", "order.shipped"]);
    let rest = w
        .projections
        .state(
            &caller(),
            "event_counter",
            StateInput {
                limit: None,
                after: Some("order.shipped".into()),
            },
        )
        .await
        .unwrap();
    assert!(!rest.has_more);
    assert_eq!(rest.entries, vec![("other".into(), json!({"count": 1}))]);
}

#[tokio::test]
async fn storage_failures_are_reported_as_unavailable() {
    let mut state = crate::ports::MockStateStore::new();
    state
        .expect_get()
        .returning(|_, _, _| Err(StateError::Unavailable("down".into())));
    let engine = Arc::new(ProjectionEngine::new(
        Given::tenant("acme").store(),
        Arc::new(state),
        10,
    ));
    let projections = Projections::new(engine, Arc::new(Unlimited));
    assert!(matches!(
        projections.get(&caller(), "x").await,
        Err(ProjectionError::Unavailable(_))
    ));
    assert!(matches!(
        projections.create(&caller(), revenue()).await,
        Err(ProjectionError::Unavailable(_))
    ));
}

async fn wait(jobs: &ReplayJobs, id: &str) -> ReplayView {
    for _ in 0..500 {
        let v = jobs.get(&caller(), id).unwrap();
        if v.status != ReplayStatus::Running {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("the replay did not finish");
}

fn replay_of(name: &str) -> ReplayInput {
    ReplayInput {
        projection: Some(name.into()),
        ..ReplayInput::default()
    }
}

#[tokio::test]
async fn a_rebuild_equals_the_live_state_and_replaying_twice_equals_once() {
    let w = world();
    w.projections.create(&caller(), revenue()).await.unwrap();
    w.projections
        .create(&caller(), spec(json!({"name": "entity_snapshots"})))
        .await
        .unwrap();
    orders(&w, 7);
    w.engine.catch_up_all().await;
    let live = state_of(&w, "revenue").await;
    let live_snapshots = state_of(&w, "entity_snapshots").await;
    let generation = w
        .projections
        .get(&caller(), "revenue")
        .await
        .unwrap()
        .generation;
    let jobs = ReplayJobs::new(w.engine.clone());
    for round in 0..2 {
        let started = jobs.start(&caller(), replay_of("revenue")).await.unwrap();
        let done = wait(&jobs, &started.id).await;
        assert_eq!(done.status, ReplayStatus::Completed, "{done:?}");
        assert_eq!(done.total, 14);
        assert_eq!(done.processed, 14);
        assert_eq!(done.percent, 100.0);
        assert!(done.finished_at.is_some());
        assert_eq!(state_of(&w, "revenue").await, live, "round {round}");
        let view = w.projections.get(&caller(), "revenue").await.unwrap();
        assert_eq!(view.status.checkpoint, 14);
        assert_ne!(
            view.generation, generation,
            "a new generation is swapped in"
        );
    }
    let started = jobs
        .start(&caller(), replay_of("entity_snapshots"))
        .await
        .unwrap();
    wait(&jobs, &started.id).await;
    assert_eq!(state_of(&w, "entity_snapshots").await, live_snapshots);
    // Live updates continue on the swapped generation without double counting.
    orders(&w, 1);
    w.engine.catch_up_all().await;
    assert_eq!(
        state_of(&w, "revenue").await["alice"],
        json!({"orders": 5, "total": 50})
    );
    // Old generations are gone: only the live one has keys.
    let namespaces: std::collections::BTreeSet<_> = w
        .state
        .all_keys_outside("")
        .into_iter()
        .filter(|key| key.starts_with("projection-state:revenue:"))
        .filter_map(|key| key.split_once('/').map(|(ns, _)| ns.to_owned()))
        .collect();
    assert_eq!(namespaces.len(), 1);
    assert_eq!(jobs.list(&caller()).len(), 3);
}

#[tokio::test]
async fn a_replay_from_a_position_folds_the_tail_only() {
    let w = world();
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 4);
    let jobs = ReplayJobs::new(w.engine.clone());
    let started = jobs
        .start(
            &caller(),
            ReplayInput {
                from_position: Some(4),
                ..replay_of("revenue")
            },
        )
        .await
        .unwrap();
    let done = wait(&jobs, &started.id).await;
    assert_eq!(done.status, ReplayStatus::Completed);
    assert_eq!(done.total, 4);
    let state = state_of(&w, "revenue").await;
    // Orders 2 (alice, position 5) and 3 (bob, position 7).
    assert_eq!(state["alice"], json!({"orders": 1, "total": 10}));
    assert_eq!(state["bob"], json!({"orders": 1, "total": 10}));
    // The live runner does not re-add the events before the range.
    w.engine.catch_up_all().await;
    assert_eq!(state_of(&w, "revenue").await, state);
}

#[tokio::test]
async fn replay_validation_cancel_delete_and_tenant_scoping() {
    let w = world();
    let jobs = ReplayJobs::new(w.engine.clone());
    let err = jobs
        .start(
            &caller(),
            ReplayInput {
                projection: None,
                since: Some("yesterday".into()),
                from_position: None,
            },
        )
        .await
        .unwrap_err();
    let ReplayError::Invalid(fields) = err else {
        panic!("expected Invalid");
    };
    assert_eq!(fields.len(), 2);
    assert!(matches!(
        jobs.start(&caller(), replay_of("missing")).await,
        Err(ReplayError::NotFound(_))
    ));
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 3);
    let done = jobs.start(&caller(), replay_of("revenue")).await.unwrap();
    let done = wait(&jobs, &done.id).await;
    assert!(matches!(
        jobs.cancel(&caller(), &done.id),
        Err(ReplayError::Conflict(_))
    ));
    let other = Caller::new(TenantId::parse("other").unwrap());
    assert!(matches!(
        jobs.get(&other, &done.id),
        Err(ReplayError::NotFound(_))
    ));
    assert!(matches!(
        jobs.delete(&other, &done.id),
        Err(ReplayError::NotFound(_))
    ));
    assert!(jobs.list(&other).is_empty());
    jobs.delete(&caller(), &done.id).unwrap();
    assert!(matches!(
        jobs.get(&caller(), &done.id),
        Err(ReplayError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_cancelled_replay_leaves_the_live_state() {
    let w = world_with(Arc::new(Unlimited), 1);
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 200);
    w.engine.catch_up_all().await;
    let live = state_of(&w, "revenue").await;
    let generation = w
        .projections
        .get(&caller(), "revenue")
        .await
        .unwrap()
        .generation;
    let jobs = ReplayJobs::new(w.engine.clone());
    // Hold the projection's lock so the job cannot finish before it is cancelled.
    let lock = w.engine.lock(&tenant(), "revenue");
    let held = lock.lock().await;
    let started = jobs.start(&caller(), replay_of("revenue")).await.unwrap();
    assert!(matches!(
        jobs.start(&caller(), replay_of("revenue")).await,
        Err(ReplayError::Conflict(_))
    ));
    assert!(matches!(
        jobs.delete(&caller(), &started.id),
        Err(ReplayError::Conflict(_))
    ));
    jobs.cancel(&caller(), &started.id).unwrap();
    drop(held);
    let done = wait(&jobs, &started.id).await;
    // Cancelled between pages, or (if it had read everything) completed: never half-swapped.
    let view = w.projections.get(&caller(), "revenue").await.unwrap();
    match done.status {
        ReplayStatus::Cancelled => assert_eq!(view.generation, generation),
        ReplayStatus::Completed => assert_ne!(view.generation, generation),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(state_of(&w, "revenue").await, live);
}

#[tokio::test]
async fn the_runner_is_woken_by_appends_and_stops_cleanly() {
    use crate::use_cases::AppendGuard;

    let w = world();
    w.projections.create(&caller(), revenue()).await.unwrap();
    let receipt = |duplicate| crate::ports::AppendReceipt {
        event_id: EventId::generate(),
        entity_id: EntityId::parse("order-0").unwrap(),
        version: Version::new(1),
        position: Position::new(1),
        timestamp: chrono::Utc::now(),
        duplicate,
    };
    // A poll interval far longer than the test: only the notifier can wake the runner.
    let runner =
        ProjectionRunner::new(w.engine.clone(), std::time::Duration::from_secs(3600)).spawn();
    let notifier = ProjectionNotifier::new(w.engine.clone());
    // The runner's first round (at start) finds nothing; appends alone do not wake it...
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    orders(&w, 4);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let view = w.projections.get(&caller(), "revenue").await.unwrap();
    assert_eq!(view.status.checkpoint, 0);
    // ...a duplicate-only append does not either...
    notifier
        .after_append(&caller(), &[receipt(true)], &[2])
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let view = w.projections.get(&caller(), "revenue").await.unwrap();
    assert_eq!(view.status.checkpoint, 0);
    // ...an acknowledged append does.
    notifier
        .after_append(&caller(), &[receipt(false)], &[2])
        .await;
    let mut caught_up = false;
    for _ in 0..500 {
        let view = w.projections.get(&caller(), "revenue").await.unwrap();
        if view.status.checkpoint == 8 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(caught_up, "the notifier woke the runner");
    assert_eq!(
        state_of(&w, "revenue").await["alice"],
        json!({"orders": 2, "total": 20})
    );
    runner.stop().await;
    // After stop, catching up does nothing (shutdown must not wait for a backlog).
    orders(&w, 2);
    assert_eq!(w.engine.catch_up(&tenant(), "revenue").await.unwrap(), 0);
    assert!(notifier.before_append(&caller(), &[], false).await.is_ok());
}

#[tokio::test]
async fn finished_replays_are_bounded_per_tenant_and_in_time() {
    let w = world();
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 2);
    let jobs =
        ReplayJobs::with_retention(w.engine.clone(), 2, std::time::Duration::from_secs(3600));
    let mut ids = Vec::new();
    for _ in 0..4 {
        let started = jobs.start(&caller(), replay_of("revenue")).await.unwrap();
        wait(&jobs, &started.id).await;
        ids.push(started.id);
    }
    let kept: Vec<String> = jobs.list(&caller()).into_iter().map(|v| v.id).collect();
    assert_eq!(kept, ids[2..], "the two newest finished jobs are kept");
    assert!(matches!(
        jobs.get(&caller(), &ids[0]),
        Err(ReplayError::NotFound(_))
    ));
    // A retention of zero forgets a job as soon as it has finished.
    let jobs = ReplayJobs::with_retention(w.engine.clone(), 100, std::time::Duration::ZERO);
    let started = jobs.start(&caller(), replay_of("revenue")).await.unwrap();
    for _ in 0..500 {
        if jobs.list(&caller()).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("job {} was kept past its retention", started.id);
}

#[tokio::test]
async fn deleting_a_projection_forgets_its_lock_and_its_error() {
    let w = world();
    w.projections.create(&caller(), revenue()).await.unwrap();
    orders(&w, 2);
    w.state.fail_puts_after(engine::CHECKPOINTS, 0);
    assert!(w.engine.catch_up(&tenant(), "revenue").await.is_err());
    w.state.heal();
    assert_eq!(w.engine.tracked(), (1, 1), "a lock and an error");
    w.projections.delete(&caller(), "revenue").await.unwrap();
    assert_eq!(w.engine.tracked(), (0, 0));
    // Names that do not exist leave nothing behind either.
    assert!(w.projections.delete(&caller(), "ghost").await.is_err());
    assert_eq!(w.engine.catch_up(&tenant(), "ghost").await.unwrap(), 0);
    assert_eq!(w.engine.tracked(), (0, 0));
    // A lock still held by someone is kept, so that its holders keep excluding each other.
    let held = w.engine.lock(&tenant(), "busy");
    w.engine.forget(&tenant(), "busy", true);
    assert_eq!(w.engine.tracked().0, 1);
    drop(held);
    w.engine.forget(&tenant(), "busy", true);
    assert_eq!(w.engine.tracked().0, 0);
}

//! Use-case tests of pipelines: a multi-tenant log publishing to a real feed ([`SharedLog`],
//! idempotent by event id like every store), the in-memory state store (which can be told to
//! fail writes), a mockall mock of the [`Lookups`] port, mocked quotas and audit log.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::ports::MockAuditLog;
use crate::quota::{MockQuotaGate, QuotaExceeded, Unlimited};
use crate::testing::{MemoryStateStore, SharedLog};
use crate::use_cases::AppendLimits;

fn caller(name: &str) -> Caller {
    Caller::new(TenantId::parse(name).unwrap())
}

fn audit() -> Arc<MockAuditLog> {
    let mut audit = MockAuditLog::new();
    audit.expect_record().returning(|_| Ok(()));
    Arc::new(audit)
}

/// The dependencies and configuration a test may change (the rest is the world's).
struct Setup {
    lookups: Arc<dyn Lookups>,
    quotas: Arc<dyn QuotaGate>,
    tenants: Arc<dyn crate::quota::TenantGate>,
    guard: Option<Arc<dyn crate::use_cases::AppendGuard>>,
    config: PipelineConfig,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            lookups: Arc::new(MockLookups::new()),
            quotas: Arc::new(Unlimited),
            tenants: Arc::new(Unlimited),
            guard: None,
            config: World::config(),
        }
    }
}

struct World {
    log: Arc<SharedLog>,
    state: Arc<MemoryStateStore>,
}

impl World {
    fn new() -> Self {
        Self {
            log: SharedLog::new(64),
            state: Arc::new(MemoryStateStore::new()),
        }
    }

    fn config() -> PipelineConfig {
        PipelineConfig {
            commit_interval: Duration::from_millis(5),
            batch_events: 3,
            // The clock never closes a window in these tests: events close them.
            tick: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
            rescan_interval: Duration::from_millis(50),
            node: Some("local".into()),
            ..PipelineConfig::default()
        }
    }

    /// Pipelines over this world's log and state store, with what `setup` changes.
    fn build(&self, setup: Setup) -> Pipelines {
        let mut append = AppendEvents::new(self.log.clone(), AppendLimits::default());
        if let Some(guard) = setup.guard {
            append = append.with_guard(guard);
        }
        Pipelines::new(
            PipelineDeps {
                store: self.log.clone(),
                feed: self.log.feed(),
                state: self.state.clone(),
                append,
                lookups: setup.lookups,
                quotas: setup.quotas,
                audit: audit(),
                tenants: setup.tenants,
            },
            setup.config,
        )
    }

    fn pipelines_with(&self, lookups: Arc<dyn Lookups>, quotas: Arc<dyn QuotaGate>) -> Pipelines {
        self.build(Setup {
            lookups,
            quotas,
            ..Setup::default()
        })
    }

    fn pipelines(&self) -> Pipelines {
        self.pipelines_with(Arc::new(MockLookups::new()), Arc::new(Unlimited))
    }

    /// Orders of `customer` worth `amount`.
    fn orders(&self, tenant: &str, orders: &[(&str, i64)]) {
        let events: Vec<(&str, &str, Value)> = orders
            .iter()
            .map(|(customer, amount)| {
                (
                    "order-1",
                    "order.placed",
                    json!({"customer": customer, "amount": amount}),
                )
            })
            .collect();
        self.log.append_payloads(tenant, &events);
    }

    /// The derived events of a tenant, as (entity, type, payload).
    fn derived(&self, tenant: &str, event_type: &str) -> Vec<(String, Value)> {
        self.log
            .events()
            .iter()
            .filter(|e| e.tenant_id.as_str() == tenant && e.event_type.as_str() == event_type)
            .map(|e| {
                (
                    e.entity_id.as_str().to_owned(),
                    serde_json::from_str(e.payload.get()).unwrap(),
                )
            })
            .collect()
    }
}

fn input(body: Value) -> PipelineInput {
    let get = |k: &str| body.get(k).cloned();
    PipelineInput {
        id: get("id").and_then(|v| v.as_str().map(str::to_owned)),
        name: get("name").and_then(|v| v.as_str().map(str::to_owned)),
        description: None,
        source_event_types: get("source_event_types").map(|v| serde_json::from_value(v).unwrap()),
        operators: get("operators").map(|v| serde_json::from_value(v).unwrap()),
        output: get("output"),
        on_error: get("on_error").and_then(|v| v.as_str().map(str::to_owned)),
        enabled: get("enabled").and_then(|v| v.as_bool()),
        from_position: get("from_position"),
    }
}

/// Counts orders and sums amounts per customer into the table output.
fn counting() -> Value {
    json!({
        "name": "orders_by_customer",
        "source_event_types": ["order.placed"],
        "operators": [
            {"type": "reduce", "group_by": ["$.customer"],
             "aggregations": [{"name": "orders", "fn": "count"},
                              {"name": "total", "fn": "sum", "field": "$.amount"}]}
        ],
        "output": {"type": "table"}
    })
}

async fn wait_for<F: Fn(&PipelineStats) -> bool>(
    pipelines: &Pipelines,
    tenant: &str,
    id: Uuid,
    done: F,
) -> PipelineStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pipelines
            .stats(&caller(tenant), &id.to_string())
            .await
            .unwrap();
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pipeline did not get there: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The table's values, ordered by their `customer` member.
async fn by_customer(pipelines: &Pipelines, tenant: &str, id: Uuid) -> Vec<Value> {
    let mut values: Vec<Value> = table(pipelines, tenant, id)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    values.sort_by_key(|v| v["customer"].as_str().unwrap_or_default().to_owned());
    values
}

async fn table(pipelines: &Pipelines, tenant: &str, id: Uuid) -> Vec<(String, Value)> {
    let page = pipelines
        .results(&caller(tenant), &id.to_string(), Some("1000"), None)
        .await
        .unwrap();
    page.rows.into_iter().map(|r| (r.key, r.value)).collect()
}

#[tokio::test]
async fn an_invalid_definition_names_every_bad_field_and_stores_nothing() {
    let world = World::new();
    let pipelines = world.pipelines();
    let err = pipelines
        .create(
            &caller("acme"),
            input(json!({
                "name": "bad name!",
                "source_event_types": ["order..placed"],
                "operators": [{"type": "filter", "field": "customer", "op": "eq", "value": 1},
                              {"type": "teleport"}],
                "output": {"type": "events"},
                "from_position": -1
            })),
        )
        .await
        .unwrap_err();
    let PipelineError::Invalid(errors) = err else {
        panic!("{err:?}")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for field in [
        "name",
        "source_event_types[0]",
        "operators[0].field",
        "operators[1].type",
        "output.event_type",
        "from_position",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    assert!(world.state.all_keys().is_empty());
}

#[tokio::test]
async fn a_pipeline_that_would_read_its_own_output_is_refused() {
    let world = World::new();
    let err = world
        .pipelines()
        .create(
            &caller("acme"),
            input(json!({
                "name": "loop", "source_event_types": ["order.*"], "operators": [],
                "output": {"type": "events", "event_type": "order.copied"}
            })),
        )
        .await
        .unwrap_err();
    let PipelineError::Invalid(errors) = err else {
        panic!("{err:?}")
    };
    assert_eq!(errors[0].field, "source_event_types");
}

#[tokio::test]
async fn a_table_counts_every_event_once_across_a_crash_and_a_restart() {
    let world = World::new();
    world.orders("acme", &[("alice", 10), ("bob", 5), ("alice", 7)]);
    let first = world.pipelines();
    first.start();
    let view = first
        .create(&caller("acme"), input(counting()))
        .await
        .unwrap();
    wait_for(&first, "acme", view.id, |s| s.counters.processed == 3).await;
    // More events, then a crash at an arbitrary moment: nothing committed after it survives.
    world.orders("acme", &[("bob", 1), ("carol", 2), ("alice", 1)]);
    first.crash().await;
    world.orders("acme", &[("carol", 3)]);
    let second = world.pipelines();
    second.start();
    let stats = wait_for(&second, "acme", view.id, |s| s.counters.processed == 7).await;
    assert_eq!(stats.lag, 0);
    assert_eq!(stats.counters.failed, 0);
    assert_eq!(
        by_customer(&second, "acme", view.id).await,
        vec![
            json!({"customer": "alice", "orders": 3, "total": 18}),
            json!({"customer": "bob", "orders": 2, "total": 6}),
            json!({"customer": "carol", "orders": 2, "total": 5}),
        ]
    );
    second.stop().await;
}

#[tokio::test]
async fn derived_events_emitted_before_a_failed_checkpoint_are_not_appended_twice() {
    let world = World::new();
    let pipelines = world.pipelines();
    pipelines.start();
    let view = pipelines
        .create(
            &caller("acme"),
            input(json!({
                "name": "big_orders",
                "source_event_types": ["order.placed"],
                "operators": [{"type": "filter", "field": "$.amount", "op": "gte", "value": 5},
                              {"type": "map", "field": "$.customer", "transform": "uppercase"}],
                "output": {"type": "events", "event_type": "order.big",
                           "entity_id_field": "$.customer"}
            })),
        )
        .await
        .unwrap();
    // The worker holds its lease (its first checkpoint is written).
    let acme = TenantId::parse("acme").unwrap();
    while world.state.keys(&acme, records::CHECKPOINTS).is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The checkpoint write after the next emission fails: the run ends uncommitted and
    // starts again from the previous checkpoint, emitting the same events again.
    world.state.fail_puts_after(records::CHECKPOINTS, 0);
    world.orders("acme", &[("alice", 10), ("bob", 1), ("carol", 6)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        world.derived("acme", "order.big").len(),
        2,
        "emitted, not committed"
    );
    world.state.heal();
    let stats = wait_for(&pipelines, "acme", view.id, |s| s.counters.processed == 3).await;
    assert_eq!(stats.counters.filtered, 1);
    assert_eq!(stats.counters.emitted, 2);
    let derived = world.derived("acme", "order.big");
    assert_eq!(
        derived,
        vec![
            (
                "ALICE".to_owned(),
                json!({"customer": "ALICE", "amount": 10})
            ),
            (
                "CAROL".to_owned(),
                json!({"customer": "CAROL", "amount": 6})
            ),
        ]
    );
    // The derived events say where they come from.
    let last = world.log.events().last().cloned().unwrap();
    let metadata: Value = serde_json::from_str(last.metadata.as_ref().unwrap().get()).unwrap();
    assert_eq!(metadata["pipeline_id"], json!(view.id.to_string()));
    assert_eq!(metadata["pipeline_hops"], json!(1));
    pipelines.stop().await;
}

#[tokio::test]
async fn a_pipeline_never_sees_another_tenants_events() {
    let world = World::new();
    let pipelines = world.pipelines();
    pipelines.start();
    let view = pipelines
        .create(&caller("acme"), input(counting()))
        .await
        .unwrap();
    world.orders("globex", &[("mallory", 100), ("mallory", 100)]);
    world.orders("acme", &[("alice", 1)]);
    let stats = wait_for(&pipelines, "acme", view.id, |s| s.counters.processed >= 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stats.counters.processed, 1);
    let rows = table(&pipelines, "acme", view.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1["customer"], "alice");
    // And another tenant cannot read, change or delete it.
    let id = view.id.to_string();
    let other = caller("globex");
    assert!(matches!(
        pipelines.get(&other, &id).await,
        Err(PipelineError::NotFound(_))
    ));
    assert!(matches!(
        pipelines.results(&other, &id, None, None).await,
        Err(PipelineError::NotFound(_))
    ));
    assert!(matches!(
        pipelines.delete(&other, &id).await,
        Err(PipelineError::NotFound(_))
    ));
    assert!(pipelines.list(&other).await.unwrap().is_empty());
    pipelines.stop().await;
}

#[tokio::test]
async fn enrich_looks_up_through_the_port_and_retries_when_it_is_unavailable() {
    let world = World::new();
    let mut lookups = MockLookups::new();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    lookups
        .expect_projection_state()
        .returning(move |tenant, name, key| {
            assert_eq!(tenant.as_str(), "acme");
            assert_eq!(name, "customers");
            // The first lookup finds storage down: nothing is lost, the run starts again.
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return Err(LookupError::Unavailable("down".into()));
            }
            Ok((key == "alice").then(|| json!({"tier": "gold"})))
        });
    let pipelines = world.pipelines_with(Arc::new(lookups), Arc::new(Unlimited));
    pipelines.start();
    world.orders("acme", &[("alice", 3), ("bob", 4)]);
    let view = pipelines
        .create(
            &caller("acme"),
            input(json!({
                "name": "tiers",
                "source_event_types": ["order.placed"],
                "operators": [{"type": "enrich", "from": "projection", "name": "customers",
                               "key_field": "$.customer", "into": "$.profile"}],
                "output": {"type": "events", "event_type": "order.enriched"}
            })),
        )
        .await
        .unwrap();
    wait_for(&pipelines, "acme", view.id, |s| s.counters.processed == 2).await;
    let derived = world.derived("acme", "order.enriched");
    assert_eq!(
        derived,
        vec![
            (
                "pipeline-tiers".to_owned(),
                json!({"customer": "alice", "amount": 3, "profile": {"tier": "gold"}})
            ),
            (
                "pipeline-tiers".to_owned(),
                json!({"customer": "bob", "amount": 4, "profile": null})
            ),
        ]
    );
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    pipelines.stop().await;
}

#[tokio::test]
async fn a_failing_record_is_recorded_and_processing_goes_on_or_pauses() {
    for (on_error, processed, status) in [("skip", 3, "running"), ("pause", 2, "paused")] {
        let world = World::new();
        let pipelines = world.pipelines();
        pipelines.start();
        let view = pipelines
            .create(
                &caller("acme"),
                input(json!({
                    "name": "doubles",
                    "source_event_types": ["order.placed"],
                    "on_error": on_error,
                    "operators": [{"type": "map", "field": "$.amount", "transform": "multiply",
                                   "value": 2}],
                    "output": {"type": "table"}
                })),
            )
            .await
            .unwrap();
        world.log.append_payloads(
            "acme",
            &[
                ("o-1", "order.placed", json!({"amount": 1})),
                ("o-2", "order.placed", json!({"amount": "lots"})),
                ("o-3", "order.placed", json!({"amount": 3})),
            ],
        );
        let stats = wait_for(&pipelines, "acme", view.id, |s| {
            s.counters.processed == processed && s.status == status
        })
        .await;
        assert_eq!(stats.counters.failed, 1, "{on_error}");
        assert_eq!(stats.failures.len(), 1);
        assert_eq!(stats.failures[0].operator, Some(0));
        assert_eq!(stats.failures[0].position, 2);
        if on_error == "pause" {
            // Nothing more is processed until it is resumed by an update of the same
            // definition; then the rest follows.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let still = pipelines
                .stats(&caller("acme"), &view.id.to_string())
                .await
                .unwrap();
            assert_eq!(still.counters.processed, 2);
            let mut same = input(json!({
                "name": "doubles",
                "source_event_types": ["order.placed"],
                "on_error": on_error,
                "operators": [{"type": "map", "field": "$.amount", "transform": "multiply",
                               "value": 2}],
                "output": {"type": "table"}
            }));
            same.id = None;
            pipelines
                .update(&caller("acme"), &view.id.to_string(), same)
                .await
                .unwrap();
            let resumed =
                wait_for(&pipelines, "acme", view.id, |s| s.counters.processed == 3).await;
            assert_eq!(resumed.status, "running");
            assert_eq!(resumed.generation, 1, "the same definition keeps its state");
        }
        pipelines.stop().await;
    }
}

#[tokio::test]
async fn a_changed_definition_or_a_reset_starts_a_new_generation_from_the_chosen_position() {
    let world = World::new();
    world.orders("acme", &[("alice", 1), ("bob", 2)]);
    let pipelines = world.pipelines();
    pipelines.start();
    let acme = caller("acme");
    let view = pipelines.create(&acme, input(counting())).await.unwrap();
    let id = view.id.to_string();
    wait_for(&pipelines, "acme", view.id, |s| s.counters.processed == 2).await;
    // Changed (a filter added), from now: only new events count.
    let mut changed = counting();
    changed["operators"].as_array_mut().unwrap().insert(
        0,
        json!({"type": "filter", "field": "$.amount", "op": "gt", "value": 0}),
    );
    changed["from_position"] = json!("now");
    let updated = pipelines.update(&acme, &id, input(changed)).await.unwrap();
    assert_eq!(updated.generation, 2);
    assert_eq!(updated.position, 2);
    world.orders("acme", &[("alice", 5)]);
    wait_for(&pipelines, "acme", view.id, |s| {
        s.generation == 2 && s.counters.processed == 1
    })
    .await;
    let rows = table(&pipelines, "acme", view.id).await;
    assert_eq!(
        rows.len(),
        1,
        "the old generation's rows are gone: {rows:?}"
    );
    assert_eq!(rows[0].1["orders"], 1);
    // A reset from the beginning counts everything again.
    let reset = pipelines.reset(&acme, &id, None).await.unwrap();
    assert_eq!(reset.generation, 3);
    wait_for(&pipelines, "acme", view.id, |s| {
        s.generation == 3 && s.counters.processed == 3
    })
    .await;
    let rows = table(&pipelines, "acme", view.id).await;
    let alice = rows.iter().find(|(_, v)| v["customer"] == "alice").unwrap();
    assert_eq!(alice.1["orders"], 2);
    assert_eq!(alice.1["total"], 6);
    pipelines.stop().await;
}

#[tokio::test]
async fn the_pipelines_quota_is_taken_on_create_and_given_back_on_delete() {
    let world = World::new();
    let mut quotas = MockQuotaGate::new();
    let mut seq = mockall::Sequence::new();
    quotas
        .expect_consume()
        .withf(|_, kind, n| *kind == QuotaKind::Pipelines && *n == 1)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    quotas
        .expect_consume()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, kind, _| {
            Err(GateError::QuotaExceeded(QuotaExceeded {
                quota: kind.as_str().to_owned(),
                limit: 1,
                used: 1,
                retry_after_secs: 60,
            }))
        });
    quotas
        .expect_release()
        .withf(|_, kind, n| *kind == QuotaKind::Pipelines && *n == 1)
        .times(1)
        .returning(|_, _, _| ());
    let pipelines = world.pipelines_with(Arc::new(MockLookups::new()), Arc::new(quotas));
    let acme = caller("acme");
    let view = pipelines.create(&acme, input(counting())).await.unwrap();
    let mut second = counting();
    second["name"] = json!("another");
    assert!(matches!(
        pipelines.create(&acme, input(second)).await,
        Err(PipelineError::Gate(GateError::QuotaExceeded(_)))
    ));
    assert_eq!(pipelines.list(&acme).await.unwrap().len(), 1);
    pipelines.delete(&acme, &view.id.to_string()).await.unwrap();
    assert!(pipelines.list(&acme).await.unwrap().is_empty());
    assert!(
        world
            .state
            .keys(acme.tenant(), records::CHECKPOINTS)
            .is_empty()
    );
}

#[tokio::test]
async fn names_and_client_chosen_ids_are_unique_per_tenant() {
    let world = World::new();
    let pipelines = world.pipelines();
    let id = Uuid::new_v4().to_string();
    let mut body = counting();
    body["id"] = json!(id);
    pipelines
        .create(&caller("acme"), input(body.clone()))
        .await
        .unwrap();
    assert!(matches!(
        pipelines.create(&caller("acme"), input(body.clone())).await,
        Err(PipelineError::Conflict(_))
    ));
    body["id"] = json!(Uuid::new_v4().to_string());
    assert!(matches!(
        pipelines.create(&caller("acme"), input(body.clone())).await,
        Err(PipelineError::Conflict(_))
    ));
    // Another tenant may use the same name.
    pipelines
        .create(&caller("globex"), input(body))
        .await
        .unwrap();
}

/// Refuses derived events of `order.big` whose payload names `mallory`, as a registered
/// schema would.
struct RefuseMallory;

#[async_trait::async_trait]
impl crate::use_cases::AppendGuard for RefuseMallory {
    async fn before_append<'a>(
        &self,
        _caller: &Caller,
        events: &[crate::use_cases::GuardedEvent<'a>],
        batch: bool,
    ) -> Result<(), crate::use_cases::AppendError> {
        let bad = events
            .iter()
            .find(|e| e.event_type.as_str() == "order.big" && e.payload.get().contains("mallory"));
        match bad {
            None => Ok(()),
            Some(e) => Err(crate::use_cases::AppendError::SchemaViolation(vec![
                FieldError::new(
                    if batch {
                        format!("events[{}].payload", e.index)
                    } else {
                        "payload".to_owned()
                    },
                    "customer 'mallory' is not allowed",
                ),
            ])),
        }
    }
}

#[tokio::test]
async fn a_branch_routes_each_record_to_its_outputs_and_a_refused_derived_event_is_a_failure() {
    let world = World::new();
    let pipelines = world.build(Setup {
        guard: Some(Arc::new(RefuseMallory)),
        ..Setup::default()
    });
    pipelines.start();
    let view = pipelines
        .create(
            &caller("acme"),
            input(json!({
                "name": "routing",
                "source_event_types": ["order.placed"],
                "operators": [{"type": "branch", "routes": [
                    {"when": {"field": "$.amount", "op": "gte", "value": 100},
                     "output": {"type": "events", "event_type": "order.big",
                                "entity_id_field": "$.customer"}},
                    {"when": {"field": "$.customer", "op": "eq", "value": "alice"},
                     "output": {"type": "events", "event_type": "order.alice"}}]}],
                "output": {"type": "table"}
            })),
        )
        .await
        .unwrap();
    world.orders(
        "acme",
        &[("alice", 150), ("bob", 200), ("carol", 5), ("mallory", 500)],
    );
    let stats = wait_for(&pipelines, "acme", view.id, |s| s.counters.processed == 4).await;
    // alice goes to both routes, bob to the first, carol to the default table, mallory's
    // derived event is refused by the guard: recorded as a failure of the output.
    let big: Vec<String> = world
        .derived("acme", "order.big")
        .into_iter()
        .map(|(entity, _)| entity)
        .collect();
    assert_eq!(big, ["alice", "bob"]);
    assert_eq!(world.derived("acme", "order.alice").len(), 1);
    let rows = table(&pipelines, "acme", view.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1["customer"], "carol");
    assert_eq!(stats.counters.emitted, 4);
    assert_eq!(stats.counters.failed, 1);
    assert_eq!(stats.failures[0].operator, None);
    assert!(
        stats.failures[0].message.contains("mallory"),
        "{:?}",
        stats.failures[0]
    );
    pipelines.stop().await;
}

#[tokio::test]
async fn the_clock_closes_windows_over_timestamps_only_once_caught_up() {
    let world = World::new();
    // 1,200 orders 1 ms apart (the test log's timestamps), long ago: 121 windows of 10 ms.
    // Catching up reads three pages, each taking 5 ms; a tick (every millisecond) during a
    // page read must not close the window the next page still has events of, or they would
    // arrive late.
    *world.log.query_latency.lock() = Some(Duration::from_millis(5));
    for chunk in 0..12 {
        let orders: Vec<(&str, i64)> = (0..100).map(|i| ("alice", chunk * 100 + i)).collect();
        world.orders("acme", &orders);
    }
    let pipelines = world.build(Setup {
        config: PipelineConfig {
            tick: Duration::from_millis(1),
            clock_grace: Duration::ZERO,
            batch_events: 7,
            ..World::config()
        },
        ..Setup::default()
    });
    pipelines.start();
    let view = pipelines
        .create(
            &caller("acme"),
            input(json!({
                "name": "per_10ms",
                "source_event_types": ["order.placed"],
                "operators": [
                    {"type": "window", "kind": "tumbling", "size_ms": 10},
                    {"type": "reduce", "group_by": ["$.customer"],
                     "aggregations": [{"name": "orders", "fn": "count"}]}],
                "output": {"type": "events", "event_type": "orders.per_10ms"}
            })),
        )
        .await
        .unwrap();
    let stats = wait_for(&pipelines, "acme", view.id, |s| {
        s.counters.processed == 1200 && s.counters.emitted == 121
    })
    .await;
    assert_eq!(stats.counters.late, 0);
    let derived = world.derived("acme", "orders.per_10ms");
    assert_eq!(derived.len(), 121);
    let counts: Vec<u64> = derived
        .iter()
        .map(|(_, p)| p["orders"].as_u64().unwrap())
        .collect();
    // The test log's event at position p is p ms into the epoch of its windows: the first
    // window holds positions 1–9, the last one position 1200, every other one 10 orders.
    assert_eq!(counts[0], 9);
    assert_eq!(counts[120], 1);
    assert!(counts[1..120].iter().all(|&n| n == 10), "{counts:?}");
    pipelines.stop().await;
}

#[tokio::test]
async fn a_deactivated_tenants_pipeline_waits_and_then_skips_nothing() {
    let world = World::new();
    let active = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut gate = crate::quota::MockTenantGate::new();
    let flag = active.clone();
    gate.expect_check_active().returning(move |_| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err(GateError::TenantInactive("deactivated".into()))
        }
    });
    let pipelines = world.build(Setup {
        tenants: Arc::new(gate),
        ..Setup::default()
    });
    pipelines.start();
    let view = pipelines
        .create(&caller("acme"), input(counting()))
        .await
        .unwrap();
    world.orders("acme", &[("alice", 1)]);
    wait_for(&pipelines, "acme", view.id, |s| s.counters.processed == 1).await;
    active.store(false, std::sync::atomic::Ordering::SeqCst);
    world.orders("acme", &[("alice", 2), ("bob", 3)]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let waiting = pipelines
        .stats(&caller("acme"), &view.id.to_string())
        .await
        .unwrap();
    assert_eq!(
        waiting.counters.processed, 1,
        "nothing processed while deactivated"
    );
    assert_eq!(waiting.lag, 2);
    active.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(&pipelines, "acme", view.id, |s| s.counters.processed == 3).await;
    assert_eq!(
        by_customer(&pipelines, "acme", view.id).await,
        vec![
            json!({"customer": "alice", "orders": 2, "total": 3}),
            json!({"customer": "bob", "orders": 1, "total": 3}),
        ]
    );
    pipelines.stop().await;
}

#[tokio::test]
async fn a_paused_pipeline_or_a_deactivated_tenant_never_holds_up_the_others() {
    // One pipeline processes at a time (`concurrency` 1): neither a paused pipeline nor one
    // waiting for its deactivated tenant may keep that turn.
    let world = World::new();
    let mut gate = crate::quota::MockTenantGate::new();
    gate.expect_check_active().returning(|tenant| {
        if tenant.as_str() == "sleepy" {
            Err(GateError::TenantInactive("deactivated".into()))
        } else {
            Ok(())
        }
    });
    let pipelines = world.build(Setup {
        tenants: Arc::new(gate),
        config: PipelineConfig {
            concurrency: 1,
            ..World::config()
        },
        ..Setup::default()
    });
    pipelines.start();
    let pausing = pipelines
        .create(
            &caller("acme"),
            input(json!({
                "name": "pausing", "source_event_types": ["order.placed"], "on_error": "pause",
                "operators": [{"type": "map", "field": "$.customer", "transform": "multiply",
                               "value": 2}],
                "output": {"type": "table"}
            })),
        )
        .await
        .unwrap();
    pipelines
        .create(&caller("sleepy"), input(counting()))
        .await
        .unwrap();
    world.orders("acme", &[("alice", 1)]);
    world.orders("sleepy", &[("zed", 1)]);
    wait_for(&pipelines, "acme", pausing.id, |s| s.status == "paused").await;
    // Both are stuck; a third pipeline still gets every event.
    let counting_view = pipelines
        .create(&caller("acme"), input(counting()))
        .await
        .unwrap();
    world.orders("acme", &[("bob", 2), ("carol", 3)]);
    let stats = wait_for(&pipelines, "acme", counting_view.id, |s| {
        s.counters.processed == 3
    })
    .await;
    assert_eq!(stats.lag, 0);
    pipelines.stop().await;
}

#[tokio::test]
async fn a_pipeline_created_again_under_a_deleted_ones_id_emits_afresh() {
    let world = World::new();
    let pipelines = world.pipelines();
    pipelines.start();
    let id = Uuid::new_v4().to_string();
    let body = |transform: &str| {
        json!({
            "id": id, "name": "names", "source_event_types": ["order.placed"],
            "operators": [{"type": "map", "field": "$.customer", "transform": transform}],
            "output": {"type": "events", "event_type": "order.named"}
        })
    };
    world.orders("acme", &[("Alice", 1)]);
    let first = pipelines
        .create(&caller("acme"), input(body("uppercase")))
        .await
        .unwrap();
    wait_for(&pipelines, "acme", first.id, |s| s.counters.emitted == 1).await;
    pipelines.delete(&caller("acme"), &id).await.unwrap();
    let second = pipelines
        .create(&caller("acme"), input(body("lowercase")))
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    wait_for(&pipelines, "acme", second.id, |s| s.counters.emitted == 1).await;
    let names: Vec<Value> = world
        .derived("acme", "order.named")
        .into_iter()
        .map(|(_, p)| p["customer"].clone())
        .collect();
    assert_eq!(names, [json!("ALICE"), json!("alice")]);
    pipelines.stop().await;
}

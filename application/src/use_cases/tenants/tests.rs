//! Tenant use-case tests over mocked ports: the state store is a `MockStateStore` answering from
//! a shared map (so that two `Tenants`, two "nodes", can share it), the clock a `MockClock`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion, ProposedEvent, Role};
use chrono::TimeZone;
use serde_json::Value;
use serde_json::value::RawValue;

use allsource_domain::{QuotaOverrides, Tier};
use async_trait::async_trait;

use super::*;
use crate::Principal;
use crate::ports::AppendReceipt;
use crate::ports::clock::MockClock;
use crate::ports::{MockAuditLog, MockEventStore, MockStateStore, StateEntry};
use crate::quota::{QuotaGate, TenantGate};
use crate::use_cases::GuardedEvent;
use crate::use_cases::append::{AppendError, AppendGuard};

type Map = Arc<Mutex<BTreeMap<(String, String, String), StateEntry>>>;

fn fake_store(map: Map) -> MockStateStore {
    let mut store = MockStateStore::new();
    let m = map.clone();
    store.expect_get().returning(move |t, ns, k| {
        Ok(lock(&m)
            .get(&(t.as_str().into(), ns.into(), k.into()))
            .cloned())
    });
    let m = map.clone();
    store
        .expect_put()
        .returning(move |t, ns, k, value: Value, expected| {
            let mut m = lock(&m);
            let key = (t.as_str().to_owned(), ns.to_owned(), k.to_owned());
            let current = m.get(&key).map_or(0, |e| e.version);
            if let Some(expected) = expected
                && expected != current
            {
                return Err(StateError::VersionConflict { expected, current });
            }
            m.insert(
                key,
                StateEntry {
                    value,
                    version: current + 1,
                },
            );
            Ok(current + 1)
        });
    let m = map.clone();
    store.expect_delete().returning(move |t, ns, k| {
        Ok(lock(&m)
            .remove(&(t.as_str().into(), ns.into(), k.into()))
            .is_some())
    });
    let m = map;
    store
        .expect_list()
        .returning(move |t, ns, prefix, after, limit| {
            Ok(lock(&m)
                .iter()
                .filter(|((tt, nn, k), _)| {
                    tt == t.as_str()
                        && nn == ns
                        && prefix.as_deref().is_none_or(|p| k.starts_with(p))
                        && after.as_deref().is_none_or(|a| k.as_str() > a)
                })
                .take(limit)
                .map(|((_, _, k), e)| (k.clone(), e.clone()))
                .collect())
        });
    store
}

struct World {
    map: Map,
    clock: Arc<AtomicI64>,
    audit: Arc<Mutex<Vec<AuditRecord>>>,
}

impl World {
    fn new() -> Self {
        Self {
            map: Arc::default(),
            clock: Arc::new(AtomicI64::new(
                Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
                    .unwrap()
                    .timestamp_millis(),
            )),
            audit: Arc::default(),
        }
    }

    /// A `Tenants` over the shared world: one node.
    fn node(&self) -> Tenants {
        let mut clock = MockClock::new();
        let ms = self.clock.clone();
        clock
            .expect_now()
            .returning(move || Utc.timestamp_millis_opt(ms.load(Ordering::SeqCst)).unwrap());
        let mut audit = MockAuditLog::new();
        let records = self.audit.clone();
        audit.expect_record().returning(move |r| {
            lock(&records).push(r);
            Ok(())
        });
        let mut events = MockEventStore::new();
        events.expect_stats().returning(|tenant| {
            Ok(StoreStats {
                total_events: if tenant.as_str() == "acme" { 7 } else { 0 },
                ..StoreStats::default()
            })
        });
        Tenants::new(
            Arc::new(fake_store(self.map.clone())),
            Arc::new(audit),
            ReadEvents::new(Arc::new(events)),
            Arc::new(clock),
        )
    }

    fn advance_secs(&self, secs: i64) {
        self.clock.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    fn actions(&self) -> Vec<String> {
        lock(&self.audit).iter().map(|r| r.action.clone()).collect()
    }
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn operator() -> Caller {
    Caller::default_tenant()
}

fn user_of(tenant: &str, role: Role) -> Caller {
    Caller::authenticated(
        tid(tenant),
        role,
        Principal::User {
            user_id: "u1".into(),
            username: "alice".into(),
        },
    )
}

fn create(id: &str, tier: &str) -> CreateTenantInput {
    CreateTenantInput {
        id: Some(id.into()),
        name: None,
        tier: Some(tier.into()),
    }
}

fn proposed(n: usize, payload: &str) -> Vec<ProposedEvent> {
    (0..n)
        .map(|_| ProposedEvent {
            id: EventId::generate(),
            entity_id: EntityId::parse("e").unwrap(),
            event_type: EventType::parse("t").unwrap(),
            payload: RawValue::from_string(payload.into()).unwrap(),
            metadata: None,
            expected_version: ExpectedVersion::Any,
        })
        .collect()
}

fn sizes(events: &[ProposedEvent]) -> Vec<usize> {
    events.iter().map(ProposedEvent::body_bytes).collect()
}

fn receipts(events: &[ProposedEvent], duplicate: bool) -> Vec<AppendReceipt> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| AppendReceipt {
            event_id: e.id,
            entity_id: e.entity_id.clone(),
            version: allsource_domain::Version::new(i as u64 + 1),
            position: allsource_domain::Position::new(i as u64 + 1),
            timestamp: Utc::now(),
            duplicate,
        })
        .collect()
}

#[tokio::test]
async fn tenant_default_exists_unlimited_and_cannot_be_deleted_or_deactivated() {
    let w = World::new();
    let tenants = w.node();
    let default = tenants.get(&operator(), "default").await.unwrap();
    assert_eq!(default.tier, Tier::Unlimited);
    assert!(default.active);
    assert!(matches!(
        tenants.delete(&operator(), "default").await,
        Err(TenantError::Conflict(_))
    ));
    assert!(matches!(
        tenants.set_active(&operator(), "default", false).await,
        Err(TenantError::Conflict(_))
    ));
    let listed = tenants.list(&operator()).await.unwrap();
    assert_eq!(listed.len(), 1);
    tenants.check_active(&tid("default")).await.unwrap();
}

#[tokio::test]
async fn create_read_update_delete_with_audit() {
    let w = World::new();
    let tenants = w.node();
    let acme = tenants
        .create(&operator(), create("acme", "professional"))
        .await
        .unwrap();
    assert_eq!(acme.name.as_str(), "acme");
    assert_eq!(acme.quotas(), Tier::Professional.quotas());
    assert!(matches!(
        tenants.create(&operator(), create("acme", "free")).await,
        Err(TenantError::Conflict(_))
    ));
    let updated = tenants
        .update(
            &operator(),
            "acme",
            UpdateTenantInput {
                name: Some("Acme Corp".into()),
                tier: Some("free".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.tier, Tier::Free);
    assert_eq!(updated.name.as_str(), "Acme Corp");
    assert_eq!(tenants.get(&operator(), "acme").await.unwrap(), updated);
    // A second node sees what the first wrote.
    assert_eq!(w.node().get(&operator(), "acme").await.unwrap(), updated);
    assert_eq!(tenants.list(&operator()).await.unwrap().len(), 2);
    tenants.delete(&operator(), "acme").await.unwrap();
    assert!(matches!(
        tenants.get(&operator(), "acme").await,
        Err(TenantError::NotFound(_))
    ));
    assert!(matches!(
        tenants.check_active(&tid("acme")).await,
        Err(GateError::TenantInactive(_))
    ));
    assert_eq!(
        w.actions(),
        ["tenant.create", "tenant.update", "tenant.delete"]
    );
}

#[tokio::test]
async fn bad_input_is_named_by_field() {
    let w = World::new();
    let tenants = w.node();
    let Err(TenantError::Invalid(errors)) = tenants
        .create(
            &operator(),
            CreateTenantInput {
                id: Some("no spaces".into()),
                name: Some(" x".into()),
                tier: Some("gold".into()),
            },
        )
        .await
    else {
        panic!("expected invalid");
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["id", "name", "tier"]);
    assert!(matches!(
        tenants
            .create(&operator(), CreateTenantInput::default())
            .await,
        Err(TenantError::Invalid(_))
    ));
    assert!(matches!(
        tenants.get(&operator(), "../etc").await,
        Err(TenantError::Invalid(_))
    ));
}

#[tokio::test]
async fn admins_of_other_tenants_see_only_their_own_and_change_nothing() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    tenants
        .create(&operator(), create("globex", "free"))
        .await
        .unwrap();
    let acme_admin = user_of("acme", Role::Admin);
    let listed = tenants.list(&acme_admin).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.as_str(), "acme");
    assert!(tenants.get(&acme_admin, "acme").await.is_ok());
    assert!(matches!(
        tenants.get(&acme_admin, "globex").await,
        Err(TenantError::NotFound(_))
    ));
    assert!(matches!(
        tenants.stats(&acme_admin, "globex").await,
        Err(TenantError::NotFound(_))
    ));
    assert!(matches!(
        tenants
            .set_quotas(&acme_admin, "acme", QuotaOverrides::default())
            .await,
        Err(TenantError::Forbidden(_))
    ));
    assert!(matches!(
        tenants.set_active(&acme_admin, "globex", false).await,
        Err(TenantError::NotFound(_))
    ));
    assert!(matches!(
        tenants.create(&acme_admin, create("x", "free")).await,
        Err(TenantError::Forbidden(_))
    ));
    // An admin of `default` without... every admin holds manage_tenants; a developer of
    // `default` is not an operator.
    assert!(matches!(
        tenants
            .create(&user_of("default", Role::Developer), create("x", "free"))
            .await,
        Err(TenantError::Forbidden(_))
    ));
    // Readers of a tenant get its stats.
    let stats = tenants
        .stats(&user_of("acme", Role::Readonly), "acme")
        .await
        .unwrap();
    assert_eq!(stats.events.total_events, 7);
}

#[tokio::test]
async fn deactivation_takes_effect_at_once_despite_the_cache() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    tenants.check_active(&tid("acme")).await.unwrap();
    tenants
        .set_active(&operator(), "acme", false)
        .await
        .unwrap();
    let Err(GateError::TenantInactive(why)) = tenants.check_active(&tid("acme")).await else {
        panic!("expected inactive");
    };
    assert!(why.contains("deactivated"), "{why}");
    // An append of a tenant that is gone is refused as forbidden, not as a server error.
    let one = proposed(1, "1");
    assert!(matches!(
        tenants
            .before_append(
                &user_of("nobody", Role::ServiceAccount),
                &GuardedEvent::all(&one),
                false
            )
            .await,
        Err(AppendError::Forbidden(_))
    ));
    tenants.set_active(&operator(), "acme", true).await.unwrap();
    tenants.check_active(&tid("acme")).await.unwrap();
    assert!(matches!(
        tenants.check_active(&tid("nobody")).await,
        Err(GateError::TenantInactive(_))
    ));
    assert_eq!(
        w.actions(),
        ["tenant.create", "tenant.deactivate", "tenant.activate"]
    );
}

#[tokio::test]
async fn another_nodes_deactivation_is_seen_after_the_cache_time() {
    let w = World::new();
    let (a, b) = (w.node(), w.node());
    a.create(&operator(), create("acme", "free")).await.unwrap();
    b.check_active(&tid("acme")).await.unwrap();
    a.set_active(&operator(), "acme", false).await.unwrap();
    w.advance_secs(TENANT_CACHE_MILLIS / 1000 + 1);
    assert!(b.check_active(&tid("acme")).await.is_err());
}

#[tokio::test]
async fn quotas_refuse_naming_the_quota_and_recover_on_release_or_override() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    let acme = tid("acme");
    tenants.consume(&acme, QuotaKind::ApiKeys, 1).await.unwrap();
    tenants.consume(&acme, QuotaKind::ApiKeys, 1).await.unwrap();
    let Err(GateError::QuotaExceeded(q)) = tenants.consume(&acme, QuotaKind::ApiKeys, 1).await
    else {
        panic!("expected quota exceeded");
    };
    assert_eq!((q.quota.as_str(), q.limit, q.used), ("max_api_keys", 2, 2));
    tenants.release(&acme, QuotaKind::ApiKeys, 1).await;
    tenants.consume(&acme, QuotaKind::ApiKeys, 1).await.unwrap();
    assert!(tenants.consume(&acme, QuotaKind::ApiKeys, 1).await.is_err());
    tenants
        .set_quotas(
            &operator(),
            "acme",
            QuotaOverrides {
                max_api_keys: Some(Some(3)),
                ..QuotaOverrides::default()
            },
        )
        .await
        .unwrap();
    tenants.consume(&acme, QuotaKind::ApiKeys, 1).await.unwrap();
    assert!(w.actions().contains(&"quota.update".to_owned()));
    // Durable: a fresh node (a restart) reads the counters back.
    let stats = w.node().stats(&operator(), "acme").await.unwrap();
    let keys = stats
        .usage
        .iter()
        .find(|u| u.kind == QuotaKind::ApiKeys)
        .unwrap();
    assert_eq!((keys.used, keys.limit), (3, Some(3)));
}

#[tokio::test]
async fn two_nodes_add_up_their_counts() {
    let w = World::new();
    let (a, b) = (w.node(), w.node());
    a.create(&operator(), create("acme", "professional"))
        .await
        .unwrap();
    let acme = tid("acme");
    a.consume(&acme, QuotaKind::Projections, 1).await.unwrap();
    b.consume(&acme, QuotaKind::Projections, 2).await.unwrap(); // b read before a's write? no: b loads now
    a.consume(&acme, QuotaKind::Projections, 4).await.unwrap(); // a's version is stale: conflict, re-read
    let stats = w.node().stats(&operator(), "acme").await.unwrap();
    let used = stats
        .usage
        .iter()
        .find(|u| u.kind == QuotaKind::Projections)
        .unwrap()
        .used;
    assert_eq!(used, 7);
}

#[tokio::test]
async fn webhooks_are_counted_once_each_and_given_back() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    let acme = tid("acme");
    let webhooks_used = |stats: TenantStats| {
        stats
            .usage
            .iter()
            .find(|u| u.kind == QuotaKind::Webhooks)
            .map(|u| (u.used, u.limit))
            .unwrap()
    };
    tenants
        .consume(&acme, QuotaKind::Webhooks, 1)
        .await
        .unwrap();
    tenants
        .consume(&acme, QuotaKind::Webhooks, 1)
        .await
        .unwrap();
    assert!(matches!(
        tenants.consume(&acme, QuotaKind::Webhooks, 1).await,
        Err(GateError::QuotaExceeded(q)) if q.quota == "max_webhooks" && q.used == 2
    ));
    tenants.release(&acme, QuotaKind::Webhooks, 1).await;
    let stats = tenants.stats(&operator(), "acme").await.unwrap();
    assert_eq!(webhooks_used(stats), (1, Some(2)));
    // As written: a fresh node reads the same.
    let stats = w.node().stats(&operator(), "acme").await.unwrap();
    assert_eq!(webhooks_used(stats), (1, Some(2)));
    tenants
        .consume(&acme, QuotaKind::Webhooks, 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_append_guard_checks_before_and_counts_non_duplicates_after() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    tenants
        .set_quotas(
            &operator(),
            "acme",
            QuotaOverrides {
                max_events_per_day: Some(Some(3)),
                max_storage_bytes: Some(Some(1_000)),
                ..QuotaOverrides::default()
            },
        )
        .await
        .unwrap();
    let caller = user_of("acme", Role::ServiceAccount);
    let two = proposed(2, "{\"a\":1}");
    tenants
        .before_append(&caller, &GuardedEvent::all(&two), true)
        .await
        .unwrap();
    tenants
        .after_append(&caller, &receipts(&two, false), &sizes(&two))
        .await;
    // Re-sent duplicates do not count.
    tenants
        .after_append(&caller, &receipts(&two, true), &sizes(&two))
        .await;
    let one = proposed(1, "1");
    tenants
        .before_append(&caller, &GuardedEvent::all(&one), false)
        .await
        .unwrap();
    let Err(AppendError::QuotaExceeded(q)) = tenants
        .before_append(&caller, &GuardedEvent::all(&two), true)
        .await
    else {
        panic!("expected quota exceeded");
    };
    assert_eq!(
        (q.quota.as_str(), q.limit, q.used),
        ("max_events_per_day", 3, 2)
    );
    assert_eq!(q.retry_after_secs, 12 * 3600, "until midnight UTC");
    let big = proposed(1, &format!("\"{}\"", "x".repeat(990)));
    let Err(AppendError::QuotaExceeded(q)) = tenants
        .before_append(&caller, &GuardedEvent::all(&big), false)
        .await
    else {
        panic!("expected quota exceeded");
    };
    assert_eq!(q.quota, "max_storage_bytes");
    assert_eq!(q.used, 14);
    // A new day: events per day start again, storage does not.
    w.advance_secs(12 * 3600);
    tenants
        .before_append(&caller, &GuardedEvent::all(&two), true)
        .await
        .unwrap();
    assert!(
        tenants
            .before_append(&caller, &GuardedEvent::all(&big), false)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn queries_per_hour_reset_every_hour() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    tenants
        .set_quotas(
            &operator(),
            "acme",
            QuotaOverrides {
                max_queries_per_hour: Some(Some(2)),
                ..QuotaOverrides::default()
            },
        )
        .await
        .unwrap();
    let acme = tid("acme");
    for _ in 0..2 {
        tenants
            .consume(&acme, QuotaKind::QueriesPerHour, 1)
            .await
            .unwrap();
    }
    let Err(GateError::QuotaExceeded(q)) =
        tenants.consume(&acme, QuotaKind::QueriesPerHour, 1).await
    else {
        panic!("expected quota exceeded");
    };
    assert_eq!(q.retry_after_secs, 3600);
    w.advance_secs(3600);
    tenants
        .consume(&acme, QuotaKind::QueriesPerHour, 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_tenants_have_no_quota_and_no_rate_limit() {
    let w = World::new();
    let tenants = w.node();
    assert!(matches!(
        tenants.consume(&tid("ghost"), QuotaKind::ApiKeys, 1).await,
        Err(GateError::TenantInactive(_))
    ));
    assert_eq!(tenants.rate_limit(&tid("ghost")).await.unwrap(), None);
    assert_eq!(
        tenants.rate_limit(&tid("default")).await.unwrap(),
        Some(Tier::Unlimited.rate_limit())
    );
}

#[tokio::test]
async fn storage_failures_are_unavailable() {
    let mut store = MockStateStore::new();
    store
        .expect_get()
        .returning(|_, _, _| Err(StateError::Unavailable("down".into())));
    let tenants = Tenants::new(
        Arc::new(store),
        Arc::new(MockAuditLog::new()),
        ReadEvents::new(Arc::new(MockEventStore::new())),
        Arc::new(crate::ports::clock::MockClock::new()),
    );
    let mut clock = MockClock::new();
    clock.expect_now().returning(Utc::now);
    let tenants = Tenants {
        inner: Arc::new(Inner {
            clock: Arc::new(clock),
            store: tenants.inner.store.clone(),
            audit: tenants.inner.audit.clone(),
            reads: tenants.inner.reads.clone(),
            cache: Mutex::default(),
            usage: Mutex::default(),
            members: Mutex::default(),
        }),
    };
    assert!(matches!(
        tenants.check_active(&tid("acme")).await,
        Err(GateError::Unavailable(_))
    ));
    assert!(matches!(
        tenants.get(&operator(), "acme").await,
        Err(TenantError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_write_failure_keeps_the_delta_for_flush_all() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    let caller = user_of("acme", Role::ServiceAccount);
    let two = proposed(2, "1");
    tenants
        .before_append(&caller, &GuardedEvent::all(&two), true)
        .await
        .unwrap();
    // Another flush is in flight: flush_all leaves this tenant to it.
    let cell = tenants.cell(&tid("acme"));
    tenants.loaded_cell(&tid("acme")).await.unwrap();
    tenants
        .after_append(&caller, &receipts(&two, false), &sizes(&two))
        .await;
    lock(&cell).flushing = true;
    tenants.flush_all().await;
    assert!(!lock(&cell).delta.is_empty());
    lock(&cell).flushing = false;
    tenants.flush_all().await;
    assert!(lock(&cell).delta.is_empty());
    let stats = w.node().stats(&operator(), "acme").await.unwrap();
    assert_eq!(stats.usage[0].used, 2, "{:?}", stats.usage);
}

#[tokio::test]
async fn appends_are_counted_at_once_and_written_by_flush_all() {
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    let caller = user_of("acme", Role::ServiceAccount);
    let three = proposed(3, "1");
    tenants
        .before_append(&caller, &GuardedEvent::all(&three), true)
        .await
        .unwrap();
    tenants
        .after_append(&caller, &receipts(&three, false), &sizes(&three))
        .await;
    let here = tenants.stats(&operator(), "acme").await.unwrap();
    assert_eq!(here.usage[0].used, 3, "this node counts at once");
    let elsewhere = w.node().stats(&operator(), "acme").await.unwrap();
    assert_eq!(elsewhere.usage[0].used, 0, "nothing written yet");
    tenants.flush_all().await;
    let elsewhere = w.node().stats(&operator(), "acme").await.unwrap();
    assert_eq!(elsewhere.usage[0].used, 3, "written by flush_all");
}

#[tokio::test]
async fn ensure_creates_once_and_keeps_an_existing_tenant() {
    let w = World::new();
    let tenants = w.node();
    let t = tenants.ensure(&tid("acme"), Tier::Free).await.unwrap();
    assert_eq!(t.tier, Tier::Free);
    tenants
        .update(
            &operator(),
            "acme",
            UpdateTenantInput {
                name: None,
                tier: Some("professional".into()),
            },
        )
        .await
        .unwrap();
    let again = tenants.ensure(&tid("acme"), Tier::Free).await.unwrap();
    assert_eq!(
        again.tier,
        Tier::Professional,
        "an existing tenant is kept as it is"
    );
    assert_eq!(w.actions(), ["tenant.create", "tenant.update"]);
    tenants.check_active(&tid("acme")).await.unwrap();
}

#[tokio::test]
async fn reserved_ids_are_refused_on_create_naming_the_field() {
    let w = World::new();
    let tenants = w.node();
    for reserved in ["_identity", "_system", "_", "_mine"] {
        let Err(TenantError::Invalid(errors)) =
            tenants.create(&operator(), create(reserved, "free")).await
        else {
            panic!("{reserved} was not refused");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "id");
        assert!(
            errors[0].message.contains("reserved"),
            "{}",
            errors[0].message
        );
    }
    assert!(w.actions().is_empty());
    // An underscore elsewhere is fine.
    tenants
        .create(&operator(), create("a_b", "free"))
        .await
        .unwrap();
}

/// Records the tenants it was told to purge.
#[derive(Default)]
struct Purged(Mutex<Vec<String>>);

#[async_trait]
impl TenantMembers for Purged {
    async fn purge_tenant(&self, tenant: &TenantId) -> Result<(), GateError> {
        lock(&self.0).push(tenant.as_str().to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn deleting_a_tenant_purges_its_members_and_creating_one_purges_first() {
    let w = World::new();
    let tenants = w.node();
    let purged = Arc::new(Purged::default());
    tenants.add_members(purged.clone());
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    // Creating an existing tenant is refused before anything is purged.
    assert!(matches!(
        tenants.create(&operator(), create("acme", "free")).await,
        Err(TenantError::Conflict(_))
    ));
    assert_eq!(*lock(&purged.0), ["acme"]);
    tenants.delete(&operator(), "acme").await.unwrap();
    assert_eq!(*lock(&purged.0), ["acme", "acme"]);
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    assert_eq!(*lock(&purged.0), ["acme", "acme", "acme"]);
    // Refused changes purge nothing.
    assert!(tenants.delete(&operator(), "default").await.is_err());
    assert!(
        tenants
            .delete(&user_of("acme", Role::Admin), "acme")
            .await
            .is_err()
    );
    assert_eq!(lock(&purged.0).len(), 3);
}

#[tokio::test]
async fn a_failed_purge_fails_the_deletion_and_the_next_create_retries_it() {
    struct Down;
    #[async_trait]
    impl TenantMembers for Down {
        async fn purge_tenant(&self, _: &TenantId) -> Result<(), GateError> {
            Err(GateError::Unavailable("identity storage down".into()))
        }
    }
    let w = World::new();
    let tenants = w.node();
    tenants
        .create(&operator(), create("acme", "free"))
        .await
        .unwrap();
    tenants.add_members(Arc::new(Down));
    assert!(matches!(
        tenants.delete(&operator(), "acme").await,
        Err(TenantError::Unavailable(_))
    ));
    // The record is gone (its credentials are refused), and it cannot be re-created while
    // what it left behind cannot be purged.
    assert!(tenants.check_active(&tid("acme")).await.is_err());
    assert!(matches!(
        tenants.create(&operator(), create("acme", "free")).await,
        Err(TenantError::Unavailable(_))
    ));
}

#[tokio::test]
async fn purging_namespaces_deletes_the_tenants_keys_there_and_nothing_else() {
    use crate::ports::StateStore as _;
    let state = Arc::new(crate::testing::MemoryStateStore::new());
    let (a, b) = (
        TenantId::parse("acme").unwrap(),
        TenantId::parse("globex").unwrap(),
    );
    for tenant in [&a, &b] {
        for namespace in ["consumers", "webhooks", "projections"] {
            for i in 0..1500 {
                state
                    .put(
                        tenant,
                        namespace,
                        &format!("k{i}"),
                        serde_json::json!(i),
                        None,
                    )
                    .await
                    .unwrap();
            }
        }
    }
    let purge = super::PurgeNamespaces::new(state.clone(), vec!["consumers", "webhooks"]);
    purge.purge_tenant(&a).await.unwrap();
    assert!(state.keys(&a, "consumers").is_empty());
    assert!(state.keys(&a, "webhooks").is_empty());
    assert_eq!(
        state.keys(&a, "projections").len(),
        1500,
        "other namespaces stay"
    );
    assert_eq!(
        state.keys(&b, "consumers").len(),
        1500,
        "other tenants stay"
    );
    purge.purge_tenant(&a).await.unwrap();
}

//! Use-case tests of webhooks: a mockall mock of the [`WebhookSender`] port (scripted answers,
//! every request recorded), a multi-tenant log publishing to a real feed ([`SharedLog`]), the
//! in-memory state store, mocked quotas and audit log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_domain::Event;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::*;
use crate::ports::{MockAuditLog, MockWebhookSender, SendError, WebhookRequest};
use crate::quota::{MockQuotaGate, QuotaExceeded, Unlimited};
use crate::testing::{MemoryStateStore, SharedLog};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn caller(name: &str) -> Caller {
    Caller::new(tenant(name))
}

/// A small stand-in for the REST API's event shape.
struct TestEncoder;

impl EventEncoder for TestEncoder {
    fn encode(&self, event: &Event) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
        serde_json::value::to_raw_value(&json!({
            "id": event.id.as_uuid(),
            "tenant_id": event.tenant_id.as_str(),
            "entity_id": event.entity_id.as_str(),
            "event_type": event.event_type.as_str(),
            "position": event.position.get(),
        }))
    }
}

/// What the receiver answers to the n-th attempt (1-based) at an event position.
type Script = Arc<dyn Fn(u64, u32) -> Result<u16, SendError> + Send + Sync>;

/// Requests the mock received, in order: (position, attempt, request, when).
#[derive(Default)]
struct Received(Mutex<Vec<(u64, u32, WebhookRequest, Instant)>>);

impl Received {
    fn positions(&self) -> Vec<u64> {
        self.0.lock().iter().map(|(p, ..)| *p).collect()
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }

    fn requests(&self) -> Vec<WebhookRequest> {
        self.0.lock().iter().map(|(_, _, r, _)| r.clone()).collect()
    }

    fn times_of(&self, position: u64) -> Vec<Instant> {
        self.0
            .lock()
            .iter()
            .filter(|(p, ..)| *p == position)
            .map(|(.., t)| *t)
            .collect()
    }
}

fn position_of(request: &WebhookRequest) -> u64 {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    body["event"]["position"].as_u64().unwrap()
}

/// A sender whose destinations all pass, answering with `script`.
fn sender(script: Script, received: Arc<Received>) -> MockWebhookSender {
    let mut sender = MockWebhookSender::new();
    sender.expect_check_destination().returning(|_| Ok(()));
    let attempts = Arc::new(Mutex::new(BTreeMap::<u64, u32>::new()));
    sender.expect_send().returning(move |request| {
        let position = position_of(&request);
        let attempt = {
            let mut attempts = attempts.lock();
            let n = attempts.entry(position).or_default();
            *n += 1;
            *n
        };
        received
            .0
            .lock()
            .push((position, attempt, request, Instant::now()));
        script(position, attempt)
    });
    sender
}

fn always_ok() -> Script {
    Arc::new(|_, _| Ok(200))
}

fn quick() -> WebhookConfig {
    WebhookConfig {
        max_attempts: 5,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        lease: Duration::from_millis(400),
        rescan_interval: Duration::from_millis(50),
        node: None,
    }
}

/// Audit records written, in order.
fn audit_log(records: Arc<Mutex<Vec<AuditRecord>>>) -> MockAuditLog {
    let mut audit = MockAuditLog::new();
    audit.expect_record().returning(move |record| {
        records.lock().push(record);
        Ok(())
    });
    audit.expect_query().returning(|_| Ok(Vec::new()));
    audit
}

struct World {
    log: Arc<SharedLog>,
    state: Arc<MemoryStateStore>,
    received: Arc<Received>,
    audit: Arc<Mutex<Vec<AuditRecord>>>,
    webhooks: Webhooks,
}

/// A tenant gate switched by the test.
#[derive(Default)]
struct TenantSwitch {
    inactive: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl crate::quota::TenantGate for TenantSwitch {
    async fn check_active(&self, _: &allsource_domain::TenantId) -> Result<(), GateError> {
        if self.inactive.load(std::sync::atomic::Ordering::Acquire) {
            Err(GateError::TenantInactive("deactivated".into()))
        } else {
            Ok(())
        }
    }
}

fn node(
    log: &Arc<SharedLog>,
    state: &Arc<MemoryStateStore>,
    sender: MockWebhookSender,
    quotas: Arc<dyn QuotaGate>,
    audit: Arc<Mutex<Vec<AuditRecord>>>,
    config: WebhookConfig,
) -> Webhooks {
    Webhooks::new(
        WebhookDeps {
            store: log.clone(),
            feed: log.feed(),
            state: state.clone(),
            sender: Arc::new(sender),
            encoder: Arc::new(TestEncoder),
            quotas,
            audit: Arc::new(audit_log(audit)),
            tenants: TENANTS.with(Arc::clone),
        },
        config,
    )
}

thread_local! {
    /// The tenant gate of the nodes a test builds on its thread (tests run on one thread each).
    static TENANTS: Arc<TenantSwitch> = Arc::new(TenantSwitch::default());
}

fn world_with(script: Script, quotas: Arc<dyn QuotaGate>, config: WebhookConfig) -> World {
    let log = SharedLog::new(64);
    let state = Arc::new(MemoryStateStore::new());
    let received = Arc::new(Received::default());
    let audit = Arc::new(Mutex::new(Vec::new()));
    let webhooks = node(
        &log,
        &state,
        sender(script, received.clone()),
        quotas,
        audit.clone(),
        config,
    );
    World {
        log,
        state,
        received,
        audit,
        webhooks,
    }
}

fn world(script: Script) -> World {
    world_with(script, Arc::new(Unlimited), quick())
}

fn input(v: Value) -> WebhookInput {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let list = |k: &str| {
        v.get(k).and_then(Value::as_array).map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_owned())
                .collect()
        })
    };
    WebhookInput {
        url: text("url"),
        event_types: list("event_types"),
        entity_ids: list("entity_ids"),
        secret: match v.get("secret") {
            None => SecretInput::Absent,
            Some(Value::Null) => SecretInput::Remove,
            Some(s) => SecretInput::Set(s.as_str().unwrap_or("").to_owned()),
        },
        description: text("description"),
        active: v.get("active").and_then(Value::as_bool),
    }
}

fn hook(types: &[&str]) -> WebhookInput {
    input(json!({"url": "https://hooks.example.com/in", "event_types": types}))
}

/// Waits until `done` holds, failing the test after 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn deliveries(w: &World, who: &str, id: Uuid) -> Vec<Delivery> {
    w.webhooks
        .deliveries(&caller(who), &id.to_string(), None)
        .await
        .unwrap()
        .deliveries
}

#[tokio::test]
async fn every_bad_field_is_named_and_nothing_is_stored_or_counted() {
    let mut quotas = MockQuotaGate::new();
    quotas.expect_consume().never();
    let w = world_with(always_ok(), Arc::new(quotas), quick());
    let cases = [
        (json!({"event_types": ["a"]}), vec!["url"]),
        (
            json!({"url": "ftp://example.com/", "event_types": ["a"]}),
            vec!["url"],
        ),
        (
            json!({"url": "not a url", "event_types": ["a"]}),
            vec!["url"],
        ),
        (json!({"url": "https://example.com/"}), vec!["event_types"]),
        (
            json!({"url": "https://example.com/", "event_types": ["ok", "bad type"]}),
            vec!["event_types[1]"],
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["a"], "entity_ids": ["ok", ""]}),
            vec!["entity_ids[1]"],
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["a"], "secret": "short"}),
            vec!["secret"],
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["a"],
                   "description": "d".repeat(MAX_DESCRIPTION_LEN + 1)}),
            vec!["description"],
        ),
        (
            json!({"url": "javascript:x", "event_types": ["a.**"], "secret": "s"}),
            vec!["url", "event_types[0]", "secret"],
        ),
    ];
    for (body, fields) in cases {
        match w
            .webhooks
            .create(&caller("acme"), input(body.clone()))
            .await
        {
            Err(WebhookError::Invalid(errors)) => {
                let got: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(got, fields, "{body}");
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let mut filters = hook(&[]);
    filters.event_types = Some((0..=TypeFilters::MAX).map(|i| format!("t{i}")).collect());
    assert!(matches!(
        w.webhooks.create(&caller("acme"), filters).await,
        Err(WebhookError::Invalid(e)) if e[0].field == "event_types"
    ));
    let too_many: Vec<String> = (0..=MAX_ENTITY_IDS).map(|i| format!("e{i}")).collect();
    let mut many = hook(&["a"]);
    many.entity_ids = Some(too_many);
    assert!(matches!(
        w.webhooks.create(&caller("acme"), many).await,
        Err(WebhookError::Invalid(e)) if e[0].field == "entity_ids"
    ));
    assert_eq!(w.state.puts(), 0, "nothing stored");
    assert!(w.audit.lock().is_empty(), "invalid input is not audited");
}

#[tokio::test]
async fn a_refused_destination_names_its_rule_and_nothing_is_stored() {
    let log = SharedLog::new(8);
    let state = Arc::new(MemoryStateStore::new());
    let mut sender = MockWebhookSender::new();
    sender.expect_check_destination().returning(|url| {
        Err(DestinationError::Refused(Refusal {
            host: url.host_str().to_owned(),
            address: "10.0.0.7".parse().unwrap(),
            rule: AddressRule::Private,
        }))
    });
    sender.expect_send().never();
    let mut quotas = MockQuotaGate::new();
    quotas.expect_consume().never();
    let audit = Arc::new(Mutex::new(Vec::new()));
    let webhooks = node(
        &log,
        &state,
        sender,
        Arc::new(quotas),
        audit.clone(),
        quick(),
    );
    match webhooks
        .create(
            &caller("acme"),
            input(json!({"url": "http://internal.example/", "event_types": []})),
        )
        .await
    {
        Err(WebhookError::Refused(refusal)) => {
            assert_eq!(refusal.rule, AddressRule::Private);
            assert!(
                refusal
                    .to_string()
                    .contains("'internal.example' resolves to 10.0.0.7")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.puts(), 0);
    assert!(audit.lock().is_empty());
}

#[tokio::test]
async fn an_unresolvable_host_is_a_400_on_the_url() {
    let log = SharedLog::new(8);
    let state = Arc::new(MemoryStateStore::new());
    let mut sender = MockWebhookSender::new();
    sender
        .expect_check_destination()
        .returning(|_| Err(DestinationError::Unresolvable("no such host".into())));
    let webhooks = node(
        &log,
        &state,
        sender,
        Arc::new(Unlimited),
        Arc::default(),
        quick(),
    );
    match webhooks.create(&caller("acme"), hook(&["a"])).await {
        Err(WebhookError::Invalid(errors)) => {
            assert_eq!(errors[0].field, "url");
            assert!(errors[0].message.contains("does not resolve"), "{errors:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_secret_is_write_only_kept_by_an_update_without_it_and_removed_by_null() {
    let w = world(always_ok());
    let mut body = hook(&["order.*"]);
    body.secret = SecretInput::Set("a-very-long-secret-value".into());
    let created = w.webhooks.create(&caller("acme"), body).await.unwrap();
    assert!(created.has_secret);
    assert!(!format!("{created:?}").contains("a-very-long-secret-value"));
    let id = created.id.to_string();
    let listed = w.webhooks.list(&caller("acme")).await.unwrap();
    assert_eq!(listed, vec![created.clone()]);

    let mut without = hook(&["order.placed"]);
    without.description = Some("placed only".into());
    let kept = w
        .webhooks
        .update(&caller("acme"), &id, without)
        .await
        .unwrap();
    assert!(kept.has_secret, "absent keeps the secret");
    assert_eq!(kept.event_types, ["order.placed"]);
    assert_eq!(kept.created_at, created.created_at);
    assert!(kept.updated_at >= created.updated_at);
    let mut removing = hook(&["order.placed"]);
    removing.secret = SecretInput::Remove;
    let removed = w
        .webhooks
        .update(&caller("acme"), &id, removing)
        .await
        .unwrap();
    assert!(!removed.has_secret);
    assert_eq!(removed.description, None, "a PUT replaces every member");
}

#[tokio::test]
async fn another_tenant_cannot_see_change_or_delete_a_webhook() {
    let w = world(always_ok());
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    let id = created.id.to_string();
    let b = caller("globex");
    assert!(w.webhooks.list(&b).await.unwrap().is_empty());
    assert!(matches!(
        w.webhooks.get(&b, &id).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        w.webhooks.update(&b, &id, hook(&["x"])).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        w.webhooks.delete(&b, &id).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        w.webhooks.deliveries(&b, &id, None).await,
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        w.webhooks.get(&b, "not-a-uuid").await,
        Err(WebhookError::Invalid(e)) if e[0].field == "id"
    ));
    assert_eq!(w.webhooks.get(&caller("acme"), &id).await.unwrap(), created);
}

#[tokio::test]
async fn the_webhook_quota_is_taken_on_create_and_given_back_on_delete() {
    let mut quotas = MockQuotaGate::new();
    let mut seq = mockall::Sequence::new();
    quotas
        .expect_consume()
        .withf(|t, kind, n| t.as_str() == "acme" && *kind == QuotaKind::Webhooks && *n == 1)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    quotas
        .expect_consume()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| {
            Err(GateError::QuotaExceeded(QuotaExceeded {
                quota: "max_webhooks".into(),
                limit: 1,
                used: 1,
                retry_after_secs: 0,
            }))
        });
    quotas
        .expect_release()
        .withf(|t, kind, n| t.as_str() == "acme" && *kind == QuotaKind::Webhooks && *n == 1)
        .times(1)
        .returning(|_, _, _| ());
    let w = world_with(always_ok(), Arc::new(quotas), quick());
    let first = w
        .webhooks
        .create(&caller("acme"), hook(&["a"]))
        .await
        .unwrap();
    assert!(matches!(
        w.webhooks.create(&caller("acme"), hook(&["a"])).await,
        Err(WebhookError::Gate(GateError::QuotaExceeded(_)))
    ));
    assert_eq!(w.webhooks.list(&caller("acme")).await.unwrap().len(), 1);
    w.webhooks
        .delete(&caller("acme"), &first.id.to_string())
        .await
        .unwrap();
    assert!(w.webhooks.list(&caller("acme")).await.unwrap().is_empty());
}

#[tokio::test]
async fn create_update_and_delete_are_audited_without_the_secret_or_the_full_url() {
    let w = world(always_ok());
    let mut body = input(json!({"url": "https://hooks.example.com/T000/B000/XXXX",
                                "event_types": ["a"], "secret": "a-very-long-secret-value"}));
    body.active = Some(false);
    let created = w.webhooks.create(&caller("acme"), body).await.unwrap();
    let id = created.id.to_string();
    w.webhooks
        .update(&caller("acme"), &id, hook(&["b"]))
        .await
        .unwrap();
    w.webhooks.delete(&caller("acme"), &id).await.unwrap();
    let records = w.audit.lock().clone();
    let actions: Vec<_> = records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["webhook.create", "webhook.update", "webhook.delete"]
    );
    for record in &records {
        assert_eq!(record.tenant_id, "acme");
        assert_eq!(record.resource.as_deref(), Some(id.as_str()));
        let text = record.details.to_string();
        assert!(!text.contains("a-very-long-secret-value"), "{text}");
        assert!(!text.contains("XXXX"), "{text}");
        assert_eq!(record.details["host"], "hooks.example.com");
    }
    assert_eq!(records[0].details["has_secret"], true);
}

#[tokio::test]
async fn events_after_creation_are_delivered_in_order_signed_fields_and_all() {
    let w = world(always_ok());
    w.log.append("acme", &[("o1", "order.placed")]);
    w.webhooks.start();
    let created = w
        .webhooks
        .create(
            &caller("acme"),
            input(
                json!({"url": "https://hooks.example.com/in", "event_types": ["order.*"],
                         "secret": "a-very-long-secret-value"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(created.cursor_position, 1, "starts at the head");
    let appended: Vec<Arc<Event>> = (0..5)
        .flat_map(|i| {
            w.log.append(
                "acme",
                &[
                    ("o1", "order.paid"),
                    ("o2", if i % 2 == 0 { "x" } else { "order" }),
                ],
            )
        })
        .collect();
    let wanted: Vec<&Arc<Event>> = appended
        .iter()
        .filter(|e| e.event_type.as_str().starts_with("order"))
        .collect();
    eventually("every matching event delivered", || {
        w.received.len() == wanted.len()
    })
    .await;
    let expected: Vec<u64> = wanted.iter().map(|e| e.position.get()).collect();
    assert_eq!(w.received.positions(), expected);
    for (request, event) in w.received.requests().iter().zip(&wanted) {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let delivery = delivery_id(created.id, event.id.as_uuid()).to_string();
        assert_eq!(body["webhook_id"], created.id.to_string());
        assert_eq!(body["delivery_id"], delivery);
        assert_eq!(request.delivery_id, delivery);
        assert_eq!(request.webhook_id, created.id.to_string());
        assert_eq!(request.event_type, event.event_type.as_str());
        assert_eq!(body["event"]["id"], event.id.as_uuid().to_string());
        assert_eq!(body["event"]["tenant_id"], "acme");
        assert!(body["delivered_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            request.secret.as_ref().map(Secret::expose),
            Some("a-very-long-secret-value")
        );
        assert_eq!(request.url.as_str(), "https://hooks.example.com/in");
    }
    let log = deliveries(&w, "acme", created.id).await;
    assert_eq!(log.len(), wanted.len());
    assert!(
        log.windows(2).all(|p| p[0].position > p[1].position),
        "newest first"
    );
    assert!(log.iter().all(|d| d.status == DeliveryStatus::Delivered
        && d.attempts == 1
        && d.last_status_code == Some(200)
        && d.completed_at.is_some()));
    cursor_reaches(&w, created.id, *expected.last().unwrap()).await;
    w.webhooks.stop().await;
}

/// The stored cursor position of a webhook of `acme`.
async fn cursor_of(w: &World, id: Uuid) -> u64 {
    w.state
        .get(&tenant("acme"), records::CURSORS, &id.to_string())
        .await
        .unwrap()
        .and_then(|e| records::Cursor::from_json(&e.value).ok())
        .map_or(0, |c| c.position)
}

/// Waits until the cursor of a webhook of `acme` is at `position`.
async fn cursor_reaches(w: &World, id: Uuid, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cursor_of(w, id).await != position {
        assert!(
            Instant::now() < deadline,
            "the cursor never reached {position}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_failing_event_is_retried_with_growing_waits_and_holds_back_the_next_one() {
    // The first event fails twice (500, then no answer), then succeeds.
    let script: Script = Arc::new(|position, attempt| match (position, attempt) {
        (1, 1) => Ok(500),
        (1, 2) => Err(SendError::Timeout(10)),
        _ => Ok(204),
    });
    let w = world(script);
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    w.log.append("acme", &[("e", "a"), ("e", "b")]);
    eventually("both delivered", || w.received.len() == 4).await;
    assert_eq!(
        w.received.positions(),
        [1, 1, 1, 2],
        "in order, retries first"
    );
    let times = w.received.times_of(1);
    let (first_wait, second_wait) = (times[1] - times[0], times[2] - times[1]);
    assert!(first_wait >= Duration::from_millis(20), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(40), "{second_wait:?}");
    assert!(w.received.times_of(2)[0] > times[2]);
    let log = deliveries(&w, "acme", created.id).await;
    assert_eq!(log[1].position, 1);
    assert_eq!(log[1].attempts, 3);
    assert_eq!(log[1].status, DeliveryStatus::Delivered);
    assert_eq!(log[1].last_status_code, Some(204));
    let spent = log[1].last_attempt_at - log[1].first_attempt_at;
    assert!(
        spent >= chrono::Duration::milliseconds(60),
        "first and last attempt are 20 + 40 ms apart at least: {spent}"
    );
    assert_eq!(log[0].attempts, 1);
    w.webhooks.stop().await;
}

#[tokio::test]
async fn an_event_failing_every_attempt_is_marked_failed_and_delivery_goes_on() {
    let script: Script = Arc::new(|position, _| {
        if position == 1 {
            Err(SendError::Failed("connection refused".into()))
        } else {
            Ok(200)
        }
    });
    let w = world(script);
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    w.log.append("acme", &[("e", "a")]);
    w.log.append("acme", &[("e", "b")]);
    eventually("five attempts, then the next event", || {
        w.received.len() == 6
    })
    .await;
    assert_eq!(w.received.positions(), [1, 1, 1, 1, 1, 2]);
    let log = deliveries(&w, "acme", created.id).await;
    let failed = &log[1];
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.attempts, 5);
    assert_eq!(failed.last_status_code, None);
    assert_eq!(failed.last_error.as_deref(), Some("connection refused"));
    assert!(failed.next_attempt_at.is_none() && failed.completed_at.is_some());
    assert_eq!(log[0].status, DeliveryStatus::Delivered);
    w.webhooks.stop().await;
}

#[tokio::test]
async fn the_backoff_doubles_and_stops_at_its_cap() {
    let config = WebhookConfig {
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(10),
        ..WebhookConfig::default()
    };
    let waits: Vec<u64> = (1..=6).map(|n| config.backoff(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    assert_eq!(config.backoff(u32::MAX), Duration::from_secs(10));
}

#[tokio::test]
async fn only_its_types_and_entities_are_delivered_and_never_another_tenants_events() {
    let w = world(always_ok());
    w.webhooks.start();
    let two = w
        .webhooks
        .create(
            &caller("acme"),
            input(
                json!({"url": "https://a.example.com/", "event_types": ["order.*"],
                         "entity_ids": ["o1", "o3"]}),
            ),
        )
        .await
        .unwrap();
    let one = w
        .webhooks
        .create(
            &caller("acme"),
            input(
                json!({"url": "https://b.example.com/", "event_types": ["*"],
                         "entity_ids": ["o2"]}),
            ),
        )
        .await
        .unwrap();
    w.log.append("globex", &[("o1", "order.placed")]);
    w.log.append(
        "acme",
        &[
            ("o1", "order.placed"),
            ("o2", "order.placed"),
            ("o3", "customer.created"),
            ("o3", "order.paid"),
        ],
    );
    w.log.append("globex", &[("o2", "order.placed")]);
    w.log.append("acme", &[("o2", "anything")]);
    eventually("four deliveries", || w.received.len() == 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let requests = w.received.requests();
    let to = |host: &str| -> Vec<u64> {
        requests
            .iter()
            .filter(|r| r.url.host_str() == host)
            .map(position_of)
            .collect()
    };
    assert_eq!(to("a.example.com"), [2, 5]);
    assert_eq!(to("b.example.com"), [3, 7]);
    assert_eq!(requests.len(), 4, "nothing else, nothing of globex");
    for request in &requests {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["event"]["tenant_id"], "acme");
    }
    assert_eq!(deliveries(&w, "acme", two.id).await.len(), 2);
    assert_eq!(deliveries(&w, "acme", one.id).await.len(), 2);
    w.webhooks.stop().await;
}

#[tokio::test]
async fn an_inactive_webhook_waits_and_resumes_after_its_cursor_when_activated() {
    let w = world(always_ok());
    w.webhooks.start();
    let mut paused = hook(&["*"]);
    paused.active = Some(false);
    let created = w.webhooks.create(&caller("acme"), paused).await.unwrap();
    let id = created.id.to_string();
    w.log.append("acme", &[("e", "a"), ("e", "b")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.received.len(), 0);
    assert!(w.webhooks.running().await.is_empty());
    w.webhooks
        .update(&caller("acme"), &id, hook(&["*"]))
        .await
        .unwrap();
    eventually("the paused events", || w.received.len() == 2).await;
    assert_eq!(w.received.positions(), [1, 2]);
    w.webhooks.stop().await;
}

#[tokio::test]
async fn a_deactivated_tenants_webhooks_wait_and_deliver_everything_once_it_is_active() {
    let w = world(always_ok());
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    w.log.append("acme", &[("e", "a")]);
    eventually("the first event", || w.received.len() == 1).await;
    TENANTS.with(|t| t.inactive.store(true, std::sync::atomic::Ordering::Release));
    w.log.append("acme", &[("e", "b"), ("e", "c")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        w.received.len(),
        1,
        "nothing goes out while the tenant is deactivated"
    );
    TENANTS.with(|t| {
        t.inactive
            .store(false, std::sync::atomic::Ordering::Release)
    });
    eventually("the waiting events", || w.received.len() == 3).await;
    assert_eq!(w.received.positions(), [1, 2, 3]);
    cursor_reaches(&w, created.id, 3).await;
    w.webhooks.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_after_the_cursor_and_loses_nothing() {
    let w = world(always_ok());
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    w.log.append("acme", &[("e", "a"), ("e", "b")]);
    eventually("first two", || w.received.len() == 2).await;
    cursor_reaches(&w, created.id, 2).await;
    w.webhooks.stop().await;
    // Appended while no node delivers.
    w.log.append("acme", &[("e", "c"), ("e", "d")]);
    let received = Arc::new(Received::default());
    let again = node(
        &w.log,
        &w.state,
        sender(always_ok(), received.clone()),
        Arc::new(Unlimited),
        Arc::default(),
        quick(),
    );
    again.start();
    eventually("the rest after the restart", || received.len() == 2).await;
    assert_eq!(received.positions(), [3, 4], "nothing twice, nothing lost");
    assert_eq!(
        received.requests()[0].delivery_id,
        delivery_id(created.id, w.log.events()[2].id.as_uuid()).to_string()
    );
    again.stop().await;
}

#[tokio::test]
async fn after_a_crash_mid_retry_the_attempts_go_on_counting() {
    // Node A fails event 1 twice and dies (its task is aborted, its lease left to expire).
    let w = world(Arc::new(|_, _| Ok(503)));
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    w.log.append("acme", &[("e", "a")]);
    eventually("two attempts", || w.received.len() >= 2).await;
    // A crash: the workers vanish without giving their lease back.
    w.webhooks.workers.crash().await;
    let attempts_before = deliveries(&w, "acme", created.id).await[0].attempts;
    assert!(attempts_before >= 2);
    let received = Arc::new(Received::default());
    let b = node(
        &w.log,
        &w.state,
        sender(always_ok(), received.clone()),
        Arc::new(Unlimited),
        Arc::default(),
        quick(),
    );
    b.start();
    eventually("taken over after the lease ran out", || received.len() == 1).await;
    let log = deliveries(&w, "acme", created.id).await;
    assert_eq!(log[0].status, DeliveryStatus::Delivered);
    assert_eq!(log[0].attempts, attempts_before + 1, "counting went on");
    b.stop().await;
}

#[tokio::test]
async fn a_fixed_node_name_takes_its_crashed_predecessors_lease_at_once() {
    let long_lease = WebhookConfig {
        lease: Duration::from_secs(60),
        node: Some("local".into()),
        ..quick()
    };
    let w = world_with(always_ok(), Arc::new(Unlimited), long_lease.clone());
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    w.log.append("acme", &[("e", "a")]);
    eventually("delivered", || w.received.len() == 1).await;
    cursor_reaches(&w, created.id, 1).await;
    w.webhooks.workers.crash().await;
    w.log.append("acme", &[("e", "b")]);
    let received = Arc::new(Received::default());
    let restarted = node(
        &w.log,
        &w.state,
        sender(always_ok(), received.clone()),
        Arc::new(Unlimited),
        Arc::default(),
        long_lease,
    );
    restarted.start();
    // Well within the 60 s lease its predecessor left behind.
    eventually("delivered after the restart", || received.len() == 1).await;
    assert_eq!(received.positions(), [2]);
    restarted.stop().await;
}

#[tokio::test]
async fn two_nodes_deliver_each_event_once_and_one_takes_over_when_the_other_stops() {
    let log = SharedLog::new(64);
    let state = Arc::new(MemoryStateStore::new());
    let (ra, rb) = (Arc::new(Received::default()), Arc::new(Received::default()));
    let a = node(
        &log,
        &state,
        sender(always_ok(), ra.clone()),
        Arc::new(Unlimited),
        Arc::default(),
        quick(),
    );
    let b = node(
        &log,
        &state,
        sender(always_ok(), rb.clone()),
        Arc::new(Unlimited),
        Arc::default(),
        quick(),
    );
    a.start();
    let created = a.create(&caller("acme"), hook(&["*"])).await.unwrap();
    b.start();
    // B learns of the webhook by its rescan, and runs a worker that waits for the lease.
    let wanted = (tenant("acme"), created.id);
    let mut b_running = false;
    for _ in 0..200 {
        if b.running().await.contains(&wanted) {
            b_running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b_running, "node B runs a worker for the webhook");
    for _ in 0..10 {
        log.append("acme", &[("e", "t")]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("ten deliveries", || ra.len() + rb.len() == 10).await;
    // Well past a lease: one holder all along, and nobody delivered anything twice.
    let mut holders = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let cursor = state
            .get(&tenant("acme"), records::CURSORS, &created.id.to_string())
            .await
            .unwrap()
            .and_then(|e| records::Cursor::from_json(&e.value).ok())
            .unwrap();
        holders.insert(cursor.holder);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(holders.len(), 1, "the lease changed hands: {holders:?}");
    assert_eq!(
        ra.len() + rb.len(),
        10,
        "a: {:?}, b: {:?}",
        ra.positions(),
        rb.positions()
    );
    let (holder, other) = if ra.len() == 10 { (&a, &rb) } else { (&b, &ra) };
    assert_eq!(other.len(), 0, "one node delivered everything");
    holder.stop().await;
    for _ in 0..5 {
        log.append("acme", &[("e", "t")]);
    }
    eventually("the other node goes on", || ra.len() + rb.len() == 15).await;
    let mut all = ra.positions();
    all.extend(rb.positions());
    all.sort_unstable();
    assert_eq!(all, (1..=15).collect::<Vec<_>>());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_delivery_log_keeps_the_newest_hundred() {
    let w = world(always_ok());
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    for _ in 0..(DELIVERIES_KEPT + 5) {
        w.log.append("acme", &[("e", "t")]);
    }
    eventually("all delivered", || w.received.len() == DELIVERIES_KEPT + 5).await;
    eventually("pruned", || {
        w.state.keys(&tenant("acme"), records::DELIVERIES).len() == DELIVERIES_KEPT
    })
    .await;
    let log = deliveries(&w, "acme", created.id).await;
    assert_eq!(log.len(), DELIVERIES_KEPT);
    assert_eq!(log[0].position, (DELIVERIES_KEPT + 5) as u64);
    assert_eq!(log[DELIVERIES_KEPT - 1].position, 6);
    let three = w
        .webhooks
        .deliveries(&caller("acme"), &created.id.to_string(), Some("3"))
        .await
        .unwrap();
    assert_eq!(
        three
            .deliveries
            .iter()
            .map(|d| d.position)
            .collect::<Vec<_>>(),
        [105, 104, 103]
    );
    for bad in ["0", "101", "x", "-1"] {
        assert!(matches!(
            w.webhooks
                .deliveries(&caller("acme"), &created.id.to_string(), Some(bad))
                .await,
            Err(WebhookError::Invalid(e)) if e[0].field == "limit"
        ));
    }
    w.webhooks.stop().await;
}

#[tokio::test]
async fn a_deleted_webhook_stops_and_takes_its_cursor_and_deliveries_along() {
    let w = world(always_ok());
    w.webhooks.start();
    let created = w
        .webhooks
        .create(&caller("acme"), hook(&["*"]))
        .await
        .unwrap();
    w.log.append("acme", &[("e", "t")]);
    eventually("delivered", || w.received.len() == 1).await;
    w.webhooks
        .delete(&caller("acme"), &created.id.to_string())
        .await
        .unwrap();
    assert!(w.webhooks.running().await.is_empty());
    w.log.append("acme", &[("e", "t")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.received.len(), 1);
    for namespace in [records::DEFINITIONS, records::CURSORS, records::DELIVERIES] {
        assert!(
            w.state.keys(&tenant("acme"), namespace).is_empty(),
            "{namespace}"
        );
    }
    w.webhooks.stop().await;
}

//! Registry and enforcement tests: the state store and the validator are mocks.

use std::time::Duration;

use super::*;
use crate::Caller;
use crate::ports::{CompiledSchema, StateError};
use crate::ports::{
    MockCompiledSchema, MockSchemaValidator, MockStateStore, StateEntry, clock::MockClock,
};
use crate::use_cases::append::{AppendError, AppendGuard, GuardedEvent};
use allsource_domain::ProposedEvent;
use allsource_domain::{EntityId, EventId, EventType, ExpectedVersion};
use serde_json::json;
use serde_json::value::RawValue;

fn caller() -> Caller {
    Caller::default_tenant()
}

fn clock() -> Arc<MockClock> {
    let mut clock = MockClock::new();
    clock.expect_now().returning(Utc::now);
    Arc::new(clock)
}

/// A compiled schema that wants `amount` to be an integer.
fn amount_must_be_integer() -> Arc<dyn CompiledSchema> {
    let mut compiled = MockCompiledSchema::new();
    compiled.expect_validate().returning(|instance| {
        if instance.get("amount").is_some_and(Value::is_i64) {
            vec![]
        } else {
            vec![SchemaIssue::new("/amount", "must be an integer")]
        }
    });
    Arc::new(compiled)
}

/// A validator that compiles everything to `amount_must_be_integer`.
fn accepting_validator() -> MockSchemaValidator {
    let mut validator = MockSchemaValidator::new();
    validator
        .expect_compile()
        .returning(|_| Ok(amount_must_be_integer()));
    validator
}

fn registry(state: MockStateStore, validator: MockSchemaValidator) -> SchemaRegistry {
    SchemaRegistry::new(
        Arc::new(state),
        Arc::new(validator),
        clock(),
        SchemaSettings::default(),
    )
}

fn stored(mode: &str, enforce: bool, schemas: &[Value]) -> Value {
    json!({
        "subject": "order.placed",
        "compatibility": mode,
        "enforce": enforce,
        "versions": schemas.iter().enumerate().map(|(i, s)| json!({
            "version": i + 1, "schema": s, "registered_at": "2026-11-22T10:15:00Z"
        })).collect::<Vec<_>>()
    })
}

fn entry(value: Value, version: u64) -> StateEntry {
    StateEntry { value, version }
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn register_input(schema: Value) -> RegisterSchemaInput {
    RegisterSchemaInput {
        subject: Some("order.placed".into()),
        schema: Some(schema),
        ..Default::default()
    }
}

fn fields(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|e| e.field.as_str()).collect()
}

#[tokio::test]
async fn registers_version_one_with_the_defaults() {
    let mut state = MockStateStore::new();
    state.expect_get().returning(|_, _, _| Ok(None));
    state
        .expect_put()
        .withf(|tenant, ns, key, value, expected| {
            tenant.as_str() == "default"
                && ns == SCHEMA_NAMESPACE
                && key == "order.placed"
                && *expected == Some(0)
                && value["compatibility"] == "BACKWARD"
                && value["enforce"] == true
                && value["versions"][0]["version"] == 1
                && value["versions"][0]["schema"]["type"] == "object"
        })
        .times(1)
        .returning(|_, _, _, _, _| Ok(1));
    let registered = registry(state, accepting_validator())
        .register(&caller(), register_input(json!({"type": "object"})))
        .await
        .unwrap();
    assert!(registered.created);
    assert_eq!(registered.schema.version, 1);
    assert_eq!(registered.schema.subject.as_str(), "order.placed");
    assert_eq!(registered.schema.compatibility, CompatibilityMode::Backward);
    assert!(registered.schema.enforce);
}

#[tokio::test]
async fn event_type_names_the_subject_and_settings_can_be_given() {
    let mut state = MockStateStore::new();
    state.expect_get().returning(|_, _, _| Ok(None));
    state
        .expect_put()
        .withf(|_, _, key, value, _| {
            key == "user.created" && value["compatibility"] == "FULL" && value["enforce"] == false
        })
        .returning(|_, _, _, _, _| Ok(1));
    let registered = registry(state, accepting_validator())
        .register(
            &caller(),
            RegisterSchemaInput {
                event_type: Some("user.created".into()),
                schema: Some(json!(true)),
                compatibility: Some("full".into()),
                enforce: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(registered.schema.subject.as_str(), "user.created");
    assert_eq!(registered.schema.compatibility, CompatibilityMode::Full);
    assert!(!registered.schema.enforce);
}

#[tokio::test]
async fn bad_input_is_refused_before_any_storage() {
    let uc = || registry(MockStateStore::new(), MockSchemaValidator::new());
    let cases = [
        (RegisterSchemaInput::default(), vec!["subject", "schema"]),
        (
            RegisterSchemaInput {
                subject: Some("a..b".into()),
                schema: Some(json!(1)),
                compatibility: Some("SOMETIMES".into()),
                ..Default::default()
            },
            vec!["subject", "compatibility", "schema"],
        ),
        (
            RegisterSchemaInput {
                subject: Some("a".into()),
                event_type: Some("b".into()),
                schema: Some(json!({})),
                ..Default::default()
            },
            vec!["event_type"],
        ),
        (
            RegisterSchemaInput {
                subject: Some("validate".into()),
                schema: Some(json!({})),
                ..Default::default()
            },
            vec!["subject"],
        ),
        (
            register_input(
                json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}),
            ),
            vec!["schema/$schema"],
        ),
    ];
    for (input, expected) in cases {
        let Err(SchemaError::Invalid(errors)) = uc().register(&caller(), input).await else {
            panic!("expected invalid for {expected:?}");
        };
        assert_eq!(fields(&errors), expected);
    }
}

#[tokio::test]
async fn a_schema_that_does_not_compile_is_invalid_with_pointers() {
    let mut validator = MockSchemaValidator::new();
    validator.expect_compile().returning(|_| {
        Err(vec![SchemaIssue::new(
            "/properties/a/type",
            "\"strin\" is not valid",
        )])
    });
    let Err(SchemaError::Invalid(errors)) = registry(MockStateStore::new(), validator)
        .register(
            &caller(),
            register_input(json!({"properties": {"a": {"type": "strin"}}})),
        )
        .await
    else {
        panic!("expected invalid");
    };
    assert_eq!(fields(&errors), ["schema/properties/a/type"]);
}

#[tokio::test]
async fn a_schema_nested_deeper_than_a_payload_may_be_is_invalid_and_never_stored() {
    let mut deep = json!({"type": "object"});
    for _ in 0..allsource_domain::MAX_NESTING {
        deep = json!({ "properties": { "a": deep } });
    }
    let mut validator = MockSchemaValidator::new();
    validator.expect_compile().never();
    let mut state = MockStateStore::new();
    state.expect_put().never();
    let Err(SchemaError::Invalid(errors)) = registry(state, validator)
        .register(&caller(), register_input(deep))
        .await
    else {
        panic!("expected invalid");
    };
    assert_eq!(fields(&errors), ["schema"]);
}

#[tokio::test]
async fn re_registering_an_existing_schema_returns_its_version_and_writes_nothing() {
    let v1 = object(json!({"a": {"type": "string"}}), &["a"]);
    let v2 = object(
        json!({"a": {"type": "string"}, "b": {"type": "string"}}),
        &["a"],
    );
    let mut state = MockStateStore::new();
    let value = stored("BACKWARD", true, &[v1.clone(), v2]);
    state
        .expect_get()
        .returning(move |_, _, _| Ok(Some(entry(value.clone(), 2))));
    state.expect_put().never();
    let registered = registry(state, accepting_validator())
        .register(&caller(), register_input(v1))
        .await
        .unwrap();
    assert!(!registered.created);
    assert_eq!(registered.schema.version, 1);
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_and_not_written() {
    let v1 = object(json!({"a": {"type": "string"}}), &["a"]);
    let mut state = MockStateStore::new();
    let value = stored("BACKWARD", true, &[v1]);
    state
        .expect_get()
        .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
    state.expect_put().never();
    let new = object(
        json!({"a": {"type": "string"}, "b": {"type": "string"}}),
        &["a", "b"],
    );
    let err = registry(state, accepting_validator())
        .register(&caller(), register_input(new))
        .await
        .unwrap_err();
    let SchemaError::Incompatible { mode, errors, .. } = err else {
        panic!("expected incompatible, got {err:?}");
    };
    assert_eq!(mode, CompatibilityMode::Backward);
    assert_eq!(fields(&errors), ["schema/required"]);
    assert!(
        errors[0].message.contains("'b' is newly required"),
        "{errors:?}"
    );
    assert!(
        errors[0].message.contains("against version 1"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn every_previous_version_is_checked_not_only_the_latest() {
    // v2 was registered while the subject was NONE; the mode is BACKWARD again now.
    let v1 = object(json!({"a": {"type": "integer"}}), &[]);
    let v2 = object(json!({"a": {"type": "string"}}), &[]);
    let mut v3 = v2.clone();
    v3["description"] = json!("v2 with a description");
    let mut state = MockStateStore::new();
    let value = stored("BACKWARD", true, &[v1, v2]);
    state
        .expect_get()
        .returning(move |_, _, _| Ok(Some(entry(value.clone(), 2))));
    state.expect_put().never();
    let err = registry(state, accepting_validator())
        .register(&caller(), register_input(v3))
        .await
        .unwrap_err();
    let SchemaError::Incompatible { errors, .. } = err else {
        panic!("expected incompatible, got {err:?}");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains("against version 1"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn mode_none_accepts_any_change_as_the_next_version() {
    let mut state = MockStateStore::new();
    let value = stored("NONE", true, &[json!({"type": "string"})]);
    state
        .expect_get()
        .returning(move |_, _, _| Ok(Some(entry(value.clone(), 7))));
    state
        .expect_put()
        .withf(|_, _, _, value, expected| {
            *expected == Some(7) && value["versions"][1]["version"] == 2
        })
        .returning(|_, _, _, _, _| Ok(8));
    let registered = registry(state, accepting_validator())
        .register(&caller(), register_input(json!({"type": "integer"})))
        .await
        .unwrap();
    assert_eq!(registered.schema.version, 2);
}

#[tokio::test]
async fn settings_of_an_existing_subject_are_not_changed_by_a_registration() {
    let mut state = MockStateStore::new();
    let value = stored("BACKWARD", true, &[json!({"type": "string"})]);
    state
        .expect_get()
        .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
    state.expect_put().never();
    let mut input = register_input(json!({"type": "integer"}));
    input.compatibility = Some("NONE".into());
    let Err(SchemaError::Invalid(errors)) = registry(state, accepting_validator())
        .register(&caller(), input)
        .await
    else {
        panic!("expected invalid");
    };
    assert_eq!(fields(&errors), ["compatibility"]);
}

#[tokio::test]
async fn a_concurrent_registration_is_retried_against_the_new_state() {
    let mut state = MockStateStore::new();
    let mut seq = mockall::Sequence::new();
    state
        .expect_get()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(None));
    state
        .expect_put()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _, _| {
            Err(StateError::VersionConflict {
                expected: 0,
                current: 1,
            })
        });
    let value = stored("BACKWARD", true, &[json!({"type": "object"})]);
    state
        .expect_get()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
    state
        .expect_put()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|_, _, _, _, expected| *expected == Some(1))
        .returning(|_, _, _, _, _| Ok(2));
    let registered = registry(state, accepting_validator())
        .register(
            &caller(),
            register_input(json!({"type": "object", "title": "t"})),
        )
        .await
        .unwrap();
    assert_eq!(registered.schema.version, 2);
}

#[tokio::test]
async fn storage_failures_are_unavailable() {
    let mut state = MockStateStore::new();
    state
        .expect_get()
        .returning(|_, _, _| Err(StateError::Unavailable("down".into())));
    assert!(matches!(
        registry(state, accepting_validator())
            .register(&caller(), register_input(json!({})))
            .await,
        Err(SchemaError::Unavailable(_))
    ));
}

#[tokio::test]
async fn get_versions_and_list() {
    let v1 = json!({"type": "object"});
    let v2 = json!({"type": "object", "title": "two"});
    let value = stored("FORWARD", false, &[v1.clone(), v2.clone()]);
    let mut state = MockStateStore::new();
    let for_get = value.clone();
    state
        .expect_get()
        .returning(move |_, _, key| Ok((key == "order.placed").then(|| entry(for_get.clone(), 2))));
    state
        .expect_list()
        .returning(move |_, _, _, _, _| Ok(vec![("order.placed".into(), entry(value.clone(), 2))]));
    let uc = registry(state, MockSchemaValidator::new());
    let latest = uc.get(&caller(), "order.placed", None).await.unwrap();
    assert_eq!((latest.version, &latest.schema), (2, &v2));
    assert_eq!(latest.compatibility, CompatibilityMode::Forward);
    let first = uc.get(&caller(), "order.placed", Some("1")).await.unwrap();
    assert_eq!(first.schema, v1);
    assert!(matches!(
        uc.get(&caller(), "order.placed", Some("3")).await,
        Err(SchemaError::NotFound(_))
    ));
    assert!(matches!(
        uc.get(&caller(), "order.placed", Some("0")).await,
        Err(SchemaError::Invalid(_))
    ));
    assert!(matches!(
        uc.get(&caller(), "other", None).await,
        Err(SchemaError::NotFound(_))
    ));
    assert!(matches!(
        uc.get(&caller(), "a b", None).await,
        Err(SchemaError::Invalid(_))
    ));
    let (_, versions) = uc.versions(&caller(), "order.placed").await.unwrap();
    assert_eq!(versions, [1, 2]);
    let list = uc.list(&caller()).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].latest_version, list[0].versions), (2, 2));
    assert!(!list[0].enforce);
}

#[tokio::test]
async fn configure_changes_mode_and_enforcement() {
    let value = stored("BACKWARD", true, &[json!({})]);
    let mut state = MockStateStore::new();
    state
        .expect_get()
        .returning(move |_, _, key| Ok((key == "order.placed").then(|| entry(value.clone(), 3))));
    state
        .expect_put()
        .withf(|_, _, _, value, expected| {
            *expected == Some(3) && value["compatibility"] == "NONE" && value["enforce"] == false
        })
        .times(1)
        .returning(|_, _, _, _, _| Ok(4));
    let uc = registry(state, MockSchemaValidator::new());
    let config = uc
        .configure(
            &caller(),
            "order.placed",
            ConfigureSubjectInput {
                compatibility: Some("NONE".into()),
                enforce: Some(false),
            },
        )
        .await
        .unwrap();
    assert_eq!(config.compatibility, CompatibilityMode::None);
    assert!(!config.enforce);
    assert!(matches!(
        uc.configure(
            &caller(),
            "missing",
            ConfigureSubjectInput {
                compatibility: Some("FULL".into()),
                enforce: None
            }
        )
        .await,
        Err(SchemaError::NotFound(_))
    ));
    let Err(SchemaError::Invalid(errors)) = uc
        .configure(&caller(), "order.placed", ConfigureSubjectInput::default())
        .await
    else {
        panic!("expected invalid");
    };
    assert_eq!(fields(&errors), ["compatibility"]);
}

#[tokio::test]
async fn validate_reports_payload_errors_without_failing() {
    let value = stored("BACKWARD", false, &[json!({}), json!({"title": "2"})]);
    let mut state = MockStateStore::new();
    state
        .expect_get()
        .returning(move |_, _, key| Ok((key == "order.placed").then(|| entry(value.clone(), 2))));
    let uc = registry(state, accepting_validator());
    let input = |payload: Value, version: Option<u64>| ValidateInput {
        subject: Some("order.placed".into()),
        payload: Some(payload),
        version,
    };
    let report = uc
        .validate(&caller(), input(json!({"amount": "x"}), None))
        .await
        .unwrap();
    assert_eq!(report.version, 2);
    assert_eq!(fields(&report.errors), ["payload/amount"]);
    let report = uc
        .validate(&caller(), input(json!({"amount": 1}), Some(1)))
        .await
        .unwrap();
    assert!(report.errors.is_empty());
    assert_eq!(report.version, 1);
    assert!(matches!(
        uc.validate(&caller(), input(json!({}), Some(9))).await,
        Err(SchemaError::NotFound(_))
    ));
    let Err(SchemaError::Invalid(errors)) = uc
        .validate(
            &caller(),
            ValidateInput {
                version: Some(0),
                ..Default::default()
            },
        )
        .await
    else {
        panic!("expected invalid");
    };
    assert_eq!(fields(&errors), ["subject", "payload", "version"]);
}

fn event(event_type: &str, payload: &str) -> ProposedEvent {
    ProposedEvent {
        id: EventId::generate(),
        entity_id: EntityId::parse("order-1").unwrap(),
        event_type: EventType::parse(event_type).unwrap(),
        payload: RawValue::from_string(payload.to_owned()).unwrap(),
        metadata: None,
        expected_version: ExpectedVersion::Any,
    }
}

/// A state store listing one enforced and one unenforced subject, `times` times.
fn listing_state(times: usize) -> MockStateStore {
    let mut state = MockStateStore::new();
    state.expect_list().times(times).returning(|_, _, _, _, _| {
        let mut unenforced = stored("BACKWARD", false, &[json!({})]);
        unenforced["subject"] = json!("order.noted");
        Ok(vec![
            ("order.noted".into(), entry(unenforced, 1)),
            (
                "order.placed".into(),
                entry(stored("BACKWARD", true, &[json!({})]), 1),
            ),
        ])
    });
    state
}

#[tokio::test]
async fn the_guard_refuses_a_batch_naming_every_bad_payload() {
    let uc = registry(listing_state(1), accepting_validator());
    let events = [
        event("order.placed", r#"{"amount": 1}"#),
        event("order.placed", r#"{"amount": "1"}"#),
        event("order.noted", r#"{"amount": "not checked"}"#),
        event("order.other", r#"{}"#),
        event("order.placed", r#"{}"#),
    ];
    let err = uc
        .before_append(&caller(), &GuardedEvent::all(&events), true)
        .await
        .unwrap_err();
    let AppendError::SchemaViolation(errors) = err else {
        panic!("expected a schema violation, got {err:?}");
    };
    assert_eq!(
        fields(&errors),
        ["events[1].payload/amount", "events[4].payload/amount"]
    );
    // single events are named without the batch prefix; the cache answers (one list)
    let err = uc
        .before_append(
            &caller(),
            &GuardedEvent::all(&[event("order.placed", "{}")]),
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, AppendError::SchemaViolation(e) if e[0].field == "payload/amount"));
    assert!(
        uc.before_append(&caller(), &GuardedEvent::all(&events[..1]), true)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_huge_bad_batch_reports_a_bounded_number_of_errors() {
    let uc = registry(listing_state(1), accepting_validator());
    let events: Vec<_> = (0..MAX_APPEND_VIOLATIONS + 50)
        .map(|_| event("order.placed", "{}"))
        .collect();
    let Err(AppendError::SchemaViolation(errors)) = uc
        .before_append(&caller(), &GuardedEvent::all(&events), true)
        .await
    else {
        panic!("expected a schema violation");
    };
    assert_eq!(errors.len(), MAX_APPEND_VIOLATIONS);
}

#[tokio::test]
async fn a_tenant_without_schemas_is_loaded_once_and_passes() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .times(1)
        .returning(|_, _, _, _, _| Ok(vec![]));
    let uc = registry(state, MockSchemaValidator::new());
    for _ in 0..3 {
        uc.before_append(&caller(), &GuardedEvent::all(&[event("a", "1")]), false)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn registration_and_configuration_drop_the_cached_schemas() {
    let mut state = listing_state(3);
    let value = stored("BACKWARD", true, &[json!({})]);
    state
        .expect_get()
        .returning(move |_, _, _| Ok(Some(entry(value.clone(), 1))));
    state.expect_put().returning(|_, _, _, _, _| Ok(2));
    let uc = registry(state, accepting_validator());
    let events = [event("order.placed", r#"{"amount": 1}"#)];
    uc.before_append(&caller(), &GuardedEvent::all(&events), false)
        .await
        .unwrap();
    uc.register(&caller(), register_input(json!({"title": "v2"})))
        .await
        .unwrap();
    uc.before_append(&caller(), &GuardedEvent::all(&events), false)
        .await
        .unwrap();
    uc.configure(
        &caller(),
        "order.placed",
        ConfigureSubjectInput {
            compatibility: None,
            enforce: Some(true),
        },
    )
    .await
    .unwrap();
    uc.before_append(&caller(), &GuardedEvent::all(&events), false)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_cache_expires_after_its_ttl() {
    let uc = SchemaRegistry::new(
        Arc::new(listing_state(2)),
        Arc::new(accepting_validator()),
        clock(),
        SchemaSettings {
            cache_ttl: Duration::ZERO,
            ..SchemaSettings::default()
        },
    );
    let events = [event("order.placed", r#"{"amount": 1}"#)];
    uc.before_append(&caller(), &GuardedEvent::all(&events), false)
        .await
        .unwrap();
    uc.before_append(&caller(), &GuardedEvent::all(&events), false)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_guard_answers_unavailable_when_the_state_store_is() {
    let mut state = MockStateStore::new();
    state
        .expect_list()
        .returning(|_, _, _, _, _| Err(StateError::Unavailable("recovering".into())));
    let uc = registry(state, MockSchemaValidator::new());
    assert!(matches!(
        uc.before_append(&caller(), &GuardedEvent::all(&[event("a", "{}")]), false)
            .await,
        Err(AppendError::Unavailable(_))
    ));
}

/// A registry over an in-memory state store holding `subjects` (name, enforced, schema).
async fn registry_over(
    state: Arc<crate::testing::MemoryStateStore>,
    validator: MockSchemaValidator,
    ttl: Duration,
    subjects: &[(&str, bool)],
) -> SchemaRegistry {
    for (subject, enforce) in subjects {
        let mut value = stored("BACKWARD", *enforce, &[json!({})]);
        value["subject"] = json!(subject);
        state
            .put(
                &caller().tenant().clone(),
                SCHEMA_NAMESPACE,
                subject,
                value,
                None,
            )
            .await
            .unwrap();
    }
    SchemaRegistry::new(
        state,
        Arc::new(validator),
        clock(),
        SchemaSettings {
            cache_ttl: ttl,
            ..SchemaSettings::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_one_reload() {
    let state = Arc::new(crate::testing::MemoryStateStore::new());
    let uc = Arc::new(
        registry_over(
            state.clone(),
            accepting_validator(),
            Duration::from_secs(60),
            &[("order.placed", true)],
        )
        .await,
    );
    state.set_latency(Some(Duration::from_millis(50)));
    let appends: Vec<_> = (0..8)
        .map(|_| {
            let uc = uc.clone();
            tokio::spawn(async move {
                let events = [event("order.placed", r#"{"amount": 1}"#)];
                uc.before_append(&caller(), &GuardedEvent::all(&events), false)
                    .await
            })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    assert_eq!(state.lists(), 1, "one reload served every waiting append");
}

#[tokio::test]
async fn a_failed_reload_keeps_the_schemas_loaded_before() {
    let state = Arc::new(crate::testing::MemoryStateStore::new());
    let uc = registry_over(
        state.clone(),
        accepting_validator(),
        Duration::ZERO,
        &[("order.placed", true), ("order.noted", false)],
    )
    .await;
    let good = [event("order.noted", "{}")];
    let bad = [event("order.placed", r#"{"amount": "1"}"#)];
    uc.before_append(&caller(), &GuardedEvent::all(&good), false)
        .await
        .unwrap();
    state.set_unavailable(true);
    // Events of an unenforced type keep passing, and enforced ones are still checked.
    uc.before_append(&caller(), &GuardedEvent::all(&good), false)
        .await
        .unwrap();
    assert!(matches!(
        uc.before_append(&caller(), &GuardedEvent::all(&bad), false)
            .await,
        Err(AppendError::SchemaViolation(_))
    ));
    // A tenant never loaded on this node has nothing to fall back on.
    let other = Caller::new(allsource_domain::TenantId::parse("other").unwrap());
    assert!(matches!(
        uc.before_append(&other, &GuardedEvent::all(&good), false)
            .await,
        Err(AppendError::Unavailable(_))
    ));
    state.set_unavailable(false);
    uc.before_append(&other, &GuardedEvent::all(&good), false)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_subject_that_cannot_be_enforced_refuses_only_its_own_events() {
    let state = Arc::new(crate::testing::MemoryStateStore::new());
    let mut validator = MockSchemaValidator::new();
    validator
        .expect_compile()
        .returning(|_| Err(vec![SchemaIssue::new("", "no longer supported")]));
    let uc = registry_over(
        state.clone(),
        validator,
        Duration::from_secs(60),
        &[("order.placed", true)],
    )
    .await;
    // An unreadable record of another subject.
    state
        .put(
            &caller().tenant().clone(),
            SCHEMA_NAMESPACE,
            "order.garbled",
            json!({"not": "a subject"}),
            None,
        )
        .await
        .unwrap();
    let others = [event("order.noted", "{}")];
    uc.before_append(&caller(), &GuardedEvent::all(&others), true)
        .await
        .unwrap();
    for broken in ["order.placed", "order.garbled"] {
        let events = [event("order.noted", "{}"), event(broken, "{}")];
        assert!(matches!(
            uc.before_append(&caller(), &GuardedEvent::all(&events), true)
                .await,
            Err(AppendError::Internal(_))
        ));
    }
}

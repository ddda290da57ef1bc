//! The analytics use cases (`allsource_application::analytics`) run for real: the `Analytics`
//! routes over the DataFusion engine over a memory store, each checked against an answer
//! computed by hand on a small fixed data set (the arithmetic is in the comments).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use allsource_application::Caller;
use allsource_application::analytics::{
    Analytics, AnalyticsConfig, AnalyticsError, CorrelationInput, DslAnswer, FrequencyInput,
    SummaryInput,
};
use allsource_application::ports::{EventQuery, EventStore};
use allsource_domain::TenantId;
use allsource_domain::query_dsl::DslQuery;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

use super::tests::{ManualClock, proposed};
use super::{DataFusionEngine, SqlEngineConfig};
use crate::memory::MemoryStore;

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

struct Fixture {
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    analytics: Analytics,
    tenant: TenantId,
    caller: Caller,
}

fn fixture() -> Fixture {
    let clock = ManualClock::at(t("2030-01-01T00:00:00Z"));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let engine = DataFusionEngine::new(
        store.clone() as Arc<dyn EventStore>,
        None,
        SqlEngineConfig::default(),
    )
    .expect("engine");
    let analytics = Analytics::new(Arc::new(engine), clock.clone(), AnalyticsConfig::default());
    let tenant = TenantId::parse("acme").expect("tenant");
    Fixture {
        clock,
        store,
        analytics,
        caller: Caller::new(tenant.clone()),
        tenant,
    }
}

impl Fixture {
    /// Appends one event stamped at `time` (the store stamps with the clock).
    async fn at(&self, time: &str, entity: &str, event_type: &str, payload: Value) {
        self.at_tenant(&self.tenant.clone(), time, entity, event_type, payload)
            .await;
    }

    async fn at_tenant(
        &self,
        tenant: &TenantId,
        time: &str,
        entity: &str,
        event_type: &str,
        payload: Value,
    ) {
        self.clock.set(t(time));
        self.store
            .append(tenant, vec![proposed(entity, event_type, payload)])
            .await
            .expect("append");
        self.clock.set(t("2030-01-01T00:00:00Z"));
    }

    /// Appends events in time order: the store never stamps an event earlier than the one
    /// before it (it clamps to the last timestamp), so the fixtures must be chronological.
    async fn chronological(&self, mut events: Vec<(&str, &str, &str, Value)>) {
        events.sort_by_key(|e| t(e.0));
        for (time, entity, event_type, payload) in events {
            self.at(time, entity, event_type, payload).await;
        }
    }
}

/// Structural equality where numbers compare as f64 within 1e-9 (relative, at least 1e-9
/// absolute): for the answers holding square roots and divisions.
fn assert_close(actual: &Value, expected: &Value) {
    fn walk(a: &Value, e: &Value, at: &str) -> Result<(), String> {
        match (a, e) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                if (x - y).abs() <= 1e-9 * y.abs().max(1.0) {
                    Ok(())
                } else {
                    Err(format!("{at}: {x} != {y}"))
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return Err(format!("{at}: {} items != {} items", x.len(), y.len()));
                }
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    walk(x, y, &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            (Value::Object(x), Value::Object(y)) => {
                let (kx, ky): (Vec<_>, Vec<_>) = (x.keys().collect(), y.keys().collect());
                if kx != ky {
                    return Err(format!("{at}: keys {kx:?} != {ky:?}"));
                }
                for (k, v) in x {
                    walk(v, &y[k], &format!("{at}.{k}"))?;
                }
                Ok(())
            }
            _ if a == e => Ok(()),
            _ => Err(format!("{at}: {a} != {e}")),
        }
    }
    if let Err(why) = walk(actual, expected, "$") {
        panic!("{why}\nactual:   {actual:#}\nexpected: {expected:#}");
    }
}

fn invalid_fields(result: Result<Value, AnalyticsError>) -> Vec<String> {
    match result {
        Err(AnalyticsError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// frequency
// ---------------------------------------------------------------------------------------------

async fn february_fixture() -> Fixture {
    let f = fixture();
    f.at("2024-01-10T00:00:00Z", "e1", "a", json!({})).await; // before since
    f.at("2024-01-31T23:59:59Z", "e1", "a", json!({})).await; // Jan
    f.at("2024-02-01T00:00:00Z", "e2", "a", json!({})).await; // Feb
    f.at("2024-02-29T12:00:00Z", "e1", "b", json!({})).await; // Feb (leap day)
    f.at("2024-03-01T00:00:00Z", "e3", "a", json!({})).await; // Mar
    f.at("2024-04-01T00:00:00Z", "e3", "b", json!({})).await; // = first until: excluded there
    f
}

#[tokio::test]
async fn frequency_by_month_buckets_calendar_months_across_february() {
    let f = february_fixture().await;
    let answer = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                since: Some("2024-01-15T00:00:00Z".into()),
                until: Some("2024-04-01T00:00:00Z".into()),
                window: Some("month".into()),
                ..FrequencyInput::default()
            },
        )
        .await
        .expect("frequency");
    // [Jan 15, Apr 1): Jan 31 23:59:59 -> Jan (a); Feb 1 00:00 (a) and Feb 29 (b) -> Feb;
    // Mar 1 00:00 (a) -> Mar; Jan 10 is before since, Apr 1 is not < until. Total 1+2+1 = 4.
    assert_eq!(
        answer,
        json!({
            "buckets": [
                {"timestamp": "2024-01-01T00:00:00.000000Z", "count": 1, "event_types": {"a": 1}},
                {"timestamp": "2024-02-01T00:00:00.000000Z", "count": 2, "event_types": {"a": 1, "b": 1}},
                {"timestamp": "2024-03-01T00:00:00.000000Z", "count": 1, "event_types": {"a": 1}},
            ],
            "total_events": 4,
            "window": "month",
            "time_range": {"from": "2024-01-15T00:00:00.000000Z", "to": "2024-04-01T00:00:00.000000Z"},
        })
    );
}

#[tokio::test]
async fn frequency_by_month_includes_empty_months_and_filters() {
    let f = february_fixture().await;
    let answer = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                since: Some("2024-01-15T00:00:00Z".into()),
                until: Some("2024-07-01T00:00:00Z".into()),
                window: Some("month".into()),
                ..FrequencyInput::default()
            },
        )
        .await
        .expect("frequency");
    // Now Apr 1 (b) is inside; May and June have nothing but are listed. 1+2+1+1 = 5.
    assert_eq!(
        answer["buckets"],
        json!([
            {"timestamp": "2024-01-01T00:00:00.000000Z", "count": 1, "event_types": {"a": 1}},
            {"timestamp": "2024-02-01T00:00:00.000000Z", "count": 2, "event_types": {"a": 1, "b": 1}},
            {"timestamp": "2024-03-01T00:00:00.000000Z", "count": 1, "event_types": {"a": 1}},
            {"timestamp": "2024-04-01T00:00:00.000000Z", "count": 1, "event_types": {"b": 1}},
            {"timestamp": "2024-05-01T00:00:00.000000Z", "count": 0, "event_types": {}},
            {"timestamp": "2024-06-01T00:00:00.000000Z", "count": 0, "event_types": {}},
        ])
    );
    assert_eq!(answer["total_events"], json!(5));

    // Only entity e1: Jan 31 (a) and Feb 29 (b); Jan 10 is before since.
    let e1 = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                since: Some("2024-01-15T00:00:00Z".into()),
                until: Some("2024-04-01T00:00:00Z".into()),
                window: Some("month".into()),
                entity_id: Some("e1".into()),
                ..FrequencyInput::default()
            },
        )
        .await
        .expect("frequency");
    let counts: Vec<Value> = e1["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].clone())
        .collect();
    assert_eq!(counts, [json!(1), json!(1), json!(0)]);
    assert_eq!(e1["total_events"], json!(2));

    // Only type b: Feb 29 and Apr 1 (excluded by until): 0, 1, 0.
    let b = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                since: Some("2024-01-15T00:00:00Z".into()),
                until: Some("2024-04-01T00:00:00Z".into()),
                window: Some("month".into()),
                event_type: Some("b".into()),
                ..FrequencyInput::default()
            },
        )
        .await
        .expect("frequency");
    assert_eq!(b["buckets"][1]["event_types"], json!({"b": 1}));
    assert_eq!(b["buckets"][0]["count"], json!(0));
    assert_eq!(b["total_events"], json!(1));
}

#[tokio::test]
async fn frequency_by_day_over_an_empty_range_gives_zero_counts() {
    let f = february_fixture().await;
    let answer = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                since: Some("2024-06-01T00:00:00Z".into()),
                until: Some("2024-06-04T00:00:00Z".into()),
                window: Some("day".into()),
                ..FrequencyInput::default()
            },
        )
        .await
        .expect("frequency");
    // Three days, no events: three zero buckets.
    assert_eq!(
        answer,
        json!({
            "buckets": [
                {"timestamp": "2024-06-01T00:00:00.000000Z", "count": 0, "event_types": {}},
                {"timestamp": "2024-06-02T00:00:00.000000Z", "count": 0, "event_types": {}},
                {"timestamp": "2024-06-03T00:00:00.000000Z", "count": 0, "event_types": {}},
            ],
            "total_events": 0,
            "window": "day",
            "time_range": {"from": "2024-06-01T00:00:00.000000Z", "to": "2024-06-04T00:00:00.000000Z"},
        })
    );
}

#[tokio::test]
async fn frequency_rejects_a_bad_window_and_a_reversed_range_by_name() {
    let f = february_fixture().await;
    let bad_window = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                since: Some("2024-01-15T00:00:00Z".into()),
                until: Some("2024-04-01T00:00:00Z".into()),
                window: Some("fortnight".into()),
                ..FrequencyInput::default()
            },
        )
        .await;
    assert_eq!(invalid_fields(bad_window), ["window"]);
    let reversed = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                since: Some("2024-04-01T00:00:00Z".into()),
                until: Some("2024-01-15T00:00:00Z".into()),
                window: Some("day".into()),
                ..FrequencyInput::default()
            },
        )
        .await;
    assert_eq!(invalid_fields(reversed), ["since"]);
    let bad_time = f
        .analytics
        .frequency(
            &f.caller,
            FrequencyInput {
                until: Some("yesterday".into()),
                window: Some("day".into()),
                ..FrequencyInput::default()
            },
        )
        .await;
    assert!(invalid_fields(bad_time).contains(&"until".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// summary
// ---------------------------------------------------------------------------------------------

/// 16 events, 8 hours apart from 2024-03-01T00:00Z (last at +120 h = 2024-03-06T00:00Z):
/// e01..e12 with t01..t12 (one each), then e01/t01 three times, then e02/t03 once.
/// Entities: e01 4, e02 2, e03..e12 1. Types: t01 4, t03 2, the other ten 1.
async fn summary_fixture() -> Fixture {
    let f = fixture();
    let start = t("2024-03-01T00:00:00Z");
    let mut rows: Vec<(String, String)> = (1..=12)
        .map(|i| (format!("e{i:02}"), format!("t{i:02}")))
        .collect();
    rows.extend(std::iter::repeat_n(("e01".to_owned(), "t01".to_owned()), 3));
    rows.push(("e02".into(), "t03".into()));
    for (i, (entity, event_type)) in rows.iter().enumerate() {
        let at = start + chrono::Duration::hours(8 * i as i64);
        f.at(&at.to_rfc3339(), entity, event_type, json!({})).await;
    }
    f
}

#[tokio::test]
async fn summary_counts_exactly_beyond_the_top_ten() {
    let f = summary_fixture().await;
    let answer = f
        .analytics
        .summary(&f.caller, SummaryInput::default())
        .await
        .expect("summary");
    // Percentages over 16: 4 -> 25, 2 -> 12.5, 1 -> 6.25. Ties by name; ten kept.
    let ones = |prefix: &str, key: &str, names: &[u32]| -> Vec<Value> {
        names
            .iter()
            .map(|i| json!({key: format!("{prefix}{i:02}"), "count": 1, "percentage": 6.25}))
            .collect()
    };
    let mut top_types = vec![
        json!({"event_type": "t01", "count": 4, "percentage": 25.0}),
        json!({"event_type": "t03", "count": 2, "percentage": 12.5}),
    ];
    top_types.extend(ones("t", "event_type", &[2, 4, 5, 6, 7, 8, 9, 10]));
    let mut top_entities = vec![
        json!({"entity_id": "e01", "count": 4, "percentage": 25.0}),
        json!({"entity_id": "e02", "count": 2, "percentage": 12.5}),
    ];
    top_entities.extend(ones("e", "entity_id", &[3, 4, 5, 6, 7, 8, 9, 10]));
    assert_eq!(
        answer,
        json!({
            "total_events": 16,
            // 12, not the 10 of the top lists.
            "unique_entities": 12,
            "unique_event_types": 12,
            "time_range": {"from": "2024-03-01T00:00:00.000000Z", "to": "2024-03-06T00:00:00.000000Z"},
            // first..last = 120 h = 5 days: 16 / 5 = 3.2
            "events_per_day": 3.2,
            "top_event_types": top_types,
            "top_entities": top_entities,
            "first_event": "2024-03-01T00:00:00.000000Z",
            "last_event": "2024-03-06T00:00:00.000000Z",
        })
    );
}

#[tokio::test]
async fn summary_over_a_given_range_and_an_empty_one() {
    let f = summary_fixture().await;
    let ranged = f
        .analytics
        .summary(
            &f.caller,
            SummaryInput {
                since: Some("2024-02-29T00:00:00Z".into()),
                until: Some("2024-03-08T00:00:00Z".into()),
                ..SummaryInput::default()
            },
        )
        .await
        .expect("summary");
    // Feb 29 -> Mar 8 is 8 days; all 16 events inside: 16 / 8 = 2.
    assert_eq!(ranged["events_per_day"], json!(2.0));
    assert_eq!(ranged["total_events"], json!(16));
    assert_eq!(
        ranged["time_range"],
        json!({"from": "2024-02-29T00:00:00.000000Z", "to": "2024-03-08T00:00:00.000000Z"})
    );

    // Only the first two days [Mar 1, Mar 3): events 0..5 (hours 0, 8, ..., 40): e01..e06,
    // t01..t06, 6 events over 2 days = 3 per day.
    let two_days = f
        .analytics
        .summary(
            &f.caller,
            SummaryInput {
                since: Some("2024-03-01T00:00:00Z".into()),
                until: Some("2024-03-03T00:00:00Z".into()),
                ..SummaryInput::default()
            },
        )
        .await
        .expect("summary");
    assert_eq!(two_days["total_events"], json!(6));
    assert_eq!(two_days["unique_entities"], json!(6));
    assert_eq!(two_days["events_per_day"], json!(3.0));
    assert_eq!(two_days["last_event"], json!("2024-03-02T16:00:00.000000Z"));

    let empty = f
        .analytics
        .summary(
            &f.caller,
            SummaryInput {
                since: Some("2025-01-01T00:00:00Z".into()),
                until: Some("2025-01-02T00:00:00Z".into()),
                ..SummaryInput::default()
            },
        )
        .await
        .expect("an empty range is not an error");
    assert_eq!(
        empty,
        json!({
            "total_events": 0,
            "unique_entities": 0,
            "unique_event_types": 0,
            "time_range": {"from": "2025-01-01T00:00:00.000000Z", "to": "2025-01-02T00:00:00.000000Z"},
            "events_per_day": 0.0,
            "top_event_types": [],
            "top_entities": [],
            "first_event": null,
            "last_event": null,
        })
    );
}

// ---------------------------------------------------------------------------------------------
// correlation
// ---------------------------------------------------------------------------------------------

const T0: &str = "2024-05-01T10:00:00Z";

fn plus(seconds: i64) -> String {
    (t(T0) + chrono::Duration::seconds(seconds)).to_rfc3339()
}

/// Runs a correlation of `a` -> `b` within `window` seconds over events (seconds after T0,
/// entity, type).
async fn correlation_of(events: &[(i64, &str, &str)], window: i64) -> Value {
    let f = fixture();
    for (s, entity, event_type) in events {
        f.at(&plus(*s), entity, event_type, json!({})).await;
    }
    f.analytics
        .correlation(
            &f.caller,
            CorrelationInput {
                event_type_a: Some("a".into()),
                event_type_b: Some("b".into()),
                time_window_seconds: Some(window.to_string()),
                ..CorrelationInput::default()
            },
        )
        .await
        .expect("correlation")
}

#[tokio::test]
async fn correlation_of_every_a_followed_is_100_percent() {
    let answer = correlation_of(
        &[
            (0, "x1", "a"),
            (10, "x1", "b"),
            (100, "x2", "a"),
            (130, "x2", "b"),
        ],
        60,
    )
    .await;
    // 2 of 2 A followed: 100 %; gaps 10 s and 30 s: mean 20 s.
    assert_eq!(
        answer,
        json!({
            "event_type_a": "a",
            "event_type_b": "b",
            "time_window_seconds": 60,
            "total_a": 2,
            "total_b": 2,
            "correlated_pairs": 2,
            "correlation_percentage": 100.0,
            "avg_time_between_seconds": 20.0,
            "examples": [
                {"entity_id": "x1", "event_a_timestamp": "2024-05-01T10:00:00.000000Z",
                 "event_b_timestamp": "2024-05-01T10:00:10.000000Z", "time_between_seconds": 10.0},
                {"entity_id": "x2", "event_a_timestamp": "2024-05-01T10:01:40.000000Z",
                 "event_b_timestamp": "2024-05-01T10:02:10.000000Z", "time_between_seconds": 30.0},
            ],
        })
    );
}

#[tokio::test]
async fn correlation_of_half_followed_is_50_percent() {
    let answer = correlation_of(&[(0, "x1", "a"), (10, "x1", "b"), (20, "x2", "a")], 60).await;
    // 1 of 2: 50 %; one gap of 10 s.
    assert_eq!(answer["correlated_pairs"], json!(1));
    assert_eq!(answer["correlation_percentage"], json!(50.0));
    assert_eq!(answer["avg_time_between_seconds"], json!(10.0));
}

#[tokio::test]
async fn correlation_ignores_b_before_a_other_entities_and_outside_the_window() {
    // B before A (same entity): not a pair.
    let before = correlation_of(&[(0, "x1", "b"), (10, "x1", "a")], 60).await;
    assert_eq!(before["correlated_pairs"], json!(0));
    assert_eq!(before["correlation_percentage"], json!(0.0));
    assert_eq!(before["avg_time_between_seconds"], json!(0.0));
    assert_eq!(before["examples"], json!([]));
    // B of another entity: not a pair.
    let other = correlation_of(&[(0, "x1", "a"), (5, "x2", "b")], 60).await;
    assert_eq!(other["correlated_pairs"], json!(0));
    assert_eq!(
        (other["total_a"].clone(), other["total_b"].clone()),
        (json!(1), json!(1))
    );
    // 61 s after with a 60 s window: out; exactly 60 s: in. 1 of 2 = 50 %, mean 60 s.
    let window = correlation_of(
        &[
            (0, "x1", "a"),
            (61, "x1", "b"),
            (1000, "x2", "a"),
            (1060, "x2", "b"),
        ],
        60,
    )
    .await;
    assert_eq!(window["correlated_pairs"], json!(1));
    assert_eq!(window["correlation_percentage"], json!(50.0));
    assert_eq!(window["avg_time_between_seconds"], json!(60.0));
}

#[tokio::test]
async fn correlation_never_exceeds_100_percent() {
    // One A, three Bs after it: one pair (the first B, 5 s), 100 %.
    let many_b = correlation_of(
        &[
            (0, "x1", "a"),
            (5, "x1", "b"),
            (10, "x1", "b"),
            (15, "x1", "b"),
        ],
        60,
    )
    .await;
    assert_eq!(many_b["total_b"], json!(3));
    assert_eq!(many_b["correlated_pairs"], json!(1));
    assert_eq!(many_b["correlation_percentage"], json!(100.0));
    assert_eq!(many_b["avg_time_between_seconds"], json!(5.0));
    // Two As, one B after both: each A is followed (20 s and 10 s): 2 pairs, 100 %, mean 15 s.
    let one_b = correlation_of(&[(0, "x1", "a"), (10, "x1", "a"), (20, "x1", "b")], 60).await;
    assert_eq!(one_b["correlated_pairs"], json!(2));
    assert_eq!(one_b["correlation_percentage"], json!(100.0));
    assert_eq!(one_b["avg_time_between_seconds"], json!(15.0));
}

#[tokio::test]
async fn correlation_requires_both_types_by_name() {
    let f = fixture();
    let missing = f
        .analytics
        .correlation(&f.caller, CorrelationInput::default())
        .await;
    assert_eq!(invalid_fields(missing), ["event_type_a", "event_type_b"]);
    let bad = f
        .analytics
        .correlation(
            &f.caller,
            CorrelationInput {
                event_type_a: Some("a".into()),
                event_type_b: Some("b".into()),
                time_window_seconds: Some("0".into()),
                ..CorrelationInput::default()
            },
        )
        .await;
    assert_eq!(invalid_fields(bad), ["time_window_seconds"]);
}

// ---------------------------------------------------------------------------------------------
// time series
// ---------------------------------------------------------------------------------------------

/// May 1: v = 3 (x), 1 (y), none (x), 2 (x), 12 (y), 2 (y) in this order; May 2: nothing;
/// May 3: v = 5 (x), 7 (y). Outside [May 1, May 4): Apr 30 23:59:59 and May 4 00:00.
async fn series_fixture() -> Fixture {
    let f = fixture();
    let p = |v: Option<i64>, g: &str| match v {
        Some(v) => json!({"v": v, "g": g}),
        None => json!({"g": g}),
    };
    f.at("2024-04-30T23:59:59Z", "s", "m", p(Some(100), "x"))
        .await;
    f.at("2024-05-01T01:00:00Z", "s", "m", p(Some(3), "x"))
        .await;
    f.at("2024-05-01T02:00:00Z", "s", "m", p(Some(1), "y"))
        .await;
    f.at("2024-05-01T03:00:00Z", "s", "m", p(None, "x")).await;
    f.at("2024-05-01T04:00:00Z", "s", "m", p(Some(2), "x"))
        .await;
    f.at("2024-05-01T05:00:00Z", "s", "m", p(Some(12), "y"))
        .await;
    f.at("2024-05-01T23:59:59Z", "s", "m", p(Some(2), "y"))
        .await;
    f.at("2024-05-03T00:00:00Z", "s", "m", p(Some(5), "x"))
        .await;
    f.at("2024-05-03T12:00:00Z", "s", "m", p(Some(7), "y"))
        .await;
    f.at("2024-05-04T00:00:00Z", "s", "m", p(Some(100), "y"))
        .await;
    f
}

fn all_aggregations() -> Value {
    json!([
        {"name": "n", "fn": "count"},
        {"name": "nv", "fn": "count", "field": "payload.v"},
        {"name": "sum", "fn": "sum", "field": "payload.v"},
        {"name": "avg", "fn": "avg", "field": "payload.v"},
        {"name": "min", "fn": "min", "field": "payload.v"},
        {"name": "max", "fn": "max", "field": "payload.v"},
        {"name": "sd", "fn": "stddev", "field": "payload.v"},
        {"name": "var", "fn": "variance", "field": "payload.v"},
        {"name": "distinct", "fn": "distinct", "field": "payload.v"},
        {"name": "first", "fn": "first", "field": "payload.v"},
        {"name": "last", "fn": "last", "field": "payload.v"},
    ])
}

#[tokio::test]
async fn time_series_by_day_computes_every_aggregation() {
    let f = series_fixture().await;
    let body = json!({
        "interval": "day",
        "since": "2024-05-01T00:00:00Z",
        "until": "2024-05-04T00:00:00Z",
        "aggregations": all_aggregations(),
    });
    let answer = f
        .analytics
        .time_series(&f.caller, &body)
        .await
        .expect("series");
    // May 1, v = [3, 1, 2, 12, 2] (one event without v): count(*) 6, count(v) 5, sum 20,
    // avg 4, min 1, max 12; deviations -3,-1,-2,-2,8 (order of v: 3,1,2,12,2 -> -1,-3,-2,8,-2):
    // squares 1+9+4+64+4 = 82, sample variance 82/4 = 20.5, stddev sqrt(20.5);
    // distinct {1,2,3,12} = 4;
    // first by position 3, last 2.
    // May 3, v = [5, 7]: count 2, sum 12, avg 6, min 5, max 7, variance (1+1)/1 = 2,
    // stddev sqrt(2); distinct 2; first 5, last 7.
    // May 2: no events; fill_missing defaults to zero: 0 for what counts or adds up (count,
    // sum, distinct), null for what has no value without events (avg, min, max, ...).
    let zero = json!({"n": 0, "nv": 0, "sum": 0, "avg": null, "min": null, "max": null,
                      "sd": null, "var": null, "distinct": 0, "first": null, "last": null});
    assert_close(
        &answer,
        &json!({
            "interval": "day",
            "time_range": {"from": "2024-05-01T00:00:00.000000Z", "to": "2024-05-04T00:00:00.000000Z"},
            "group_by": null,
            "points": [
                {"timestamp": "2024-05-01T00:00:00.000000Z", "values": {
                    "n": 6, "nv": 5, "sum": 20, "avg": 4, "min": 1, "max": 12,
                    "sd": 20.5f64.sqrt(), "var": 20.5, "distinct": 4,
                    "first": 3, "last": 2}},
                {"timestamp": "2024-05-02T00:00:00.000000Z", "values": zero},
                {"timestamp": "2024-05-03T00:00:00.000000Z", "values": {
                    "n": 2, "nv": 2, "sum": 12, "avg": 6, "min": 5, "max": 7,
                    "sd": 2f64.sqrt(), "var": 2, "distinct": 2,
                    "first": 5, "last": 7}},
            ],
        }),
    );
}

#[tokio::test]
async fn time_series_percentile_is_the_nearest_rank() {
    let f = series_fixture().await;
    let body = json!({
        "interval": "day",
        "since": "2024-05-01T00:00:00Z",
        "until": "2024-05-04T00:00:00Z",
        "fill_missing": "none",
        "aggregations": [
            {"name": "p50", "fn": "percentile", "field": "payload.v", "p": 50},
            {"name": "p90", "fn": "percentile", "field": "payload.v", "p": 90},
        ],
    });
    let answer = f
        .analytics
        .time_series(&f.caller, &body)
        .await
        .expect("series");
    // May 1 sorted [1, 2, 2, 3, 12]: p50 rank ceil(2.5) = 3 -> 2; p90 rank ceil(4.5) = 5 -> 12.
    // May 3 sorted [5, 7]: p50 rank ceil(1) = 1 -> 5; p90 rank ceil(1.8) = 2 -> 7.
    assert_close(
        &answer["points"],
        &json!([
            {"timestamp": "2024-05-01T00:00:00.000000Z", "values": {"p50": 2, "p90": 12}},
            {"timestamp": "2024-05-03T00:00:00.000000Z", "values": {"p50": 5, "p90": 7}},
        ]),
    );
}

#[tokio::test]
async fn time_series_fill_missing_null_and_none() {
    let f = series_fixture().await;
    let body = |fill: &str| {
        json!({
            "interval": "day",
            "since": "2024-05-01T00:00:00Z",
            "until": "2024-05-04T00:00:00Z",
            "fill_missing": fill,
            "aggregations": [{"name": "n", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "payload.v"}],
        })
    };
    let null = f
        .analytics
        .time_series(&f.caller, &body("null"))
        .await
        .expect("series");
    assert_close(
        &null["points"],
        &json!([
            {"timestamp": "2024-05-01T00:00:00.000000Z", "values": {"n": 6, "sum": 20}},
            {"timestamp": "2024-05-02T00:00:00.000000Z", "values": {"n": null, "sum": null}},
            {"timestamp": "2024-05-03T00:00:00.000000Z", "values": {"n": 2, "sum": 12}},
        ]),
    );
    let none = f
        .analytics
        .time_series(&f.caller, &body("none"))
        .await
        .expect("series");
    assert_close(
        &none["points"],
        &json!([
            {"timestamp": "2024-05-01T00:00:00.000000Z", "values": {"n": 6, "sum": 20}},
            {"timestamp": "2024-05-03T00:00:00.000000Z", "values": {"n": 2, "sum": 12}},
        ]),
    );
    let bad = f.analytics.time_series(&f.caller, &body("maybe")).await;
    assert_eq!(invalid_fields(bad), ["fill_missing"]);
}

#[tokio::test]
async fn time_series_group_by_a_payload_field() {
    let f = series_fixture().await;
    let body = json!({
        "interval": "day",
        "since": "2024-05-01T00:00:00Z",
        "until": "2024-05-04T00:00:00Z",
        "group_by": "payload.g",
        "aggregations": [{"name": "n", "fn": "count"}, {"name": "sum", "fn": "sum", "field": "payload.v"},
                         {"name": "max", "fn": "max", "field": "payload.v"}],
    });
    let answer = f
        .analytics
        .time_series(&f.caller, &body)
        .await
        .expect("series");
    // May 1: x = {3, none, 2}: count 3, sum 5, max 3; y = {1, 12, 2}: count 3, sum 15, max 12.
    // May 2: zero counts and sums, null max, for both groups. May 3: x = {5}, y = {7}.
    assert_close(
        &answer,
        &json!({
            "interval": "day",
            "time_range": {"from": "2024-05-01T00:00:00.000000Z", "to": "2024-05-04T00:00:00.000000Z"},
            "group_by": "payload.g",
            "points": [
                {"timestamp": "2024-05-01T00:00:00.000000Z", "group": "x", "values": {"n": 3, "sum": 5, "max": 3}},
                {"timestamp": "2024-05-01T00:00:00.000000Z", "group": "y", "values": {"n": 3, "sum": 15, "max": 12}},
                {"timestamp": "2024-05-02T00:00:00.000000Z", "group": "x", "values": {"n": 0, "sum": 0, "max": null}},
                {"timestamp": "2024-05-02T00:00:00.000000Z", "group": "y", "values": {"n": 0, "sum": 0, "max": null}},
                {"timestamp": "2024-05-03T00:00:00.000000Z", "group": "x", "values": {"n": 1, "sum": 5, "max": 5}},
                {"timestamp": "2024-05-03T00:00:00.000000Z", "group": "y", "values": {"n": 1, "sum": 7, "max": 7}},
            ],
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// funnel
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn funnel_of_three_steps_with_a_condition() {
    let f = fixture();
    // u1: view 10:00, cart qty 2 10:10, buy 10:30: all three.
    f.chronological(vec![
        ("2024-06-01T10:00:00Z", "u1", "view", json!({})),
        ("2024-06-01T10:10:00Z", "u1", "cart", json!({"qty": 2})),
        ("2024-06-01T10:30:00Z", "u1", "buy", json!({})),
        // u2: view 10:00, cart qty 1 10:05 (fails the where), cart qty 3 10:20, buy 10:50.
        ("2024-06-01T10:00:00Z", "u2", "view", json!({})),
        ("2024-06-01T10:05:00Z", "u2", "cart", json!({"qty": 1})),
        ("2024-06-01T10:20:00Z", "u2", "cart", json!({"qty": 3})),
        ("2024-06-01T10:50:00Z", "u2", "buy", json!({})),
        // u3: view 10:00, cart qty 5 10:40, buy 12:00 (2 h after view: outside the hour).
        ("2024-06-01T10:00:00Z", "u3", "view", json!({})),
        ("2024-06-01T10:40:00Z", "u3", "cart", json!({"qty": 5})),
        ("2024-06-01T12:00:00Z", "u3", "buy", json!({})),
        // u4: view only. u5: cart and buy without a view: never enters.
        ("2024-06-01T10:00:00Z", "u4", "view", json!({})),
        ("2024-06-01T10:00:00Z", "u5", "cart", json!({"qty": 2})),
        ("2024-06-01T10:01:00Z", "u5", "buy", json!({})),
    ])
    .await;
    let body = json!({
        "within_ms": 3_600_000,
        "steps": [
            {"name": "viewed", "event_type": "view"},
            {"name": "carted", "event_type": "cart", "where": [">=", "payload.qty", 2]},
            {"event_type": "buy"},
        ],
    });
    let answer = f.analytics.funnel(&f.caller, &body).await.expect("funnel");
    // Entered: view 4 (u1..u4), cart 3 (u1, u2, u3), buy 2 (u1, u2).
    // view -> cart: u1 10 min, u2 20 min, u3 40 min: median 20 min = 1 200 000 ms.
    // cart -> buy: u1 20 min, u2 30 min: median 25 min = 1 500 000 ms.
    assert_eq!(
        answer,
        json!({
            "within_ms": 3_600_000,
            "entered": 4,
            "completed": 2,
            "overall_conversion": 0.5,
            "steps": [
                {"name": "viewed", "event_type": "view", "entered": 4, "converted": 3,
                 "conversion_rate": 0.75, "conversion_from_start": 1.0,
                 "median_time_to_convert_ms": 1_200_000.0},
                {"name": "carted", "event_type": "cart", "entered": 3, "converted": 2,
                 "conversion_rate": 2.0 / 3.0, "conversion_from_start": 0.75,
                 "median_time_to_convert_ms": 1_500_000.0},
                {"name": "buy", "event_type": "buy", "entered": 2, "converted": null,
                 "conversion_rate": null, "conversion_from_start": 0.5,
                 "median_time_to_convert_ms": null},
            ],
        })
    );
}

// ---------------------------------------------------------------------------------------------
// cohorts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cohorts_weekly_retention_matrix() {
    let f = fixture();
    // Weeks start on Monday: 2024-01-01, -08, -15, -22, -29.
    f.chronological(vec![
        ("2024-01-01T10:00:00Z", "c1", "signup", json!({})), // cohort W0
        ("2024-01-02T10:00:00Z", "c1", "login", json!({})),  // W0: k 0
        ("2024-01-09T10:00:00Z", "c1", "login", json!({})),  // W1: k 1
        ("2024-01-03T10:00:00Z", "c2", "signup", json!({})), // cohort W0
        ("2024-01-17T10:00:00Z", "c2", "login", json!({})),  // W2: k 2
        ("2024-01-07T23:00:00Z", "c3", "signup", json!({})), // Sunday: cohort W0
        ("2024-01-10T10:00:00Z", "c3", "login", json!({})),  // W1: k 1
        ("2024-01-08T00:00:00Z", "c4", "signup", json!({})), // cohort W1
        ("2024-01-10T11:00:00Z", "c4", "login", json!({})),  // W1: k 0
        ("2024-01-16T10:00:00Z", "c4", "login", json!({})),  // W2: k 1
        ("2024-01-30T10:00:00Z", "c4", "login", json!({})),  // W4: k 3 >= periods
        ("2024-01-15T00:00:00Z", "c5", "signup", json!({})), // at until: no cohort
        ("2024-01-16T00:00:00Z", "c5", "login", json!({})),
        ("2024-01-02T00:00:00Z", "c6", "login", json!({})), // never signed up
    ])
    .await;
    let body = json!({
        "first_event_type": "signup",
        "return_event_type": "login",
        "period": "week",
        "periods": 3,
        "since": "2024-01-01T00:00:00Z",
        "until": "2024-01-15T00:00:00Z",
    });
    let answer = f
        .analytics
        .cohorts(&f.caller, &body)
        .await
        .expect("cohorts");
    // W0 = {c1, c2, c3}: k0 {c1} 1, k1 {c1, c3} 2, k2 {c2} 1; rates over 3.
    // W1 = {c4}: k0 1, k1 1, k2 (W3) 0; the W4 login is past the 3 periods.
    assert_eq!(
        answer,
        json!({
            "period": "week",
            "first_event_type": "signup",
            "return_event_type": "login",
            "time_range": {"from": "2024-01-01T00:00:00.000000Z", "to": "2024-01-15T00:00:00.000000Z"},
            "cohorts": [
                {"cohort": "2024-01-01T00:00:00.000000Z", "size": 3, "retention": [1, 2, 1],
                 "rates": [1.0 / 3.0, 2.0 / 3.0, 1.0 / 3.0]},
                {"cohort": "2024-01-08T00:00:00.000000Z", "size": 1, "retention": [1, 1, 0],
                 "rates": [1.0, 1.0, 0.0]},
            ],
        })
    );
}

// ---------------------------------------------------------------------------------------------
// trend and anomalies
// ---------------------------------------------------------------------------------------------

/// `counts[i]` events on day i from 2024-05-10.
async fn daily_counts(counts: &[usize]) -> Fixture {
    let f = fixture();
    for (day, n) in counts.iter().enumerate() {
        for k in 0..*n {
            let at = t("2024-05-10T00:00:00Z")
                + chrono::Duration::days(day as i64)
                + chrono::Duration::minutes(k as i64);
            f.at(&at.to_rfc3339(), "d", "hit", json!({})).await;
        }
    }
    f
}

#[tokio::test]
async fn trend_of_an_increasing_daily_count() {
    let f = daily_counts(&[1, 2, 3, 4, 5]).await;
    let body = json!({
        "interval": "day",
        "since": "2024-05-10T00:00:00Z",
        "until": "2024-05-15T00:00:00Z",
        "forecast_periods": 2,
    });
    let answer = f.analytics.trend(&f.caller, &body).await.expect("trend");
    // y = 1..5 at x = 0..4: x mean 2, y mean 3, covariance 4+1+0+1+4 = 10, spread 10:
    // slope 1, intercept 3 - 2 = 1; change 5 - 1 = 4 = 400 % of 1; forecast x = 5, 6: 6, 7
    // on the days after until (May 15, May 16).
    assert_eq!(
        answer,
        json!({
            "interval": "day",
            "time_range": {"from": "2024-05-10T00:00:00.000000Z", "to": "2024-05-15T00:00:00.000000Z"},
            "points": [
                {"timestamp": "2024-05-10T00:00:00.000000Z", "value": 1},
                {"timestamp": "2024-05-11T00:00:00.000000Z", "value": 2},
                {"timestamp": "2024-05-12T00:00:00.000000Z", "value": 3},
                {"timestamp": "2024-05-13T00:00:00.000000Z", "value": 4},
                {"timestamp": "2024-05-14T00:00:00.000000Z", "value": 5},
            ],
            "slope": 1.0,
            "intercept": 1.0,
            "change": 4.0,
            "change_percent": 400.0,
            "direction": "increasing",
            "forecast": [
                {"timestamp": "2024-05-15T00:00:00.000000Z", "value": 6.0},
                {"timestamp": "2024-05-16T00:00:00.000000Z", "value": 7.0},
            ],
        })
    );
}

#[tokio::test]
async fn anomalies_flag_the_spike_day_by_zscore_and_iqr() {
    let f = daily_counts(&[3, 2, 3, 2, 3, 2, 13]).await;
    let series = json!({
        "interval": "day",
        "since": "2024-05-10T00:00:00Z",
        "until": "2024-05-17T00:00:00Z",
        "aggregations": [{"name": "n", "fn": "count"}],
    });
    let zscore = f
        .analytics
        .anomalies(
            &f.caller,
            &json!({"method": "zscore", "sensitivity": 2, "series": series}),
        )
        .await
        .expect("anomalies");
    // Mean 28/7 = 4; squared deviations 1+4+1+4+1+4+81 = 96; population sd sqrt(96/7)
    // ~ 3.703; z(13) = 9/3.703 ~ 2.43 > 2; the others |z| <= 2/3.703 ~ 0.54.
    assert_close(
        &zscore,
        &json!({
            "method": "zscore",
            "sensitivity": 2.0,
            "aggregation": "n",
            "points": 7,
            "anomalies": [{"timestamp": "2024-05-16T00:00:00.000000Z", "value": 13.0,
                           "score": 9.0 / (96.0f64 / 7.0).sqrt(), "expected": 4.0}],
        }),
    );
    // With the default sensitivity 3, 2.43 is not an outlier.
    let default = f
        .analytics
        .anomalies(&f.caller, &json!({"method": "zscore", "series": series}))
        .await
        .expect("anomalies");
    assert_eq!(default["anomalies"], json!([]));
    let iqr = f
        .analytics
        .anomalies(&f.caller, &json!({"method": "iqr", "series": series}))
        .await
        .expect("anomalies");
    // Sorted [2,2,2,3,3,3,13]: Q1 (h 1.5) 2, median 3, Q3 (h 4.5) 3, IQR 1; fences
    // 2 - 1.5 = 0.5 and 3 + 1.5 = 4.5: only 13, score (13 - 3)/1 = 10, expected 3.
    assert_eq!(
        iqr,
        json!({
            "method": "iqr",
            "sensitivity": 1.5,
            "aggregation": "n",
            "points": 7,
            "anomalies": [{"timestamp": "2024-05-16T00:00:00.000000Z", "value": 13.0,
                           "score": 10.0, "expected": 3.0}],
        })
    );
}

// ---------------------------------------------------------------------------------------------
// the query DSL
// ---------------------------------------------------------------------------------------------

async fn dsl_fixture() -> Fixture {
    let f = fixture();
    f.at(
        "2024-07-01T00:00:00Z",
        "a",
        "t",
        json!({"n": 3, "tag": "red", "nested": {"x": 1}}),
    )
    .await; // position 1
    f.at("2024-07-01T00:01:00Z", "b", "t", json!({"n": 10}))
        .await; // 2
    f.at(
        "2024-07-01T00:02:00Z",
        "c",
        "t",
        json!({"n": 2.5, "tag": "blue"}),
    )
    .await; // 3
    f.at("2024-07-01T00:03:00Z", "d", "t", json!({"n": "zzz"}))
        .await; // 4
    f.at("2024-07-01T00:04:00Z", "e", "t", json!({})).await; // 5
    f
}

fn entities_of(answer: &DslAnswer) -> (Vec<String>, bool) {
    match answer {
        DslAnswer::Events { events, has_more } => (
            events
                .iter()
                .map(|e| e.entity_id.as_str().to_owned())
                .collect(),
            *has_more,
        ),
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn dsl_select_returns_payload_paths_as_json_values() {
    let f = dsl_fixture().await;
    let answer = f
        .analytics
        .query(
            &f.caller,
            &json!({"select": ["entity_id", "payload.n", "payload.nested", "payload.missing"]}),
        )
        .await
        .expect("query");
    let DslAnswer::Rows { rows, has_more } = answer else {
        panic!("expected rows");
    };
    assert!(!has_more);
    let rows: Vec<Value> = rows.into_iter().map(Value::Object).collect();
    // In position order; absent paths are null, values keep their JSON type.
    assert_eq!(
        rows,
        [
            json!({"entity_id": "a", "payload.n": 3, "payload.nested": {"x": 1}, "payload.missing": null}),
            json!({"entity_id": "b", "payload.n": 10, "payload.nested": null, "payload.missing": null}),
            json!({"entity_id": "c", "payload.n": 2.5, "payload.nested": null, "payload.missing": null}),
            json!({"entity_id": "d", "payload.n": "zzz", "payload.nested": null, "payload.missing": null}),
            json!({"entity_id": "e", "payload.n": null, "payload.nested": null, "payload.missing": null}),
        ]
    );
}

#[tokio::test]
async fn dsl_order_by_payload_number_descending() {
    let f = dsl_fixture().await;
    let answer = f
        .analytics
        .query(
            &f.caller,
            &json!({"order_by": {"field": "payload.n", "direction": "desc"}}),
        )
        .await
        .expect("query");
    // Numbers first, descending (10, 3, 2.5), then the string "zzz", then the absent one.
    assert_eq!(
        entities_of(&answer),
        (
            vec!["b".into(), "a".into(), "c".into(), "d".into(), "e".into()],
            false
        )
    );
}

#[tokio::test]
async fn dsl_limit_sets_has_more() {
    let f = dsl_fixture().await;
    let two = f
        .analytics
        .query(&f.caller, &json!({"limit": 2}))
        .await
        .expect("query");
    assert_eq!(entities_of(&two), (vec!["a".into(), "b".into()], true));
    let five = f
        .analytics
        .query(&f.caller, &json!({"limit": 5}))
        .await
        .expect("query");
    assert!(!entities_of(&five).1);
    assert_eq!(entities_of(&five).0.len(), 5);
    // A condition and a limit: n > 2 holds for a, b, c; limit 2 keeps a, b and more follow.
    let filtered = f
        .analytics
        .query(
            &f.caller,
            &json!({"where": [">", "payload.n", 2], "limit": 2}),
        )
        .await
        .expect("query");
    assert_eq!(entities_of(&filtered), (vec!["a".into(), "b".into()], true));
}

// The property: the SQL compilation of a condition selects exactly the events the naive
// evaluator `Condition::matches` accepts.

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        (-2i64..12).prop_map(Value::from),
        prop::sample::select(vec![2.5, -0.5, 3.0, 1e3]).prop_map(Value::from),
        prop::sample::select(vec!["a", "b", "red", "re", "", "t.x", "RED"]).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!([1, "red"])),
        Just(json!({"x": 1})),
    ]
    .boxed()
}

fn payload() -> impl Strategy<Value = Value> {
    let nested = prop_oneof![
        prop::option::of(scalar()).prop_map(|x| match x {
            Some(x) => json!({ "x": x }),
            None => json!({"y": 1}),
        }),
        scalar(),
    ];
    (
        prop::option::of(scalar()),
        prop::option::of(scalar()),
        prop::option::weighted(0.2, scalar()),
        prop::option::of(nested),
    )
        .prop_map(|(n, tag, missing, nested)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [
                ("n", n),
                ("tag", tag),
                ("missing", missing),
                ("nested", nested),
            ] {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            Value::Object(object)
        })
}

const FIELDS: [&str; 6] = [
    "entity_id",
    "event_type",
    "payload.n",
    "payload.tag",
    "payload.missing",
    "payload.nested.x",
];

fn string_literal() -> BoxedStrategy<Value> {
    prop::sample::select(vec!["a", "b", "c", "red", "re", "", "t.x", "t.y", "u"])
        .prop_map(Value::from)
        .boxed()
}

fn any_literal() -> BoxedStrategy<Value> {
    prop_oneof![
        (-1i64..11).prop_map(Value::from),
        prop::sample::select(vec![2.5, -0.5, 1e3]).prop_map(Value::from),
        string_literal(),
        any::<bool>().prop_map(Value::from),
    ]
    .boxed()
}

fn field_and_literal() -> impl Strategy<Value = (&'static str, Value)> {
    prop::sample::select(FIELDS.to_vec()).prop_flat_map(|f| {
        let literal = if f.starts_with("payload") {
            any_literal()
        } else {
            string_literal()
        };
        (Just(f), literal)
    })
}

fn leaf() -> impl Strategy<Value = Value> {
    let ops = prop::sample::select(vec!["=", "!=", ">", ">=", "<", "<="]);
    prop_oneof![
        (ops, field_and_literal()).prop_map(|(op, (f, v))| {
            // Order comparisons take no bools.
            let op = if v.is_boolean() && !matches!(op, "=" | "!=") {
                "="
            } else {
                op
            };
            json!([op, f, v])
        }),
        (field_and_literal(), field_and_literal()).prop_map(|((f, v), (_, w))| {
            // Values of `in` must suit the field: attributes take strings only.
            let w = if f.starts_with("payload") || w.is_string() {
                w
            } else {
                v.clone()
            };
            json!(["in", f, [v, w]])
        }),
        (
            prop::sample::select(FIELDS.to_vec()),
            prop::sample::select(vec!["re", "e", "", "t."])
        )
            .prop_map(|(f, s)| json!(["contains", f, s])),
        prop::sample::select(FIELDS.to_vec()).prop_map(|f| json!(["exists", f])),
    ]
}

fn condition() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|cs| {
                let mut v = vec![json!("and")];
                v.extend(cs);
                Value::Array(v)
            }),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|cs| {
                let mut v = vec![json!("or")];
                v.extend(cs);
                Value::Array(v)
            }),
            inner.prop_map(|c| json!(["not", c])),
        ]
    })
}

fn events() -> impl Strategy<Value = Vec<(&'static str, &'static str, Value)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "c"]),
            prop::sample::select(vec!["t.x", "t.y", "u"]),
            payload(),
        ),
        1..12,
    )
}

#[test]
fn dsl_query_selects_what_the_naive_evaluator_matches() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let f = fixture();
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(24));
    let result = runner.run(&(events(), condition()), |(events, condition)| {
        let tenant = TenantId::parse(&format!("case{}", cases.fetch_add(1, Ordering::Relaxed)))
            .expect("tenant");
        let caller = Caller::new(tenant.clone());
        runtime.block_on(async {
            for (i, (entity, event_type, payload)) in events.iter().enumerate() {
                let at = t("2024-08-01T00:00:00Z") + chrono::Duration::seconds(i as i64);
                f.at_tenant(
                    &tenant,
                    &at.to_rfc3339(),
                    entity,
                    event_type,
                    payload.clone(),
                )
                .await;
            }
            let body = json!({"where": condition, "limit": 10_000});
            let parsed = DslQuery::parse(&body, t("2030-01-01T00:00:00Z"))
                .unwrap_or_else(|e| panic!("the generator made an invalid query {body}: {e:?}"));
            let wanted = parsed.condition.expect("a condition");
            let all = f
                .store
                .query(
                    &tenant,
                    EventQuery {
                        limit: 10_000,
                        ..EventQuery::default()
                    },
                )
                .await
                .expect("store query");
            let expected: Vec<u64> = all
                .events
                .iter()
                .filter(|e| wanted.matches(e))
                .map(|e| e.position.get())
                .collect();
            let answer = f
                .analytics
                .query(&caller, &body)
                .await
                .map_err(|e| TestCaseError::fail(format!("query {body} failed: {e:?}")))?;
            let DslAnswer::Events {
                events: got,
                has_more,
            } = answer
            else {
                return Err(TestCaseError::fail("expected events"));
            };
            let got: Vec<u64> = got.iter().map(|e| e.position.get()).collect();
            let payloads: Vec<&str> = all.events.iter().map(|e| e.payload.get()).collect();
            prop_assert!(!has_more);
            prop_assert_eq!(
                got,
                expected,
                "condition {} over payloads {:?}",
                condition,
                payloads
            );
            Ok(())
        })
    });
    drop(f);
    runtime.shutdown_background();
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The funnel statement agrees with `compute::funnel` (the rule written as a loop) on random
/// event sequences: entered and converted per step, and the median times.
#[test]
fn the_funnel_statement_agrees_with_the_reference_loop() {
    use allsource_application::analytics::compute::{self, FunnelRow};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let f = fixture();
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(16));
    let event = (0..4_usize, 0..4_usize, 0..50_i64);
    let result = runner.run(&proptest::collection::vec(event, 1..40), |events| {
        let tenant = TenantId::parse(&format!("funnel{}", cases.fetch_add(1, Ordering::Relaxed)))
            .expect("tenant");
        let caller = Caller::new(tenant.clone());
        runtime.block_on(async {
            let mut at = t("2024-08-01T00:00:00Z");
            for (entity, kind, minutes) in &events {
                at += chrono::Duration::minutes(*minutes);
                f.at_tenant(
                    &tenant,
                    &at.to_rfc3339(),
                    &format!("u{entity}"),
                    ["a", "b", "c", "other"][*kind],
                    json!({}),
                )
                .await;
            }
            let within_ms = 3_600_000_i64;
            let answer = f
                .analytics
                .funnel(
                    &caller,
                    &json!({"steps": [{"event_type": "a"}, {"event_type": "b"}, {"event_type": "c"}],
                            "within_ms": within_ms}),
                )
                .await
                .expect("funnel");
            let mut all = f
                .store
                .query(
                    &tenant,
                    EventQuery {
                        limit: 10_000,
                        ..EventQuery::default()
                    },
                )
                .await
                .expect("store query")
                .events;
            all.sort_by(|x, y| {
                (x.entity_id.as_str(), x.position).cmp(&(y.entity_id.as_str(), y.position))
            });
            let rows: Vec<FunnelRow> = all
                .iter()
                .map(|e| FunnelRow {
                    entity_id: e.entity_id.as_str().to_owned(),
                    position: e.position.get(),
                    timestamp_micros: e.timestamp.timestamp_micros(),
                    matches: ["a", "b", "c"]
                        .iter()
                        .map(|s| e.event_type.as_str() == *s)
                        .collect(),
                })
                .collect();
            let expected = compute::funnel(&rows, 3, within_ms * 1000);
            for (k, outcome) in expected.iter().enumerate() {
                let step = &answer["steps"][k];
                prop_assert_eq!(&step["entered"], &json!(outcome.entered), "step {} {}", k, answer);
                prop_assert_eq!(&step["converted"], &json!(outcome.converted), "step {}", k);
                let median = step["median_time_to_convert_ms"].as_f64();
                match (median, outcome.median_time_to_convert_ms) {
                    (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-6, "step {k}: {a} vs {b}"),
                    (a, b) => prop_assert_eq!(a, b, "step {}", k),
                }
            }
            Ok::<(), TestCaseError>(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

use super::*;
use crate::event::fixtures::{proposed, stored};
use proptest::prelude::*;
use serde_json::json;

fn source(t_ms: i64, n: u64) -> SourceEvent {
    SourceEvent {
        id: Uuid::from_u128(u128::from(n)),
        position: n,
        entity_id: format!("e-{n}"),
        event_type: "t.x".into(),
        version: 1,
        timestamp: DateTime::from_timestamp_millis(t_ms).expect("time in test"),
    }
}

fn rec(payload: Value, t_ms: i64, n: u64) -> Record {
    Record {
        payload,
        source: source(t_ms, n),
        origin: Uuid::from_u128(u128::from(n)).to_string(),
    }
}

fn def(body: Value) -> PipelineDefinition {
    PipelineDefinition::from_json(&body).unwrap_or_else(|e| panic!("valid in test: {e:?}"))
}

fn errors(body: Value) -> Vec<String> {
    let spec = PipelineSpec::from_json(&body).expect("spec in test");
    PipelineDefinition::parse(spec)
        .expect_err("invalid in test")
        .into_iter()
        .map(|e| e.field)
        .collect()
}

/// A pipeline with these operators and a table output.
fn with_ops(ops: Value) -> PipelineDefinition {
    def(
        json!({"name": "p", "source_event_types": [], "operators": ops,
               "output": {"type": "table"}}),
    )
}

fn op_errors(ops: Value) -> Vec<String> {
    errors(
        json!({"name": "p", "source_event_types": [], "operators": ops,
                  "output": {"type": "table"}}),
    )
}

/// Runs every operator but the last branch over the records, one at a time.
fn run(
    d: &PipelineDefinition,
    state: &mut PipelineState,
    records: Vec<Record>,
) -> (Vec<Record>, Effects) {
    let mut effects = Effects::default();
    let mut out = Vec::new();
    for record in records {
        let mut batch = vec![record];
        for i in 0..d.operators.len() {
            batch = state.apply(d, i, batch, &mut effects);
        }
        out.extend(batch);
    }
    (out, effects)
}

fn one(d: &PipelineDefinition, record: Record) -> (Vec<Record>, Effects) {
    run(d, &mut PipelineState::new(d), vec![record])
}

fn path(raw: &str) -> FieldPath {
    FieldPath::parse(raw).expect("path in test")
}

#[test]
fn paths_parse_print_and_read() {
    for p in [
        "$",
        "$.a",
        "$.a.b",
        "$.a[0].b",
        "$.a-b_c",
        "$[2]",
        "$.x[1][0]",
        "@id",
        "@entity_id",
        "@event_type",
        "@position",
        "@version",
        "@timestamp",
    ] {
        assert_eq!(path(p).to_text(), p);
    }
    for bad in [
        "", "a", "$.", "$..a", "$a", "$.a b", "$.a[]", "$.a[x]", "$.a[-1]", "$.a[0", "@nope", "@",
        "$.a.", "$.é",
    ] {
        assert!(FieldPath::parse(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(FieldPath::parse(&format!("${}", ".a".repeat(17))).is_err());
    let r = rec(json!({"a": {"b": [1, {"c": "x"}]}, "n": null}), 1_000, 7);
    assert_eq!(path("$.a.b[1].c").get(&r), Some(json!("x")));
    assert_eq!(path("$.a.b[5]").get(&r), None);
    assert_eq!(path("$.a.b.c").get(&r), None);
    assert_eq!(path("$.n").get(&r), Some(Value::Null));
    assert_eq!(path("$.missing").get(&r), None);
    assert_eq!(path("$").get(&r), Some(r.payload.clone()));
    assert_eq!(path("@position").get(&r), Some(json!(7)));
    assert_eq!(path("@version").get(&r), Some(json!(1)));
    assert_eq!(path("@entity_id").get(&r), Some(json!("e-7")));
    assert_eq!(path("@event_type").get(&r), Some(json!("t.x")));
    assert_eq!(
        path("@id").get(&r),
        Some(json!(Uuid::from_u128(7).to_string()))
    );
    assert_eq!(
        path("@timestamp").get(&r),
        Some(json!("1970-01-01T00:00:01.000000Z"))
    );
}

#[test]
fn records_start_from_events() {
    let e = stored(proposed("order-1", "order.placed", r#"{"a":1}"#), 3, 9);
    let r = Record::from_event(&e);
    assert_eq!(r.payload, json!({"a": 1}));
    assert_eq!(r.origin, e.id.as_uuid().to_string());
    assert_eq!(r.source.position, 9);
    assert_eq!(r.source.version, 3);
    assert_eq!(r.source.entity_id, "order-1");
    assert_eq!(r.source.event_type, "order.placed");
    assert_eq!(r.source.timestamp, e.timestamp);
}

fn cond(field: &str, op: &str, value: Option<Value>) -> Condition {
    let mut body = json!({"type": "filter", "field": field, "op": op});
    if let Some(v) = value {
        body["value"] = v;
    }
    match with_ops(json!([body])).operators.remove(0) {
        Operator::Filter(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn filters_compare_as_documented() {
    let r = rec(
        json!({"n": 1, "f": 2.5, "s": "gold", "a": [1, "x", {"k": 1}], "z": null,
                       "o": {"k": 1}}),
        0,
        1,
    );
    let yes = |f: &str, op: &str, v: Value| {
        assert!(cond(f, op, Some(v.clone())).matches(&r), "{f} {op} {v}")
    };
    let no = |f: &str, op: &str, v: Value| {
        assert!(!cond(f, op, Some(v.clone())).matches(&r), "{f} {op} {v}")
    };
    yes("$.n", "eq", json!(1.0));
    yes("$.n", "eq", json!(1));
    yes("$.o", "eq", json!({"k": 1.0}));
    no("$.n", "eq", json!("1"));
    yes("$.z", "eq", Value::Null);
    no("$.missing", "eq", Value::Null);
    yes("$.missing", "ne", json!(1));
    yes("$.n", "ne", json!(2));
    no("$.n", "ne", json!(1.0));
    yes("$.f", "gt", json!(2));
    no("$.f", "gt", json!(2.5));
    yes("$.f", "gte", json!(2.5));
    yes("$.n", "lt", json!(2.5));
    yes("$.n", "lte", json!(1));
    yes("$.s", "gt", json!("apple"));
    yes("$.s", "lt", json!("silver"));
    no("$.s", "gt", json!(1));
    no("$.n", "lt", json!("9"));
    no("$.missing", "lt", json!(1));
    no("$.z", "lt", json!(1));
    yes("$.s", "contains", json!("ol"));
    no("$.s", "contains", json!("x"));
    yes("$.a", "contains", json!(1.0));
    yes("$.a", "contains", json!({"k": 1}));
    no("$.a", "contains", json!("y"));
    no("$.n", "contains", json!(1));
    yes("$.s", "in", json!(["silver", "gold"]));
    yes("$.n", "in", json!([1.0]));
    no("$.missing", "in", json!([null]));
    no("$.s", "in", json!([]));
    yes("@event_type", "eq", json!("t.x"));
    assert!(cond("$.s", "exists", None).matches(&r));
    assert!(!cond("$.z", "exists", None).matches(&r));
    assert!(!cond("$.missing", "exists", None).matches(&r));
    assert!(cond("$.missing", "exists", Some(json!(false))).matches(&r));
    assert!(cond("$.z", "exists", Some(json!(false))).matches(&r));
    assert!(!cond("$.s", "exists", Some(json!(false))).matches(&r));
    assert!(cond("$.s", "exists", Some(json!(true))).matches(&r));

    let d = with_ops(json!([{"type": "filter", "field": "$.n", "op": "gt", "value": 1}]));
    let (out, effects) = run(
        &d,
        &mut PipelineState::new(&d),
        vec![
            rec(json!({"n": 1}), 0, 1),
            rec(json!({"n": 2}), 0, 2),
            rec(json!({}), 0, 3),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(effects.filtered, 2);
}

fn map_one(
    field: &str,
    transform: &str,
    value: Option<Value>,
    payload: Value,
) -> Result<Value, String> {
    let mut body = json!({"type": "map", "field": field, "transform": transform});
    if let Some(v) = value {
        body["value"] = v;
    }
    let d = with_ops(json!([body]));
    let (out, effects) = one(&d, rec(payload, 0, 1));
    match effects.errors.first() {
        Some(e) => {
            assert_eq!(e.operator, 0);
            assert!(out.is_empty(), "a failed record is dropped");
            Err(e.message.clone())
        }
        None => Ok(out[0].payload.clone()),
    }
}

#[test]
fn maps_transform_as_documented() {
    assert_eq!(
        map_one("$.s", "uppercase", None, json!({"s": "aé"})),
        Ok(json!({"s": "AÉ"}))
    );
    assert_eq!(
        map_one("$.s", "lowercase", None, json!({"s": "AB"})),
        Ok(json!({"s": "ab"}))
    );
    assert_eq!(
        map_one("$.s", "trim", None, json!({"s": "  a b "})),
        Ok(json!({"s": "a b"}))
    );
    assert_eq!(map_one("$.s", "trim", None, json!({})), Ok(json!({})));
    assert_eq!(
        map_one("$.s", "trim", None, json!({"s": null})),
        Ok(json!({"s": null}))
    );
    assert_eq!(
        map_one("$.name", "uppercase", None, json!({"name": 1})),
        Err("$.name is not a string".into())
    );
    assert_eq!(
        map_one("$.n", "multiply", Some(json!(3)), json!({"n": 2})),
        Ok(json!({"n": 6}))
    );
    assert_eq!(
        map_one("$.n", "multiply", Some(json!(0.5)), json!({"n": 3})),
        Ok(json!({"n": 1.5}))
    );
    assert_eq!(
        map_one("$.n", "add", Some(json!(-5)), json!({"n": 2})),
        Ok(json!({"n": -3}))
    );
    assert_eq!(
        map_one("$.n", "add", Some(json!(1)), json!({"n": i64::MAX})),
        Ok(json!({"n": 9_223_372_036_854_775_808_u64}))
    );
    assert_eq!(
        map_one("$.n", "multiply", Some(json!(2)), json!({"n": u64::MAX})),
        Ok(json!({"n": 3.6893488147419103e19}))
    );
    assert!(map_one("$.n", "multiply", Some(json!(1e300)), json!({"n": 1e300})).is_err());
    assert_eq!(
        map_one("$.n", "add", Some(json!(1)), json!({})),
        Ok(json!({}))
    );
    assert_eq!(
        map_one("$.n", "add", Some(json!(1)), json!({"n": "1"})),
        Err("$.n is not a number".into())
    );
    assert_eq!(
        map_one("$.a.b.c", "set", Some(json!([1])), json!({"x": 1})),
        Ok(json!({"x": 1, "a": {"b": {"c": [1]}}}))
    );
    assert_eq!(
        map_one("$.a[1]", "set", Some(json!(9)), json!({"a": [0, 1]})),
        Ok(json!({"a": [0, 9]}))
    );
    assert!(map_one("$.a.b", "set", Some(json!(1)), json!({"a": "str"})).is_err());
    assert!(map_one("$.a", "set", Some(json!(1)), json!([1, 2])).is_err());
    assert_eq!(
        map_one(
            "$.a",
            "rename",
            Some(json!("$.b.c")),
            json!({"a": 1, "x": 2})
        ),
        Ok(json!({"b": {"c": 1}, "x": 2}))
    );
    assert_eq!(
        map_one("$.a", "rename", Some(json!("$.b")), json!({"x": 2})),
        Ok(json!({"x": 2}))
    );
    assert_eq!(
        map_one("$.a", "remove", None, json!({"a": 1, "b": 2})),
        Ok(json!({"b": 2}))
    );
    assert_eq!(
        map_one("$.a[0]", "remove", None, json!({"a": [1, 2]})),
        Ok(json!({"a": [2]}))
    );
    assert_eq!(map_one("$.q", "remove", None, json!(3)), Ok(json!(3)));
}

#[test]
fn flat_map_splits_arrays() {
    let d = with_ops(json!([{"type": "flat_map", "field": "$.items"}]));
    let r = rec(json!({"o": 1, "items": [{"sku": "a"}, {"sku": "b"}]}), 0, 1);
    let (out, effects) = one(&d, r.clone());
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].payload, json!({"o": 1, "items": {"sku": "a"}}));
    assert_eq!(out[1].payload, json!({"o": 1, "items": {"sku": "b"}}));
    assert_eq!(out[1].origin, format!("{}/1", r.origin));
    assert_eq!(effects, Effects::default());
    let (out, effects) = one(&d, rec(json!({"items": []}), 0, 1));
    assert!(out.is_empty());
    assert_eq!(effects.filtered, 1);
    let (_, effects) = one(&d, rec(json!({}), 0, 1));
    assert_eq!(effects.filtered, 1);
    let (out, effects) = one(&d, rec(json!({"items": 3}), 0, 1));
    assert!(out.is_empty());
    assert_eq!(effects.errors[0].message, "$.items is not an array");
    let whole = with_ops(json!([{"type": "flat_map", "field": "$"},
                                {"type": "flat_map", "field": "$"}]));
    let (out, _) = one(&whole, rec(json!([[1, 2], [3]]), 0, 1));
    assert_eq!(
        out.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        [json!(1), json!(2), json!(3)]
    );
    assert!(out[2].origin.ends_with("/1/0"));
}

#[test]
fn enrich_reads_keys_and_merges() {
    let d = with_ops(json!([
        {"type": "enrich", "from": "entity_state", "entity_id_field": "$.c", "into": "$.x.customer"},
        {"type": "enrich", "from": "projection", "name": "revenue", "key_field": "@entity_id",
         "into": "$.rev"}
    ]));
    let (Operator::Enrich(a), Operator::Enrich(b)) = (&d.operators[0], &d.operators[1]) else {
        panic!("enrich");
    };
    let key = |payload: Value| a.lookup_key(&rec(payload, 0, 1));
    assert_eq!(key(json!({"c": "u-1"})).as_deref(), Some("u-1"));
    assert_eq!(key(json!({"c": 12})).as_deref(), Some("12"));
    assert_eq!(key(json!({"c": true})).as_deref(), Some("true"));
    assert_eq!(key(json!({"c": null})), None);
    assert_eq!(key(json!({"c": {}})), None);
    assert_eq!(key(json!({})), None);
    assert_eq!(b.lookup_key(&rec(json!({}), 0, 4)).as_deref(), Some("e-4"));
    let mut r = rec(json!({"c": "u"}), 0, 1);
    a.merge(&mut r, Some(json!({"tier": "gold"})));
    assert_eq!(
        r.payload,
        json!({"c": "u", "x": {"customer": {"tier": "gold"}}})
    );
    b.merge(&mut r, None);
    assert_eq!(r.payload["rev"], Value::Null);
    let mut odd = rec(json!([1]), 0, 1);
    assert!(b.try_merge(&mut odd, Some(json!(1))).is_err());
    assert_eq!(odd.payload, json!([1]));
    // The state machine leaves enrich (and branch) records as they are.
    let (out, _) = one(&d, rec(json!({"c": 1}), 0, 1));
    assert_eq!(out[0].payload, json!({"c": 1}));
}

#[test]
fn dedupe_drops_keys_seen_within_the_window() {
    let d = with_ops(json!([{"type": "dedupe", "key_fields": ["$.k", "$.j"], "within_ms": 100}]));
    let mut state = PipelineState::new(&d);
    let records = vec![
        rec(json!({"k": 1}), 0, 1),
        rec(json!({"k": 1, "j": null}), 50, 2),
        rec(json!({"k": 2}), 60, 3),
        rec(json!({"k": 1}), 99, 4),
        rec(json!({"k": 1}), 100, 5),
        rec(json!({"k": 1}), 150, 6),
        rec(json!({"k": "1"}), 150, 7),
    ];
    let (out, effects) = run(&d, &mut state, records);
    let kept: Vec<u64> = out.iter().map(|r| r.source.position).collect();
    assert_eq!(kept, [1, 3, 5, 7]);
    assert_eq!(effects.filtered, 3);
    let back: PipelineState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(back, state);
}

#[test]
fn dedupe_memory_is_bounded() {
    let d = with_ops(json!([{"type": "dedupe", "key_fields": ["$.k"], "within_ms": 1000000}]));
    let mut state = PipelineState::new(&d);
    let records = (0..MAX_KEYS as u64 + 10)
        .map(|i| rec(json!({"k": i}), 0, i))
        .collect();
    let (out, _) = run(&d, &mut state, records);
    assert_eq!(out.len(), MAX_KEYS + 10);
    let OperatorState::Dedupe(seen) = &state.operators[0] else {
        panic!()
    };
    let json = serde_json::to_value(seen).unwrap();
    assert_eq!(json["keys"].as_object().unwrap().len(), MAX_KEYS);
    // The oldest (by time, then key text) were forgotten: key 0 passes again.
    let (out, _) = run(&d, &mut state, vec![rec(json!({"k": 0}), 1, 0)]);
    assert_eq!(out.len(), 1);
}

#[test]
fn throttle_counts_per_key_in_fixed_windows() {
    let d = with_ops(json!([{"type": "throttle", "per_key": ["$.k"], "max": 2, "per_ms": 1000}]));
    let mut state = PipelineState::new(&d);
    let records = vec![
        rec(json!({"k": "a"}), 0, 1),
        rec(json!({"k": "a"}), 10, 2),
        rec(json!({"k": "a"}), 999, 3),
        rec(json!({"k": "b"}), 999, 4),
        rec(json!({"k": "a"}), 1000, 5),
        rec(json!({"k": "a"}), 1500, 6),
        rec(json!({"k": "a"}), 1600, 7),
    ];
    let (out, effects) = run(&d, &mut state, records);
    let kept: Vec<u64> = out.iter().map(|r| r.source.position).collect();
    assert_eq!(kept, [1, 2, 4, 5, 6]);
    assert_eq!(effects.filtered, 2);
    let global = with_ops(json!([{"type": "throttle", "max": 1, "per_ms": 10}]));
    let (out, effects) = run(
        &global,
        &mut PipelineState::new(&global),
        vec![
            rec(json!({"k": 1}), -5, 1),
            rec(json!({"k": 2}), -1, 2),
            rec(json!({}), 0, 3),
        ],
    );
    assert_eq!(
        out.len(),
        2,
        "windows are aligned to the epoch, negative times included"
    );
    assert_eq!(effects.filtered, 1);
}

fn all_aggregations() -> Value {
    json!([
        {"name": "n", "fn": "count"},
        {"name": "n_x", "fn": "count", "field": "$.x"},
        {"name": "sum", "fn": "sum", "field": "$.x"},
        {"name": "avg", "fn": "avg", "field": "$.x"},
        {"name": "min", "fn": "min", "field": "$.x"},
        {"name": "max", "fn": "max", "field": "$.x"},
        {"name": "distinct", "fn": "distinct", "field": "$.x"},
        {"name": "first", "fn": "first", "field": "$.x"},
        {"name": "last", "fn": "last", "field": "$.x"},
        {"name": "p50", "fn": "percentile", "field": "$.x", "p": 50},
        {"name": "p0", "fn": "percentile", "field": "$.x", "p": 0},
        {"name": "p100", "fn": "percentile", "field": "$.x", "p": 100}
    ])
}

#[test]
fn running_reduce_emits_every_update() {
    let d = with_ops(
        json!([{"type": "reduce", "group_by": ["$.g", "@event_type"],
                              "aggregations": all_aggregations()}]),
    );
    let records = vec![
        rec(json!({"g": "a", "x": 5}), 0, 1),
        rec(json!({"g": "a", "x": "str"}), 0, 2),
        rec(json!({"g": "a", "x": -2.5}), 0, 3),
        rec(json!({"g": "a"}), 0, 4),
        rec(json!({"g": "a", "x": 5}), 0, 5),
        rec(json!({"g": "b|c", "x": 1}), 0, 6),
        rec(json!({"x": 1}), 0, 7),
    ];
    let (out, effects) = run(&d, &mut PipelineState::new(&d), records);
    assert_eq!(effects, Effects::default());
    assert_eq!(out.len(), 7);
    assert_eq!(
        out[0].payload,
        json!({"g": "a", "event_type": "t.x", "n": 1, "n_x": 1, "sum": 5,
        "avg": 5.0, "min": 5, "max": 5, "distinct": 1, "first": 5, "last": 5, "p50": 5, "p0": 5,
        "p100": 5})
    );
    assert_eq!(
        out[4].payload,
        json!({"g": "a", "event_type": "t.x", "n": 5, "n_x": 4, "sum": 7.5,
        "avg": 2.5, "min": -2.5, "max": 5, "distinct": 3, "first": 5, "last": 5, "p50": 5,
        "p0": -2.5, "p100": 5})
    );
    assert_eq!(
        out[4].origin,
        format!("{}/group/\"a\"|\"t.x\"", Uuid::from_u128(5))
    );
    assert_eq!(out[4].source.position, 5);
    assert_eq!(out[5].payload["g"], json!("b|c"));
    assert!(out[5].origin.ends_with("/group/\"b%7Cc\"|\"t.x\""));
    assert_eq!(out[6].payload["g"], Value::Null);
    assert_eq!(d.table_key(&out[4]), "\"a\"|\"t.x\"");
    // An empty group reads as null (avg, min, percentile) or zero (sum).
    let (out, _) = one(&d, rec(json!({"g": 1}), 0, 1));
    assert_eq!(out[0].payload["sum"], json!(0));
    assert_eq!(out[0].payload["avg"], Value::Null);
    assert_eq!(out[0].payload["min"], Value::Null);
    assert_eq!(out[0].payload["first"], Value::Null);
    assert_eq!(out[0].payload["p50"], Value::Null);
}

#[test]
fn sums_stay_integers_while_they_fit() {
    let d = with_ops(json!([{"type": "reduce",
        "aggregations": [{"name": "s", "fn": "sum", "field": "$.x"}]}]));
    let mut state = PipelineState::new(&d);
    let sums: Vec<Value> = [
        json!(i64::MAX - 1),
        json!(1),
        json!(1),
        json!(u64::MAX),
        json!(-1),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, x)| {
        run(&d, &mut state, vec![rec(json!({"x": x}), 0, i as u64)]).0[0].payload["s"].clone()
    })
    .collect();
    assert_eq!(sums[0], json!(i64::MAX - 1));
    assert_eq!(sums[1], json!(i64::MAX));
    assert_eq!(sums[2], json!(9_223_372_036_854_775_808_u64));
    assert!(sums[3].is_f64());
    assert!(sums[4].is_f64());
}

#[test]
fn percentiles_use_the_nearest_rank() {
    let d = with_ops(json!([{"type": "reduce", "aggregations": [
        {"name": "p25", "fn": "percentile", "field": "$.x", "p": 25},
        {"name": "p90", "fn": "percentile", "field": "$.x", "p": 90},
        {"name": "p99_9", "fn": "percentile", "field": "$.x", "p": 99.9}]}]));
    let records = [15, 20, 35, 40, 50]
        .iter()
        .enumerate()
        .map(|(i, x)| rec(json!({"x": x}), 0, i as u64))
        .collect();
    let (out, _) = run(&d, &mut PipelineState::new(&d), records);
    assert_eq!(out[4].payload, json!({"p25": 20, "p90": 50, "p99_9": 50}));
}

#[test]
fn bounds_are_operator_errors() {
    let d = with_ops(json!([{"type": "reduce", "group_by": ["$.g"],
        "aggregations": [{"name": "d", "fn": "distinct", "field": "$.x"}, {"name": "n", "fn": "count"}]}]));
    let mut state = PipelineState::new(&d);
    let records = (0..MAX_VALUES_PER_GROUP as u64 + 2)
        .map(|i| rec(json!({"g": 0, "x": i}), 0, i))
        .collect();
    let (out, effects) = run(&d, &mut state, records);
    assert_eq!(out.len(), MAX_VALUES_PER_GROUP);
    assert_eq!(effects.errors.len(), 2);
    assert_eq!(
        out.last().unwrap().payload["n"],
        json!(MAX_VALUES_PER_GROUP)
    );
    // A value already seen still folds in; the failed records were not counted.
    let (out, effects) = run(&d, &mut state, vec![rec(json!({"g": 0, "x": 3}), 0, 1)]);
    assert!(effects.errors.is_empty());
    assert_eq!(out[0].payload["n"], json!(MAX_VALUES_PER_GROUP + 1));

    let d = with_ops(
        json!([{"type": "reduce", "group_by": ["$.g"], "aggregations": [{"name": "n", "fn": "count"}]}]),
    );
    let mut state = PipelineState::new(&d);
    let records = (0..MAX_GROUPS as u64 + 1)
        .map(|i| rec(json!({"g": i}), 0, i))
        .collect();
    let (out, effects) = run(&d, &mut state, records);
    assert_eq!(out.len(), MAX_GROUPS);
    assert_eq!(
        effects.errors,
        [OperatorError {
            operator: 0,
            message: format!("more than {MAX_GROUPS} groups")
        }]
    );
}

fn windowed(window: Value, group_by: Value) -> PipelineDefinition {
    with_ops(
        json!([window, {"type": "reduce", "group_by": group_by, "aggregations": [
        {"name": "n", "fn": "count"}, {"name": "xs", "fn": "sum", "field": "$.x"},
        {"name": "last_pos", "fn": "last", "field": "@position"}]}]),
    )
}

fn origins(out: &[Record]) -> Vec<String> {
    out.iter().map(|r| r.origin.clone()).collect()
}

#[test]
fn tumbling_windows_close_with_the_watermark() {
    let d = windowed(
        json!({"type": "window", "kind": "tumbling", "size_ms": 1000}),
        json!(["$.g"]),
    );
    let mut state = PipelineState::new(&d);
    let (out, effects) = run(
        &d,
        &mut state,
        vec![
            rec(json!({"g": "b", "x": 1}), 100, 1),
            rec(json!({"g": "a", "x": 2}), 999, 2),
            rec(json!({"g": "b", "x": 3}), 500, 3),
        ],
    );
    assert!(out.is_empty());
    assert_eq!(effects, Effects::default());
    assert_eq!(state.watermark_ms, Some(999));
    let (out, effects) = run(
        &d,
        &mut state,
        vec![rec(json!({"g": "a", "x": 4}), 1000, 4)],
    );
    assert_eq!(
        origins(&out),
        ["window/0/1000/\"a\"", "window/0/1000/\"b\""]
    );
    assert_eq!(
        out[1].payload,
        json!({"g": "b", "n": 2, "xs": 4, "last_pos": 3,
        "window_start": "1970-01-01T00:00:00.000000Z", "window_end": "1970-01-01T00:00:01.000000Z"})
    );
    assert_eq!(
        out[1].source.position, 3,
        "the source of the last record aggregated"
    );
    assert_eq!(d.table_key(&out[1]), "\"b\"@0-1000");
    assert_eq!(effects, Effects::default());
    let (out, effects) = run(&d, &mut state, vec![rec(json!({"g": "a"}), 999, 5)]);
    assert!(out.is_empty());
    assert_eq!(effects.late, 1);
}

#[test]
fn allowed_lateness_keeps_windows_open() {
    let d = windowed(
        json!({"type": "window", "kind": "tumbling", "size_ms": 10,
                            "allowed_lateness_ms": 5, "time_field": "$.t"}),
        json!([]),
    );
    let mut state = PipelineState::new(&d);
    let (out, effects) = run(
        &d,
        &mut state,
        vec![
            rec(json!({"t": 1}), 0, 1),
            rec(json!({"t": 14}), 0, 2),
            rec(json!({"t": 9}), 0, 3),
            rec(json!({"t": "1970-01-01T00:00:00.015Z"}), 0, 4),
            rec(json!({"t": 2}), 0, 5),
            rec(json!({"t": "nope"}), 0, 6),
            rec(json!({}), 0, 7),
        ],
    );
    assert_eq!(origins(&out), ["window/0/10/"]);
    assert_eq!(out[0].payload["n"], json!(2));
    assert_eq!(effects.late, 1);
    assert_eq!(effects.errors.len(), 2);
    assert!(
        effects.errors.iter().all(|e| e.operator == 0),
        "time errors are the window's"
    );
}

#[test]
fn sliding_windows_overlap() {
    let d = windowed(
        json!({"type": "window", "kind": "sliding", "size_ms": 30, "slide_ms": 10}),
        json!([]),
    );
    let mut state = PipelineState::new(&d);
    let (out, _) = run(
        &d,
        &mut state,
        vec![rec(json!({"x": 1}), 25, 1), rec(json!({"x": 2}), 100, 2)],
    );
    assert_eq!(
        origins(&out),
        ["window/0/30/", "window/10/40/", "window/20/50/"]
    );
    assert!(out.iter().all(|r| r.payload["xs"] == json!(1)));
    // Late for its closed windows, still counted in the open ones.
    let (out, effects) = run(
        &d,
        &mut state,
        vec![rec(json!({"x": 5}), 95, 3), rec(json!({"x": 7}), 200, 4)],
    );
    assert_eq!(effects.late, 0);
    let sums: Vec<(String, Value)> = out
        .iter()
        .map(|r| (r.origin.clone(), r.payload["xs"].clone()))
        .collect();
    assert_eq!(
        sums,
        [
            ("window/80/110/".into(), json!(7)),
            ("window/90/120/".into(), json!(7)),
            ("window/100/130/".into(), json!(2)),
        ]
    );
    let (_, effects) = run(&d, &mut state, vec![rec(json!({"x": 5}), 75, 5)]);
    assert_eq!(effects.late, 1);
}

#[test]
fn sessions_grow_merge_and_close() {
    let d = windowed(
        json!({"type": "window", "kind": "session", "gap_ms": 10, "time_field": "$.t",
                            "allowed_lateness_ms": 20}),
        json!(["$.u"]),
    );
    let mut state = PipelineState::new(&d);
    let (out, _) = run(
        &d,
        &mut state,
        vec![
            rec(json!({"u": 1, "t": 0, "x": 1}), 0, 1),
            rec(json!({"u": 1, "t": 9, "x": 1}), 0, 2),
            rec(json!({"u": 1, "t": 25, "x": 1}), 0, 3),
            rec(json!({"u": 2, "t": 12, "x": 5}), 0, 4),
            // Bridges [0, 19) and [25, 35).
            rec(json!({"u": 1, "t": 17, "x": 1}), 0, 5),
        ],
    );
    assert!(out.is_empty());
    let (out, _) = run(&d, &mut state, vec![rec(json!({"u": 3, "t": 60}), 0, 6)]);
    let got: Vec<(String, Value)> = out
        .iter()
        .map(|r| (r.origin.clone(), r.payload["n"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("window/12/22/2".into(), json!(1)),
            ("window/0/35/1".into(), json!(4))
        ]
    );
    assert_eq!(out[1].payload["last_pos"], json!(5));
    // A gap of exactly gap_ms starts a new session.
    let (out, _) = run(
        &d,
        &mut state,
        vec![
            rec(json!({"u": 3, "t": 70}), 0, 7),
            rec(json!({"u": 3, "t": 100}), 0, 8),
        ],
    );
    assert_eq!(origins(&out), ["window/60/70/3", "window/70/80/3"]);
    let (_, effects) = run(&d, &mut state, vec![rec(json!({"u": 3, "t": 65}), 0, 9)]);
    assert_eq!(effects.late, 1);
}

#[test]
fn advance_closes_windows_by_the_clock() {
    let d = windowed(
        json!({"type": "window", "kind": "tumbling", "size_ms": 1000,
                            "allowed_lateness_ms": 500}),
        json!(["$.g"]),
    );
    let mut state = PipelineState::new(&d);
    run(
        &d,
        &mut state,
        vec![rec(json!({"g": 2}), 10, 1), rec(json!({"g": 1}), 20, 2)],
    );
    let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
    assert_eq!(state.advance(&d, at(1499)), None);
    let (index, out) = state.advance(&d, at(1500)).expect("closed");
    assert_eq!(index, 1);
    assert_eq!(origins(&out), ["window/0/1000/1", "window/0/1000/2"]);
    assert_eq!(state.watermark_ms, Some(1500));
    assert_eq!(state.advance(&d, at(1000)), None);
    assert_eq!(
        state.watermark_ms,
        Some(1500),
        "the watermark never goes back"
    );
    let by_field = windowed(
        json!({"type": "window", "kind": "tumbling", "size_ms": 10,
                                   "time_field": "$.t"}),
        json!([]),
    );
    let mut s = PipelineState::new(&by_field);
    run(&by_field, &mut s, vec![rec(json!({"t": 1}), 0, 1)]);
    assert_eq!(s.advance(&by_field, at(1_000_000)), None);
    assert_eq!(s.watermark_ms, Some(1));
    let plain = with_ops(json!([]));
    assert_eq!(PipelineState::new(&plain).advance(&plain, at(0)), None);
}

#[test]
fn window_results_come_out_in_a_deterministic_order() {
    let d = windowed(
        json!({"type": "window", "kind": "sliding", "size_ms": 20, "slide_ms": 10,
                            "allowed_lateness_ms": 50}),
        json!(["$.g"]),
    );
    let records: Vec<Record> = [("z", 5), ("a", 15), ("m", 1), ("a", 12), ("b", 18)]
        .iter()
        .enumerate()
        .map(|(i, (g, t))| rec(json!({"g": g}), *t, i as u64))
        .collect();
    let mut reversed = records.clone();
    reversed.reverse();
    let mut expected = None;
    for input in [records, reversed] {
        let mut state = PipelineState::new(&d);
        let (early, _) = run(&d, &mut state, input);
        assert!(early.is_empty());
        let (_, out) = state
            .advance(&d, DateTime::from_timestamp_millis(100).unwrap())
            .unwrap();
        let got = origins(&out);
        assert_eq!(
            got,
            [
                "window/-10/10/\"m\"",
                "window/-10/10/\"z\"",
                "window/0/20/\"a\"",
                "window/0/20/\"b\"",
                "window/0/20/\"m\"",
                "window/0/20/\"z\"",
                "window/10/30/\"a\"",
                "window/10/30/\"b\"",
            ]
        );
        match &expected {
            None => expected = Some(got),
            Some(e) => assert_eq!(&got, e),
        }
    }
}

#[test]
fn state_holds_one_entry_per_operator_and_survives_json() {
    let d = with_ops(json!([
        {"type": "filter", "field": "$.a", "op": "exists"},
        {"type": "dedupe", "key_fields": ["$.a"], "within_ms": 10},
        {"type": "throttle", "max": 1, "per_ms": 10},
        {"type": "window", "kind": "session", "gap_ms": 5},
        {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}
    ]));
    let state = PipelineState::new(&d);
    assert_eq!(state.operators.len(), 5);
    assert_eq!(state.operators[0], OperatorState::Stateless);
    assert_eq!(state.operators[3], OperatorState::Stateless);
    assert!(matches!(state.operators[4], OperatorState::Windows(_)));
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<PipelineState>(&text).unwrap(), state);
    // A state written for another definition is reset where it does not fit.
    let mut odd = PipelineState::default();
    let (out, _) = run(&d, &mut odd, vec![rec(json!({"a": 1}), 0, 1)]);
    assert!(out.is_empty());
    assert_eq!(odd.operators.len(), 5);
}

#[test]
fn routes_and_outputs() {
    let d = def(
        json!({"name": "b", "source_event_types": ["order.*"], "operators": [
        {"type": "branch", "routes": [
            {"when": {"field": "$.n", "op": "gt", "value": 10}, "output": {"type": "events", "event_type": "big"}},
            {"when": {"type": "filter", "field": "$.n", "op": "gt", "value": 100}, "output": {"type": "table"}}
        ]}]}),
    );
    assert_eq!(d.output, None);
    let types = |n: i64| -> Vec<Output> {
        d.route(&rec(json!({"n": n}), 0, 1))
            .into_iter()
            .cloned()
            .collect()
    };
    let big = Output::Events {
        event_type: EventType::parse("big").unwrap(),
        entity_id_field: None,
    };
    assert_eq!(types(1000), [big.clone(), Output::Table]);
    assert_eq!(types(50), std::slice::from_ref(&big));
    assert!(types(1).is_empty());
    assert_eq!(d.outputs().len(), 2);
    let mut with_default = d.clone();
    with_default.output = Some(Output::Table);
    assert_eq!(
        with_default.route(&rec(json!({"n": 1}), 0, 1)),
        [&Output::Table]
    );
    assert_eq!(with_default.route(&rec(json!({"n": 50}), 0, 1)), [&big]);
    assert_eq!(
        with_default.outputs(),
        [&big, &Output::Table, &Output::Table]
    );
    let plain = with_ops(json!([]));
    assert_eq!(plain.route(&rec(json!(1), 0, 1)), [&Output::Table]);
    let r = rec(json!(1), 0, 3);
    assert_eq!(plain.table_key(&r), r.origin);
}

#[test]
fn invalid_definitions_name_their_fields() {
    assert_eq!(
        errors(json!({})),
        ["name", "source_event_types", "operators", "output"]
    );
    assert_eq!(
        errors(json!({"name": "a b", "description": "x".repeat(1001),
        "source_event_types": ["ok", "bad type"], "operators": [], "output": {"type": "tabel"},
        "on_error": "retry"})),
        [
            "name",
            "description",
            "source_event_types[1]",
            "output.type",
            "on_error"
        ]
    );
    assert_eq!(
        errors(json!({"name": "x".repeat(129), "source_event_types": [],
        "operators": [], "output": {"type": "events", "event_type": "a..b", "entity_id_field": "x"}})),
        ["name", "output.event_type", "output.entity_id_field"]
    );
    assert_eq!(
        errors(
            json!({"name": "p", "source_event_types": [], "operators": [],
        "output": {"type": "table", "event_type": "x"}})
        ),
        ["output.event_type"]
    );
    assert_eq!(
        errors(json!({"name": "p", "source_event_types": [], "operators": [], "output": 3})),
        ["output"]
    );
    let many: Vec<Value> = (0..=MAX_OPERATORS)
        .map(|_| json!({"type": "filter", "field": "$", "op": "exists"}))
        .collect();
    assert_eq!(op_errors(json!(many)), ["operators"]);
    assert_eq!(
        PipelineSpec::from_json(
            &json!({"name": 1, "operators": {}, "nme": "x", "id": "i", "enabled": true})
        )
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect::<Vec<_>>(),
        ["name", "operators", "nme"]
    );
}

#[test]
fn invalid_operators_name_their_fields() {
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!([3]), vec!["operators[0]"]),
        (json!([{}]), vec!["operators[0].type"]),
        (json!([{"type": "sort"}]), vec!["operators[0].type"]),
        (
            json!([{"type": "filter", "feild": "$.a", "op": "eq", "value": 1}]),
            vec!["operators[0].feild", "operators[0].field"],
        ),
        (
            json!([{"type": "filter", "field": "a", "op": "like", "value": 1}]),
            vec!["operators[0].field", "operators[0].op"],
        ),
        (
            json!([{"type": "filter", "field": "$.a", "op": "eq"}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "filter", "field": "$.a", "op": "in", "value": 1}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "filter", "field": "$.a", "op": "gt", "value": true}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "filter", "field": "$.a", "op": "exists", "value": 1}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "map", "field": "@entity_id", "transform": "uppercase"}]),
            vec!["operators[0].field"],
        ),
        (
            json!([{"type": "map", "field": "$", "transform": "remove"}]),
            vec!["operators[0].field"],
        ),
        (
            json!([{"type": "map", "field": "$.a", "transform": "uppercase", "value": 1}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "map", "field": "$.a", "transform": "multiply", "value": "2"}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "map", "field": "$.a", "transform": "add"}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "map", "field": "$.a", "transform": "set"}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "map", "field": "$.a", "transform": "rename", "value": "@id"}]),
            vec!["operators[0].value"],
        ),
        (
            json!([{"type": "map", "field": "$.a", "transform": "reverse"}]),
            vec!["operators[0].transform"],
        ),
        (
            json!([{"type": "flat_map", "field": "@id"}]),
            vec!["operators[0].field"],
        ),
        (
            json!([{"type": "enrich", "from": "entity_state", "into": "$"}]),
            vec!["operators[0].entity_id_field", "operators[0].into"],
        ),
        (
            json!([{"type": "enrich", "from": "projection", "name": "Bad", "entity_id_field": "$.a", "into": "$.x"}]),
            vec![
                "operators[0].entity_id_field",
                "operators[0].name",
                "operators[0].key_field",
            ],
        ),
        (
            json!([{"type": "enrich", "from": "cache", "into": "$.x"}]),
            vec!["operators[0].from"],
        ),
        (
            json!([{"type": "dedupe", "key_fields": [], "within_ms": 0}]),
            vec!["operators[0].key_fields", "operators[0].within_ms"],
        ),
        (
            json!([{"type": "dedupe", "key_fields": ["$.a", "b"], "within_ms": 2_592_000_001_u64}]),
            vec!["operators[0].key_fields[1]", "operators[0].within_ms"],
        ),
        (
            json!([{"type": "throttle", "max": 0, "per_ms": 1.5}]),
            vec!["operators[0].max", "operators[0].per_ms"],
        ),
        (
            json!([{"type": "throttle", "per_key": "$.a", "max": 1, "per_ms": 1}]),
            vec!["operators[0].per_key"],
        ),
        (
            json!([{"type": "window", "kind": "tumbling", "size_ms": 10, "slide_ms": 5, "gap_ms": 1},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[0].slide_ms", "operators[0].gap_ms"],
        ),
        (
            json!([{"type": "window", "kind": "sliding", "size_ms": 10, "slide_ms": 20},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[0].slide_ms"],
        ),
        (
            json!([{"type": "window", "kind": "sliding", "size_ms": 10001, "slide_ms": 10},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[0].slide_ms"],
        ),
        (
            json!([{"type": "window", "kind": "sliding", "size_ms": 10},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[0].slide_ms"],
        ),
        (
            json!([{"type": "window", "kind": "session", "size_ms": 10, "allowed_lateness_ms": -1,
                 "time_field": "@position"},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec![
                "operators[0].gap_ms",
                "operators[0].size_ms",
                "operators[0].allowed_lateness_ms",
                "operators[0].time_field",
            ],
        ),
        (
            json!([{"type": "window", "kind": "hopping"},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[0].kind"],
        ),
        (
            json!([{"type": "window", "kind": "tumbling", "size_ms": 10}]),
            vec!["operators[0]"],
        ),
        (
            json!([{"type": "window", "kind": "tumbling", "size_ms": 10},
                {"type": "filter", "field": "$", "op": "exists"},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[0]"],
        ),
        (
            json!([{"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[1]"],
        ),
        (
            json!([{"type": "window", "kind": "tumbling", "size_ms": 10},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]},
                {"type": "window", "kind": "tumbling", "size_ms": 10},
                {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec!["operators[2]", "operators[3]"],
        ),
        (
            json!([{"type": "reduce", "aggregations": []}]),
            vec!["operators[0].aggregations"],
        ),
        (
            json!([{"type": "reduce"}]),
            vec!["operators[0].aggregations"],
        ),
        (
            json!([{"type": "reduce", "group_by": ["$.a.id", "$.b.id", "$", "$.x[0]", "$.window_end"],
                 "aggregations": [{"name": "n", "fn": "count"}]}]),
            vec![
                "operators[0].group_by[1]",
                "operators[0].group_by[2]",
                "operators[0].group_by[3]",
                "operators[0].group_by[4]",
            ],
        ),
        (
            json!([{"type": "reduce", "group_by": ["@entity_id"], "aggregations": [
                {"name": "n", "fn": "count"}, {"name": "n", "fn": "count"},
                {"name": "entity_id", "fn": "count"}, {"name": "window_start", "fn": "count"},
                {"name": "bad-name", "fn": "count"}, {"name": "s", "fn": "sum"},
                {"name": "p", "fn": "percentile", "field": "$.x"},
                {"name": "q", "fn": "max", "field": "$.x", "p": 5},
                {"name": "r", "fn": "percentile", "field": "$.x", "p": 101},
                {"name": "t", "fn": "median", "field": "$.x"},
                {"name": "u", "fn": "count", "feild": "$.x"},
                3]}]),
            vec![
                "operators[0].aggregations[1].name",
                "operators[0].aggregations[2].name",
                "operators[0].aggregations[3].name",
                "operators[0].aggregations[4].name",
                "operators[0].aggregations[5].field",
                "operators[0].aggregations[6].p",
                "operators[0].aggregations[7].p",
                "operators[0].aggregations[8].p",
                "operators[0].aggregations[9].fn",
                "operators[0].aggregations[10].feild",
                "operators[0].aggregations[11]",
            ],
        ),
        (
            json!([{"type": "branch", "routes": [{"when": {"field": "$.a", "op": "eq", "value": 1},
                 "output": {"type": "table"}}]}, {"type": "filter", "field": "$", "op": "exists"}]),
            vec!["operators[0]"],
        ),
        (
            json!([{"type": "branch", "routes": []}]),
            vec!["operators[0].routes"],
        ),
        (
            json!([{"type": "branch", "routes": [
                {"when": {"field": "$.a", "op": "eq", "value": 1}, "output": {"type": "table"}},
                {"when": {"field": "$.a", "op": "is", "value": 1},
                 "output": {"type": "events", "event_type": ".bad"}, "extra": 1},
                {"output": {"type": "table"}},
                {"when": {"type": "map", "field": "$.a", "op": "exists"}, "output": {}}]}]),
            vec![
                "operators[0].routes[1].extra",
                "operators[0].routes[1].when.op",
                "operators[0].routes[1].output.event_type",
                "operators[0].routes[2].when",
                "operators[0].routes[3].when.type",
                "operators[0].routes[3].output.type",
            ],
        ),
    ];
    for (ops, expected) in cases {
        assert_eq!(op_errors(ops.clone()), expected, "{ops}");
    }
    let routes: Vec<Value> = (0..=MAX_ROUTES)
        .map(|_| json!({"when": {"field": "$", "op": "exists"}, "output": {"type": "table"}}))
        .collect();
    assert_eq!(
        op_errors(json!([{"type": "branch", "routes": routes}])),
        ["operators[0].routes"]
    );
    let unknown = PipelineDefinition::from_json(&json!({"name": "p", "source_event_types": [],
        "operators": [{"type": "filter", "feild": "$.a", "field": "$.a", "op": "exists"}],
        "output": {"type": "table"}}))
    .unwrap_err();
    assert!(
        unknown[0].message.starts_with("unknown member 'feild'"),
        "{}",
        unknown[0].message
    );
}

fn every_operator() -> Value {
    json!({"name": "all.ops:v1", "description": "every operator",
        "source_event_types": ["order.*", "payment.received", "order.*"],
        "operators": [
            {"type": "filter", "field": "$.customer.tier", "op": "in", "value": ["gold", 1.5, null]},
            {"type": "filter", "field": "$.x", "op": "exists"},
            {"type": "map", "field": "$.name", "transform": "trim"},
            {"type": "map", "field": "$.n", "transform": "multiply", "value": 0.1},
            {"type": "map", "field": "$.a.b", "transform": "set", "value": {"deep": [1, "x"]}},
            {"type": "map", "field": "$.old", "transform": "rename", "value": "$.new[0]"},
            {"type": "flat_map", "field": "$.items"},
            {"type": "enrich", "from": "entity_state", "entity_id_field": "$.customer.id", "into": "$.customer.state"},
            {"type": "enrich", "from": "projection", "name": "revenue", "key_field": "@entity_id", "into": "$.rev"},
            {"type": "dedupe", "key_fields": ["$.id", "@event_type"], "within_ms": 60000},
            {"type": "throttle", "per_key": [], "max": 5, "per_ms": 1000},
            {"type": "window", "kind": "sliding", "size_ms": 60000, "slide_ms": 10000,
             "allowed_lateness_ms": 5000, "time_field": "$.at"},
            {"type": "reduce", "group_by": ["$.customer.tier", "@entity_id"], "aggregations": [
                {"name": "orders", "fn": "count"},
                {"name": "p95", "fn": "percentile", "field": "$.amount", "p": 95.5}]},
            {"type": "branch", "routes": [
                {"when": {"field": "$.orders", "op": "gte", "value": 10},
                 "output": {"type": "events", "event_type": "customer.busy", "entity_id_field": "$.entity_id"}}]}
        ],
        "output": {"type": "table"},
        "on_error": "pause"})
}

#[test]
fn definitions_round_trip_through_their_canonical_json() {
    let d = def(every_operator());
    assert_eq!(d.source.to_strings(), ["order.*", "payment.received"]);
    assert_eq!(d.on_error, OnError::Pause);
    let json = d.to_json();
    assert_eq!(def(json.clone()), d);
    assert_eq!(def(json.clone()).to_json(), json);
    let minimal = def(
        json!({"name": "m", "source_event_types": [], "operators": [],
                             "output": {"type": "table"}}),
    );
    assert_eq!(minimal.on_error, OnError::Skip);
    assert_eq!(
        minimal.to_json(),
        json!({"name": "m", "source_event_types": [], "operators": [],
        "output": {"type": "table"}, "on_error": "skip"})
    );
    let session = def(
        json!({"name": "s", "source_event_types": [], "output": {"type": "table"},
        "operators": [{"type": "window", "kind": "session", "gap_ms": 5},
                      {"type": "reduce", "aggregations": [{"name": "n", "fn": "count"}]}]}),
    );
    assert_eq!(
        session.to_json()["operators"][0],
        json!({"type": "window", "kind": "session",
        "gap_ms": 5, "allowed_lateness_ms": 0, "time_field": "@timestamp"})
    );
    assert_eq!(def(session.to_json()), session);
}

// ----- properties -----

fn operator_strategy() -> impl Strategy<Value = Value> {
    let path = prop::sample::select(vec![
        "$",
        "$.a",
        "$.a.b",
        "$.items[3].sku",
        "@entity_id",
        "@timestamp",
        "$.x-y_z",
    ]);
    let payload_path = prop::sample::select(vec!["$.a", "$.a.b", "$.items[3].sku", "$.x-y_z"]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
    ];
    let ms = 1u64..=MAX_DURATION_MS;
    prop_oneof![
        (
            path.clone(),
            prop::sample::select(vec!["eq", "ne", "contains"]),
            leaf.clone()
        )
            .prop_map(|(f, op, v)| json!({"type": "filter", "field": f, "op": op, "value": v})),
        (path.clone(), any::<i32>())
            .prop_map(|(f, v)| json!({"type": "filter", "field": f, "op": "gte", "value": v})),
        (path.clone(), prop::collection::vec(leaf.clone(), 0..3))
            .prop_map(|(f, v)| json!({"type": "filter", "field": f, "op": "in", "value": v})),
        (path.clone(), prop::option::of(any::<bool>())).prop_map(|(f, v)| match v {
            Some(v) => json!({"type": "filter", "field": f, "op": "exists", "value": v}),
            None => json!({"type": "filter", "field": f, "op": "exists"}),
        }),
        (
            payload_path.clone(),
            prop::sample::select(vec!["uppercase", "lowercase", "trim", "remove"])
        )
            .prop_map(|(f, t)| json!({"type": "map", "field": f, "transform": t})),
        (
            payload_path.clone(),
            prop::sample::select(vec!["add", "multiply"]),
            any::<f64>().prop_filter("finite", |f| f.is_finite())
        )
            .prop_map(|(f, t, v)| json!({"type": "map", "field": f, "transform": t, "value": v})),
        (payload_path.clone(), leaf)
            .prop_map(|(f, v)| json!({"type": "map", "field": f, "transform": "set", "value": v})),
        (payload_path.clone(), payload_path.clone()).prop_map(
            |(f, v)| json!({"type": "map", "field": f, "transform": "rename", "value": v})
        ),
        (prop::collection::vec(path.clone(), 1..3), ms.clone())
            .prop_map(|(k, w)| json!({"type": "dedupe", "key_fields": k, "within_ms": w})),
        (prop::collection::vec(path, 0..3), 1u64..1000, ms)
            .prop_map(|(k, m, p)| json!({"type": "throttle", "per_key": k, "max": m, "per_ms": p})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_valid_definition_round_trips(ops in prop::collection::vec(operator_strategy(), 0..6),
                                        pause in any::<bool>()) {
        let d = def(json!({"name": "p", "source_event_types": ["a.*"], "operators": ops,
            "output": {"type": "events", "event_type": "out", "entity_id_field": "$.a"},
            "on_error": if pause { "pause" } else { "skip" }}));
        prop_assert_eq!(def(d.to_json()), d);
    }
}

/// Times (ms) and group values of a generated stream.
fn stream() -> impl Strategy<Value = Vec<(i64, u8, i64)>> {
    prop::collection::vec((-500i64..2000, 0u8..3, -5i64..5), 0..40)
}

fn records_of(items: &[(i64, u8, i64)]) -> Vec<Record> {
    items
        .iter()
        .enumerate()
        .map(|(i, (t, g, x))| rec(json!({"t": t, "g": g, "x": x}), 0, i as u64 + 1))
        .collect()
}

fn contributions(out: &[Record]) -> Vec<(i64, i64, String, u64)> {
    // (start, end, group, count) per result.
    out.iter()
        .map(|r| {
            let parts: Vec<&str> = r.origin.splitn(4, '/').collect();
            (
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
                parts[3].to_owned(),
                r.payload["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn close_all(d: &PipelineDefinition, state: &mut PipelineState) -> Vec<Record> {
    // Moves the watermark far ahead with a record of another group.
    let (out, _) = run(
        d,
        state,
        vec![rec(json!({"t": 1_000_000_000, "g": 99, "x": 0}), 0, 0)],
    );
    out
}

fn window_def(window: Value) -> PipelineDefinition {
    let mut window = window;
    window["type"] = json!("window");
    window["time_field"] = json!("$.t");
    with_ops(
        json!([window, {"type": "reduce", "group_by": ["$.g"], "aggregations": [
        {"name": "n", "fn": "count"}, {"name": "s", "fn": "sum", "field": "$.x"},
        {"name": "first", "fn": "first", "field": "$.x"}, {"name": "last", "fn": "last", "field": "@position"},
        {"name": "d", "fn": "distinct", "field": "$.x"}, {"name": "p", "fn": "percentile", "field": "$.x", "p": 50}]}]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With no lateness in play, every record lands in exactly the windows its time says.
    #[test]
    fn tumbling_and_sliding_put_records_in_their_windows(
        items in stream(), size in 1i64..300, slides in 1i64..5,
    ) {
        let mut sorted = items.clone();
        sorted.sort_by_key(|(t, _, _)| *t);
        for sliding in [false, true] {
            let slide = (size / slides).max(1);
            let d = if sliding {
                window_def(json!({"kind": "sliding", "size_ms": size, "slide_ms": slide}))
            } else {
                window_def(json!({"kind": "tumbling", "size_ms": size}))
            };
            let mut state = PipelineState::new(&d);
            let (mut out, effects) = run(&d, &mut state, records_of(&sorted));
            prop_assert_eq!(effects.late, 0);
            out.extend(close_all(&d, &mut state));
            let got: std::collections::BTreeMap<(i64, i64, String), u64> = contributions(&out)
                .into_iter()
                .filter(|(_, _, g, _)| g != "99")
                .map(|(s, e, g, n)| ((s, e, g), n))
                .collect();
            let mut expected = std::collections::BTreeMap::new();
            for (t, g, _) in &sorted {
                let windows: Vec<(i64, i64)> = if sliding {
                    let first = (t - size).div_euclid(slide) * slide;
                    (0..).map(|k| first + k * slide).skip_while(|s| s + size <= *t)
                        .take_while(|s| s <= t).map(|s| (s, s + size)).collect()
                } else {
                    let s = t.div_euclid(size) * size;
                    vec![(s, s + size)]
                };
                if sliding && size % slide == 0 {
                    prop_assert_eq!(windows.len() as i64, size / slide);
                }
                if !sliding {
                    prop_assert_eq!(windows.len(), 1);
                }
                for (s, e) in windows {
                    *expected.entry((s, e, g.to_string())).or_insert(0u64) += 1;
                }
            }
            prop_assert_eq!(got, expected);
        }
    }

    /// Sessions split exactly where consecutive times of a group are gap_ms or more apart,
    /// whatever order the records come in (with enough allowed lateness).
    #[test]
    fn sessions_split_at_gaps_in_any_order(items in stream(), gap in 1i64..200) {
        let d = window_def(json!({"kind": "session", "gap_ms": gap, "allowed_lateness_ms": 100_000}));
        let mut state = PipelineState::new(&d);
        let (mut out, effects) = run(&d, &mut state, records_of(&items));
        prop_assert_eq!(effects.late, 0);
        prop_assert!(effects.errors.is_empty());
        out.extend(close_all(&d, &mut state));
        let mut got: Vec<(i64, i64, String, u64)> = contributions(&out)
            .into_iter()
            .filter(|(_, _, g, _)| g != "99")
            .collect();
        got.sort();
        let mut expected = Vec::new();
        for g in 0u8..3 {
            let mut times: Vec<i64> = items.iter().filter(|i| i.1 == g).map(|i| i.0).collect();
            times.sort();
            let mut i = 0;
            while i < times.len() {
                let mut j = i;
                while j + 1 < times.len() && times[j + 1] - times[j] < gap {
                    j += 1;
                }
                expected.push((times[i], times[j] + gap, g.to_string(), (j - i + 1) as u64));
                i = j + 1;
            }
        }
        expected.sort();
        prop_assert_eq!(got, expected);
    }

    /// Stopping anywhere, writing the state to JSON text and reading it back changes nothing:
    /// the same results, the same effects, the same final state.
    #[test]
    fn checkpoints_resume_exactly(
        items in stream(),
        cuts in prop::collection::vec(0usize..40, 0..4),
        kind in 0u8..4,
        lateness in prop::sample::select(vec![0i64, 50, 300]),
    ) {
        let d = match kind {
            0 => window_def(json!({"kind": "tumbling", "size_ms": 100, "allowed_lateness_ms": lateness})),
            1 => window_def(json!({"kind": "sliding", "size_ms": 100, "slide_ms": 30, "allowed_lateness_ms": lateness})),
            2 => window_def(json!({"kind": "session", "gap_ms": 40, "allowed_lateness_ms": lateness})),
            _ => with_ops(json!([
                {"type": "dedupe", "key_fields": ["$.x"], "within_ms": 50},
                {"type": "throttle", "per_key": ["$.g"], "max": 2, "per_ms": 100},
                {"type": "reduce", "group_by": ["$.g"], "aggregations": [
                    {"name": "n", "fn": "count"}, {"name": "a", "fn": "avg", "field": "$.x"},
                    {"name": "d", "fn": "distinct", "field": "$.x"}, {"name": "f", "fn": "first", "field": "$.t"},
                    {"name": "p", "fn": "percentile", "field": "$.x", "p": 90}]}])),
        };
        // Dedupe and throttle read the source time: give the records increasing ones.
        let records: Vec<Record> = records_of(&items)
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| { r.source.timestamp = DateTime::from_timestamp_millis(i as i64 * 20).unwrap(); r })
            .collect();
        let mut whole = PipelineState::new(&d);
        let (out, effects) = run(&d, &mut whole, records.clone());
        let mut resumed = PipelineState::new(&d);
        let (mut out2, mut effects2) = (Vec::new(), Effects::default());
        for (i, r) in records.into_iter().enumerate() {
            if cuts.contains(&i) {
                let text = serde_json::to_string(&resumed).unwrap();
                resumed = serde_json::from_str(&text).unwrap();
            }
            let (o, e) = run(&d, &mut resumed, vec![r]);
            out2.extend(o);
            effects2.filtered += e.filtered;
            effects2.late += e.late;
            effects2.errors.extend(e.errors);
        }
        prop_assert_eq!(&out2, &out);
        prop_assert_eq!(effects2, effects);
        let text = serde_json::to_string(&resumed).unwrap();
        prop_assert_eq!(serde_json::from_str::<PipelineState>(&text).unwrap(), whole.clone());
        prop_assert_eq!(resumed, whole);
    }

    /// A record is late exactly when every window it belongs to has closed.
    #[test]
    fn late_records_are_counted(items in stream(), lateness in 0i64..200) {
        let d = window_def(json!({"kind": "tumbling", "size_ms": 100, "allowed_lateness_ms": lateness}));
        let mut state = PipelineState::new(&d);
        let (_, effects) = run(&d, &mut state, records_of(&items));
        let mut watermark: Option<i64> = None;
        let mut late = 0;
        for (t, _, _) in &items {
            let end = t.div_euclid(100) * 100 + 100;
            if watermark.is_some_and(|w| end + lateness <= w) {
                late += 1;
            }
            watermark = Some(watermark.map_or(*t, |w| w.max(*t)));
        }
        prop_assert_eq!(effects.late, late);
        prop_assert_eq!(state.watermark_ms, watermark);
    }
}

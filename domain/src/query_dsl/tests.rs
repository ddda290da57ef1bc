use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::values::{EntityId, EventId, EventType, Position, TenantId, Version};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-06-15T12:00:00.123456789Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid time")
        .with_timezone(&Utc)
}

fn parse(body: Value) -> Result<DslQuery, DslErrors> {
    DslQuery::parse(&body, now())
}

fn parsed(body: Value) -> DslQuery {
    match parse(body.clone()) {
        Ok(q) => q,
        Err(e) => panic!("{body} should parse, got {e:?}"),
    }
}

fn cond(where_: Value) -> Condition {
    parsed(json!({ "where": where_ }))
        .condition
        .expect("a condition")
}

fn errors(body: Value) -> DslErrors {
    match parse(body.clone()) {
        Ok(q) => panic!("{body} should fail, got {q:?}"),
        Err(e) => e,
    }
}

/// The member paths of the errors, in order.
fn error_paths(body: Value) -> Vec<String> {
    errors(body).into_iter().map(|(at, _)| at).collect()
}

/// The single error of a body with only a `where`.
fn where_error(where_: Value) -> (String, String) {
    let mut e = errors(json!({ "where": where_ }));
    assert_eq!(e.len(), 1, "one error expected: {e:?}");
    e.remove(0)
}

fn key(k: &str) -> PathSegment {
    PathSegment::Key(k.into())
}

fn payload(path: &[PathSegment]) -> DslField {
    DslField::Payload(path.to_vec())
}

fn field(text: &str) -> DslField {
    DslField::parse(text).expect("valid field")
}

const ID: &str = "0190f1a2-3b4c-7d5e-8f60-718293a4b5c6";

fn event(payload: &str, metadata: Option<&str>) -> Event {
    Event {
        id: EventId::new(Uuid::parse_str(ID).expect("uuid")),
        tenant_id: TenantId::default_tenant(),
        entity_id: EntityId::parse("order-1").expect("entity"),
        event_type: EventType::parse("order.placed").expect("type"),
        version: Version::new(3),
        position: Position::new(42),
        timestamp: time("2024-06-01T10:00:00.000001Z"),
        payload: RawValue::from_string(payload.to_owned()).expect("json"),
        metadata: metadata.map(|m| RawValue::from_string(m.to_owned()).expect("json")),
    }
}

// ---------------------------------------------------------------------------------------------
// Fields
// ---------------------------------------------------------------------------------------------

#[test]
fn fields_parse_and_print_canonically() {
    let cases = [
        ("id", DslField::Id),
        ("entity_id", DslField::EntityId),
        ("event_type", DslField::EventType),
        ("timestamp", DslField::Timestamp),
        ("position", DslField::Position),
        ("version", DslField::Version),
        ("payload", payload(&[])),
        ("payload.a.b", payload(&[key("a"), key("b")])),
        (
            "payload.items[0].sku",
            payload(&[key("items"), PathSegment::Index(0), key("sku")]),
        ),
        (
            "payload.items[0]",
            payload(&[key("items"), PathSegment::Index(0)]),
        ),
        ("payload[3]", payload(&[PathSegment::Index(3)])),
        (
            "payload.m[1][2]",
            payload(&[key("m"), PathSegment::Index(1), PathSegment::Index(2)]),
        ),
        ("payload.a b-c/é\"", payload(&[key("a b-c/é\"")])),
        ("metadata", DslField::Metadata(vec![])),
        ("metadata.x", DslField::Metadata(vec![key("x")])),
    ];
    for (text, expected) in cases {
        assert_eq!(DslField::parse(text), Ok(expected.clone()), "{text}");
        assert_eq!(expected.name(), text);
    }
    // Decimal indexes with leading zeros are read, and printed without them.
    assert_eq!(field("payload.a[007]").name(), "payload.a[7]");
}

#[test]
fn bad_fields_are_errors_naming_them() {
    for text in [
        "foo",
        "",
        "ID",
        "payload.",
        "payload..a",
        "payload.a[x]",
        "payload.a[]",
        "payload.a[-1]",
        "payload.a[0",
        "payload.a]",
        "payload.a[0]b",
        "payloadx",
        "payload a",
        "metadata.",
        "meta.x",
        "payload.a[99999999999999999999999]",
    ] {
        let message = DslField::parse(text).expect_err(text);
        assert!(message.contains(&format!("'{text}'")), "{text}: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing conditions
// ---------------------------------------------------------------------------------------------

#[test]
fn each_operator_parses() {
    let compare = |op, value| Condition::Compare {
        field: payload(&[key("n")]),
        op,
        value,
    };
    let cases = [
        (
            json!(["=", "payload.n", 1]),
            compare(CompareOp::Eq, Literal::Number(1.0)),
        ),
        (
            json!(["!=", "payload.n", "x"]),
            compare(CompareOp::Ne, Literal::String("x".into())),
        ),
        (
            json!([">", "payload.n", 1.5]),
            compare(CompareOp::Gt, Literal::Number(1.5)),
        ),
        (
            json!([">=", "payload.n", -2]),
            compare(CompareOp::Ge, Literal::Number(-2.0)),
        ),
        (
            json!(["<", "payload.n", "b"]),
            compare(CompareOp::Lt, Literal::String("b".into())),
        ),
        (
            json!(["<=", "payload.n", 0]),
            compare(CompareOp::Le, Literal::Number(0.0)),
        ),
        (
            json!(["=", "payload.n", true]),
            compare(CompareOp::Eq, Literal::Bool(true)),
        ),
        (
            json!(["!=", "payload.n", false]),
            compare(CompareOp::Ne, Literal::Bool(false)),
        ),
        (
            json!(["in", "event_type", ["a", "b"]]),
            Condition::In {
                field: DslField::EventType,
                values: vec![Literal::String("a".into()), Literal::String("b".into())],
            },
        ),
        (
            json!(["in", "payload.n", [1, "one", true]]),
            Condition::In {
                field: payload(&[key("n")]),
                values: vec![
                    Literal::Number(1.0),
                    Literal::String("one".into()),
                    Literal::Bool(true),
                ],
            },
        ),
        (
            json!(["contains", "entity_id", "der"]),
            Condition::Contains {
                field: DslField::EntityId,
                value: "der".into(),
            },
        ),
        (
            json!(["exists", "metadata.trace"]),
            Condition::Exists {
                field: DslField::Metadata(vec![key("trace")]),
            },
        ),
        (
            json!(["exists", "version"]),
            Condition::Exists {
                field: DslField::Version,
            },
        ),
        (
            json!(["=", "position", 7]),
            Condition::Compare {
                field: DslField::Position,
                op: CompareOp::Eq,
                value: Literal::Number(7.0),
            },
        ),
        (
            json!(["=", "payload.when", "now"]),
            Condition::Compare {
                field: payload(&[key("when")]),
                op: CompareOp::Eq,
                value: Literal::String("now".into()),
            },
        ),
        (
            json!(["=", "payload.when", "2024-01-01T00:00:00Z"]),
            Condition::Compare {
                field: payload(&[key("when")]),
                op: CompareOp::Eq,
                value: Literal::String("2024-01-01T00:00:00Z".into()),
            },
        ),
    ];
    for (where_, expected) in cases {
        assert_eq!(cond(where_.clone()), expected, "{where_}");
    }
    let leaf = || json!(["exists", "id"]);
    let exists_id = || Condition::Exists {
        field: DslField::Id,
    };
    assert_eq!(
        cond(json!(["and", leaf(), leaf()])),
        Condition::And(vec![exists_id(), exists_id()])
    );
    assert_eq!(
        cond(json!(["or", leaf()])),
        Condition::Or(vec![exists_id()])
    );
    assert_eq!(
        cond(json!(["not", leaf()])),
        Condition::Not(Box::new(exists_id()))
    );
}

#[test]
fn timestamps_take_times_and_helpers_resolve_against_now() {
    let at = |value: Value| match cond(json!([">=", "timestamp", value])) {
        Condition::Compare {
            value: Literal::Time(t),
            ..
        } => t,
        other => panic!("{other:?}"),
    };
    // `now` has nanoseconds; times are truncated to microseconds.
    assert_eq!(at(json!("now")), time("2024-06-15T12:00:00.123456Z"));
    assert_eq!(
        at(json!({"days_ago": 1})),
        time("2024-06-14T12:00:00.123456Z")
    );
    assert_eq!(
        at(json!({"days_ago": 0})),
        time("2024-06-15T12:00:00.123456Z")
    );
    assert_eq!(
        at(json!({"hours_ago": 2})),
        time("2024-06-15T10:00:00.123456Z")
    );
    assert_eq!(
        at(json!({"hours_ago": 1.5})),
        time("2024-06-15T10:30:00.123456Z")
    );
    assert_eq!(
        at(json!({"days_ago": 0.5})),
        time("2024-06-15T00:00:00.123456Z")
    );
    // 1e-9 hours is 3.6 µs: 12:00:00.123456789 - 0.0000036 = .123453189, truncated.
    assert_eq!(
        at(json!({"hours_ago": 1e-9})),
        time("2024-06-15T12:00:00.123453Z")
    );
    assert_eq!(
        at(json!("2024-01-02T03:04:05.123456789+02:00")),
        time("2024-01-02T01:04:05.123456Z")
    );
    let t = at(json!({"days_ago": 365}));
    assert_eq!(t, time("2024-06-15T12:00:00.123456Z") - Duration::days(365));
    // In `in`, too.
    assert_eq!(
        cond(json!(["in", "timestamp", ["now", {"hours_ago": 1}]])),
        Condition::In {
            field: DslField::Timestamp,
            values: vec![
                Literal::Time(time("2024-06-15T12:00:00.123456Z")),
                Literal::Time(time("2024-06-15T11:00:00.123456Z")),
            ],
        }
    );
}

#[test]
fn condition_errors_name_their_member() {
    let cases: &[(Value, &str, &str)] = &[
        (json!("x"), "where", "must be a condition"),
        (json!([]), "where", "must be a condition"),
        (json!({"=": 1}), "where", "must be a condition"),
        (json!([1, "id"]), "where[0]", "operator must be a string"),
        (
            json!(["like", "id", "x"]),
            "where[0]",
            "unknown operator 'like'",
        ),
        (json!(["and"]), "where", "at least one"),
        (json!(["or"]), "where", "at least one"),
        (json!(["not"]), "where", "exactly one"),
        (json!(["exists"]), "where", "exactly one field"),
        (json!(["=", "id"]), "where", "a field and a value"),
        (json!(["in", "id"]), "where", "a field and a value"),
        (json!(["contains", "id"]), "where", "a field and a value"),
        (json!(["=", 3, "x"]), "where[1]", "must be a field name"),
        (json!(["=", "foo", "x"]), "where[1]", "'foo'"),
        (json!(["exists", "payload..a"]), "where[1]", "'payload..a'"),
        (
            json!(["=", "payload.a", null]),
            "where[2]",
            "[\"exists\", field]",
        ),
        (
            json!(["=", "payload.a", [1]]),
            "where[2]",
            "string, a number or a bool",
        ),
        (
            json!(["=", "payload.a", {"x": 1}]),
            "where[2]",
            "string, a number or a bool",
        ),
        (json!(["=", "entity_id", 1]), "where[2]", "strings"),
        (json!(["=", "event_type", true]), "where[2]", "strings"),
        (json!(["=", "id", "now"]), "where[2]", "\"now\" is a time"),
        (json!(["=", "position", "1"]), "where[2]", "numbers"),
        (json!(["=", "version", false]), "where[2]", "numbers"),
        (json!(["=", "timestamp", 5]), "where[2]", "times"),
        (
            json!(["=", "timestamp", "yesterday"]),
            "where[2]",
            "'yesterday' is not a time",
        ),
        (json!(["=", "timestamp", true]), "where[2]", "times"),
        (json!(["=", "payload.t", "now"]), "", ""), // placeholder: not an error (checked below)
        (
            json!(["=", "payload.t", {"days_ago": 1}]),
            "where[2]",
            "only compared with timestamp",
        ),
        (
            json!(["=", "position", {"hours_ago": 1}]),
            "where[2]",
            "only compared with timestamp",
        ),
        (json!([">", "payload.a", true]), "where[2]", "takes no bool"),
        (
            json!(["<=", "payload.a", false]),
            "where[2]",
            "takes no bool",
        ),
        (
            json!(["contains", "timestamp", "2024"]),
            "where[1]",
            "not for timestamp",
        ),
        (
            json!(["contains", "position", "1"]),
            "where[1]",
            "not for position",
        ),
        (
            json!(["contains", "version", "1"]),
            "where[1]",
            "not for version",
        ),
        (
            json!(["contains", "payload.a", 1]),
            "where[2]",
            "must be a string",
        ),
        (
            json!(["in", "payload.a", "x"]),
            "where[2]",
            "array of values",
        ),
        (json!(["in", "payload.a", []]), "where[2]", "1 to 1000"),
        (
            json!(["in", "payload.a", [1, null]]),
            "where[2][1]",
            "[\"exists\", field]",
        ),
        (
            json!(["in", "entity_id", ["a", 2]]),
            "where[2][1]",
            "strings",
        ),
        (
            json!(["=", "timestamp", {"days_ago": -1}]),
            "where[2].days_ago",
            "non-negative",
        ),
        (
            json!(["=", "timestamp", {"days_ago": "1"}]),
            "where[2].days_ago",
            "non-negative",
        ),
        (
            json!(["=", "timestamp", {"weeks_ago": 1}]),
            "where[2].weeks_ago",
            "unknown member",
        ),
        (json!(["=", "timestamp", {}]), "where[2]", "time helper"),
        (
            json!(["=", "timestamp", {"days_ago": 1, "hours_ago": 1}]),
            "where[2]",
            "time helper",
        ),
        (
            json!(["=", "timestamp", {"days_ago": 1e300}]),
            "where[2].days_ago",
            "too far",
        ),
    ];
    for (where_, at, message) in cases {
        if at.is_empty() {
            continue;
        }
        let (got_at, got_message) = where_error(where_.clone());
        assert_eq!(got_at, *at, "{where_}: {got_message}");
        assert!(got_message.contains(message), "{where_}: {got_message}");
    }
    // A plain string on a payload path is never a time.
    cond(json!(["=", "payload.t", "now"]));
}

#[test]
fn arity_errors_still_check_what_is_there() {
    assert_eq!(
        error_paths(json!({"where": ["not", ["exists", "id"], ["exists", "id"]]})),
        ["where"]
    );
    assert_eq!(
        error_paths(json!({"where": ["not", ["exists", "foo"], 1]})),
        ["where", "where[1][1]"]
    );
    assert_eq!(
        error_paths(json!({"where": ["=", "foo"]})),
        ["where", "where[1]"]
    );
    assert_eq!(
        error_paths(json!({"where": ["exists", "id", "version"]})),
        ["where"]
    );
}

#[test]
fn nested_errors_are_all_reported_with_their_paths() {
    let body = json!({"where": ["and",
        ["=", "entity_id", "ok"],
        ["or", ["=", "foo", 1], ["in", "payload.x", [1, null, [2]]]],
        ["not", ["contains", "position", 3]],
        ["=", "payload.a", null],
        "nonsense"
    ]});
    let e = errors(body);
    let paths: Vec<&str> = e.iter().map(|(at, _)| at.as_str()).collect();
    assert_eq!(
        paths,
        [
            "where[2][1][1]",
            "where[2][2][2][1]",
            "where[2][2][2][2]",
            "where[3][1][1]",
            "where[3][1][2]",
            "where[4][2]",
            "where[5]",
        ],
        "{e:?}"
    );
    // A wrong field still has its value checked (and the reverse).
    assert_eq!(
        error_paths(json!({"where": ["=", "foo", null]})),
        ["where[1]", "where[2]"]
    );
}

#[test]
fn in_takes_at_most_max_in_values() {
    let values: Vec<Value> = (0..MAX_IN_VALUES).map(|i| json!(i)).collect();
    match cond(json!(["in", "payload.n", values])) {
        Condition::In { values, .. } => assert_eq!(values.len(), MAX_IN_VALUES),
        other => panic!("{other:?}"),
    }
    let values: Vec<Value> = (0..=MAX_IN_VALUES).map(|i| json!(i)).collect();
    let (at, message) = where_error(json!(["in", "payload.n", values]));
    assert_eq!(at, "where[2]");
    assert!(message.contains("1 to 1000"), "{message}");
}

/// `["not", ["not", ... ["exists", "id"]]]` with `nots` nots, built without recursion.
fn nested_nots(nots: usize) -> Value {
    let mut value = json!(["exists", "id"]);
    for _ in 0..nots {
        value = Value::Array(vec![json!("not"), value]);
    }
    value
}

/// Takes a nested value apart without recursion (serde_json's drop recurses).
fn dismantle(mut value: Value) {
    let mut stack = Vec::new();
    loop {
        match &mut value {
            Value::Array(items) => stack.append(items),
            Value::Object(map) => {
                let taken = std::mem::take(map);
                stack.extend(taken.into_iter().map(|(_, v)| v));
            }
            _ => {}
        }
        match stack.pop() {
            Some(next) => value = next,
            None => return,
        }
    }
}

#[test]
fn nesting_is_limited_to_max_depth() {
    // `where` is depth 1: 31 nots around a leaf is 32 deep.
    let ok = cond(nested_nots(MAX_DEPTH - 1));
    let mut depth = 1;
    let mut at = &ok;
    while let Condition::Not(inner) = at {
        depth += 1;
        at = inner;
    }
    assert_eq!(depth, MAX_DEPTH);

    let (at, message) = where_error(nested_nots(MAX_DEPTH));
    assert_eq!(at, format!("where{}", "[1]".repeat(MAX_DEPTH)));
    assert!(message.contains("at most 32 deep"), "{message}");
}

#[test]
fn very_deep_nesting_is_an_error_not_a_stack_overflow() {
    // 1 MiB: a parser recursing 5,000 deep would overflow it. The drop is done by hand.
    let worker = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(|| {
            // Not `json!`, which would copy the value recursively.
            let mut map = serde_json::Map::new();
            map.insert("where".into(), nested_nots(5_000));
            let body = Value::Object(map);
            let result = DslQuery::parse(&body, now());
            dismantle(body);
            result
        })
        .expect("thread");
    let e = worker.join().expect("no overflow").expect_err("too deep");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].1.contains("deep"));
}

#[test]
fn nodes_are_limited_to_max_nodes() {
    // An `and` is one node: MAX_NODES - 1 leaves fill the budget exactly.
    let leaves = |n: usize| {
        let mut items = vec![json!("and")];
        items.extend((0..n).map(|_| json!(["exists", "id"])));
        Value::Array(items)
    };
    match cond(leaves(MAX_NODES - 1)) {
        Condition::And(cs) => assert_eq!(cs.len(), MAX_NODES - 1),
        other => panic!("{other:?}"),
    }
    let (at, message) = where_error(leaves(MAX_NODES));
    assert_eq!(at, format!("where[{MAX_NODES}]"));
    assert!(message.contains("1000 nodes"), "{message}");
    // Reported once, however many more there are, and counted across nesting.
    assert_eq!(errors(json!({"where": leaves(50_000)})).len(), 1);
    let nested = json!(["or", leaves(600), leaves(600)]);
    let (at, _) = where_error(nested);
    // 1 `or`, 1 `and` and 600 leaves, 1 `and` and 397 leaves: the 398th is one too many.
    assert_eq!(at, "where[2][398]");
}

// ---------------------------------------------------------------------------------------------
// The body: select, order_by, limit, unknown members
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_body_is_every_event_in_position_order() {
    assert_eq!(
        parsed(json!({})),
        DslQuery {
            select: None,
            condition: None,
            order_by: vec![],
            limit: DEFAULT_LIMIT,
        }
    );
    assert_eq!(
        parsed(json!({"select": null, "where": null, "order_by": null, "limit": null})),
        parsed(json!({}))
    );
}

#[test]
fn bodies_must_be_objects_with_known_members() {
    assert_eq!(error_paths(json!([1])), [""]);
    assert_eq!(error_paths(json!("q")), [""]);
    assert_eq!(
        error_paths(json!({"filter": 1, "limit": 5, "offset": 3})),
        ["filter", "offset"]
    );
}

#[test]
fn select_is_one_to_64_distinct_fields() {
    assert_eq!(
        parsed(json!({"select": ["id", "payload.a", "metadata.x"]})).select,
        Some(vec![
            DslField::Id,
            payload(&[key("a")]),
            field("metadata.x")
        ])
    );
    let all: Vec<String> = (0..MAX_SELECT_FIELDS)
        .map(|i| format!("payload.f{i}"))
        .collect();
    assert_eq!(
        parsed(json!({ "select": all })).select.map(|s| s.len()),
        Some(MAX_SELECT_FIELDS)
    );
    let too_many: Vec<String> = (0..=MAX_SELECT_FIELDS)
        .map(|i| format!("payload.f{i}"))
        .collect();
    assert_eq!(error_paths(json!({ "select": too_many })), ["select"]);
    assert_eq!(error_paths(json!({"select": []})), ["select"]);
    assert_eq!(error_paths(json!({"select": "id"})), ["select"]);
    let e =
        errors(json!({"select": ["id", 3, "foo", "payload.a", "id", "payload.a[0", "payload.a"]}));
    let paths: Vec<&str> = e.iter().map(|(at, _)| at.as_str()).collect();
    assert_eq!(
        paths,
        [
            "select[1]",
            "select[2]",
            "select[4]",
            "select[5]",
            "select[6]"
        ]
    );
    assert!(e[2].1.contains("select[0]"), "{}", e[2].1);
    assert!(e[4].1.contains("select[3]"), "{}", e[4].1);
}

#[test]
fn limit_is_a_whole_number_up_to_max_limit() {
    assert_eq!(parsed(json!({"limit": 1})).limit, 1);
    assert_eq!(parsed(json!({"limit": MAX_LIMIT})).limit, MAX_LIMIT);
    for bad in [
        json!(0),
        json!(MAX_LIMIT + 1),
        json!(-1),
        json!(2.5),
        json!(10.0),
        json!("10"),
        json!(true),
    ] {
        assert_eq!(error_paths(json!({ "limit": bad })), ["limit"], "{bad}");
    }
}

#[test]
fn order_by_takes_fields_objects_or_arrays_of_them() {
    let asc = |field| OrderKey {
        field,
        descending: false,
    };
    let desc = |field| OrderKey {
        field,
        descending: true,
    };
    assert_eq!(
        parsed(json!({"order_by": "timestamp"})).order_by,
        [asc(DslField::Timestamp)]
    );
    assert_eq!(
        parsed(json!({"order_by": {"field": "payload.total", "direction": "desc"}})).order_by,
        [desc(payload(&[key("total")]))]
    );
    assert_eq!(
        parsed(json!({"order_by": {"field": "version"}})).order_by,
        [asc(DslField::Version)]
    );
    assert_eq!(
        parsed(json!({"order_by": [
            "entity_id",
            {"field": "version", "direction": "desc"},
            {"field": "metadata.x", "direction": "asc"}
        ]}))
        .order_by,
        [
            asc(DslField::EntityId),
            desc(DslField::Version),
            asc(field("metadata.x"))
        ]
    );
    assert_eq!(parsed(json!({"order_by": []})).order_by, []);
    let eight: Vec<&str> = ["id"; MAX_ORDER_KEYS].to_vec();
    assert_eq!(parsed(json!({ "order_by": eight })).order_by.len(), 8);
}

#[test]
fn order_by_errors_name_their_member() {
    let cases: &[(Value, &[&str])] = &[
        (json!("foo"), &["order_by"]),
        (json!(3), &["order_by"]),
        (json!({"direction": "desc"}), &["order_by.field"]),
        (json!({"field": 1}), &["order_by.field"]),
        (
            json!({"field": "id", "direction": "down"}),
            &["order_by.direction"],
        ),
        (
            json!({"field": "id", "direction": true}),
            &["order_by.direction"],
        ),
        (
            json!({"field": "id", "nulls": "first"}),
            &["order_by.nulls"],
        ),
        (
            json!(["id", {"field": "x.y", "direction": "up", "z": 1}, [1], "payload."]),
            &[
                "order_by[1].z",
                "order_by[1].field",
                "order_by[1].direction",
                "order_by[2]",
                "order_by[3]",
            ],
        ),
        (json!(vec!["id"; 9]), &["order_by"]),
    ];
    for (order_by, expected) in cases {
        assert_eq!(
            error_paths(json!({ "order_by": order_by })),
            *expected,
            "{order_by}"
        );
    }
}

#[test]
fn errors_from_every_member_are_reported_together() {
    let paths = error_paths(json!({
        "select": ["nope"],
        "where": ["=", "version", "x"],
        "order_by": {"field": "id", "direction": "sideways"},
        "limit": 0,
        "extra": true
    }));
    assert_eq!(
        paths,
        [
            "extra",
            "select[0]",
            "where[2]",
            "order_by.direction",
            "limit"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

#[test]
fn field_values_of_an_event() {
    let e = event(
        r#"{"a":{"b":[1,{"c":null}]},"n":1.0}"#,
        Some(r#"{"trace":"t1"}"#),
    );
    let cases = [
        ("id", Some(json!(ID))),
        ("entity_id", Some(json!("order-1"))),
        ("event_type", Some(json!("order.placed"))),
        ("timestamp", Some(json!("2024-06-01T10:00:00.000001Z"))),
        ("position", Some(json!(42))),
        ("version", Some(json!(3))),
        ("payload.a.b[0]", Some(json!(1))),
        ("payload.a.b[1].c", Some(Value::Null)),
        ("payload.a.b[2]", None),
        ("payload.a.b.c", None),
        ("payload.a.b[0].x", None),
        ("payload.n", Some(json!(1.0))),
        ("payload.z", None),
        ("payload[0]", None),
        ("metadata.trace", Some(json!("t1"))),
        ("metadata", Some(json!({"trace": "t1"}))),
        ("metadata.other", None),
    ];
    for (name, expected) in cases {
        assert_eq!(field_value(&field(name), &e), expected, "{name}");
    }
    assert_eq!(
        field_value(&payload(&[]), &e),
        Some(json!({"a":{"b":[1,{"c":null}]},"n":1.0}))
    );
    let bare = event("[10, [20, 30]]", None);
    assert_eq!(field_value(&field("metadata"), &bare), None);
    assert_eq!(field_value(&field("metadata.x"), &bare), None);
    assert_eq!(field_value(&field("payload[1][0]"), &bare), Some(json!(20)));
}

#[test]
fn matches_follows_the_two_valued_semantics() {
    let order = event(
        r#"{"total": 12.5, "count": 1, "status": "paid", "flag": true, "note": null,
            "items": [{"sku": "A-1", "tags": ["x", "y"]}, {"sku": "B-2", "qty": 2}],
            "matrix": [[1, 2], [3, 4]], "text": "Hello World", "uni": "é", "num_str": "1"}"#,
        Some(r#"{"source": "web"}"#),
    );
    let no_meta = event(r#"{"count": 1.0, "status": 5}"#, None);
    let scalar = event(r#""just text""#, None);
    let cases: &[(&Event, Value, bool)] = &[
        // Built-in fields.
        (&order, json!(["=", "entity_id", "order-1"]), true),
        (&order, json!(["!=", "entity_id", "order-1"]), false),
        (&order, json!(["=", "event_type", "order.placed"]), true),
        (&order, json!(["contains", "event_type", "placed"]), true),
        (&order, json!(["contains", "event_type", "Placed"]), false),
        (&order, json!(["=", "id", ID]), true),
        (&order, json!(["=", "id", ID.to_uppercase()]), false),
        (&order, json!([">", "entity_id", "order-0"]), true),
        (&order, json!(["<", "entity_id", "order-1"]), false),
        (&order, json!(["=", "position", 42]), true),
        (&order, json!(["=", "position", 42.0]), true),
        (&order, json!([">", "position", 41.5]), true),
        (&order, json!(["<=", "version", 3]), true),
        (&order, json!(["<", "version", 3]), false),
        (&order, json!(["in", "version", [1, 2, 3]]), true),
        (&order, json!(["in", "version", [1, 2]]), false),
        (
            &order,
            json!(["=", "timestamp", "2024-06-01T10:00:00.000001Z"]),
            true,
        ),
        (
            &order,
            json!(["=", "timestamp", "2024-06-01T12:00:00.000001+02:00"]),
            true,
        ),
        (
            &order,
            json!([">", "timestamp", "2024-06-01T10:00:00Z"]),
            true,
        ),
        (&order, json!([">", "timestamp", {"days_ago": 1}]), false),
        (&order, json!(["<", "timestamp", {"days_ago": 13}]), true),
        (&order, json!(["<", "timestamp", "now"]), true),
        (&order, json!(["exists", "id"]), true),
        (&order, json!(["exists", "timestamp"]), true),
        (&order, json!(["exists", "payload"]), true),
        (&scalar, json!(["exists", "payload"]), true),
        // Strings, byte-wise.
        (&order, json!(["=", "payload.status", "paid"]), true),
        (&order, json!(["!=", "payload.status", "paid"]), false),
        (&order, json!(["!=", "payload.status", "open"]), true),
        (&order, json!([">", "payload.status", "Paid"]), true),
        (&order, json!([">", "payload.uni", "z"]), true),
        (&order, json!(["=", "payload.num_str", 1]), false),
        (&order, json!(["=", "payload.count", "1"]), false),
        (&order, json!(["!=", "payload.count", "1"]), false),
        (&scalar, json!(["=", "payload", "just text"]), true),
        (&scalar, json!(["contains", "payload", "t t"]), true),
        // Numbers: 1 and 1.0 are the same.
        (&order, json!(["=", "payload.count", 1.0]), true),
        (&no_meta, json!(["=", "payload.count", 1]), true),
        (&order, json!([">=", "payload.total", 12.5]), true),
        (&order, json!([">", "payload.total", 12.5]), false),
        (&order, json!(["<", "payload.total", 100]), true),
        (&order, json!(["!=", "payload.total", 12]), true),
        (&no_meta, json!(["=", "payload.status", "5"]), false),
        (&no_meta, json!(["=", "payload.status", 5]), true),
        // Bools.
        (&order, json!(["=", "payload.flag", true]), true),
        (&order, json!(["!=", "payload.flag", true]), false),
        (&order, json!(["!=", "payload.flag", false]), true),
        (&order, json!(["=", "payload.status", true]), false),
        (&order, json!(["!=", "payload.status", true]), false),
        // Absent: every comparison is false, `!=` included; `not` of it is true.
        (&order, json!(["=", "payload.missing", 1]), false),
        (&order, json!(["!=", "payload.missing", 1]), false),
        (&order, json!(["!=", "payload.missing", "x"]), false),
        (&order, json!(["!=", "payload.missing", false]), false),
        (&order, json!(["not", ["=", "payload.missing", 1]]), true),
        (&order, json!(["not", ["!=", "payload.missing", 1]]), true),
        (
            &order,
            json!(["in", "payload.missing", [1, "x", true]]),
            false,
        ),
        (&order, json!(["contains", "payload.missing", ""]), false),
        (&order, json!(["exists", "payload.missing"]), false),
        (&order, json!(["exists", "payload.status.deeper"]), false),
        (&order, json!(["exists", "payload.items[2]"]), false),
        (&no_meta, json!(["exists", "metadata"]), false),
        (&no_meta, json!(["exists", "metadata.source"]), false),
        (&no_meta, json!(["!=", "metadata.source", "web"]), false),
        (
            &no_meta,
            json!(["not", ["exists", "metadata.source"]]),
            true,
        ),
        // Null is present but equal to nothing.
        (&order, json!(["exists", "payload.note"]), true),
        (&order, json!(["=", "payload.note", "null"]), false),
        (&order, json!(["!=", "payload.note", "null"]), false),
        (&order, json!(["!=", "payload.note", 0]), false),
        // Metadata.
        (&order, json!(["=", "metadata.source", "web"]), true),
        (&order, json!(["exists", "metadata"]), true),
        // Nested arrays and objects.
        (&order, json!(["=", "payload.items[0].sku", "A-1"]), true),
        (&order, json!(["=", "payload.items[1].qty", 2]), true),
        (&order, json!(["exists", "payload.items[0].qty"]), false),
        (&order, json!(["=", "payload.items[0].tags[1]", "y"]), true),
        (&order, json!(["=", "payload.matrix[1][0]", 3]), true),
        (&order, json!(["exists", "payload.matrix[1][2]"]), false),
        (&order, json!(["exists", "payload.items.sku"]), false),
        (&order, json!(["exists", "payload.matrix[0]"]), true),
        (&order, json!(["=", "payload.matrix[0]", 1]), false),
        (&order, json!(["contains", "payload.items", "A-1"]), false),
        (&order, json!(["=", "payload.items", "A-1"]), false),
        // Contains.
        (&order, json!(["contains", "payload.text", "lo Wo"]), true),
        (&order, json!(["contains", "payload.text", "hello"]), false),
        (&order, json!(["contains", "payload.text", ""]), true),
        (&order, json!(["contains", "payload.total", "12"]), false),
        // In.
        (
            &order,
            json!(["in", "payload.status", ["open", "paid"]]),
            true,
        ),
        (&order, json!(["in", "payload.status", ["open", 1]]), false),
        (&order, json!(["in", "payload.count", ["1", 1.0]]), true),
        // Logic.
        (
            &order,
            json!([
                "and",
                ["=", "payload.status", "paid"],
                ["<", "payload.total", 20]
            ]),
            true,
        ),
        (
            &order,
            json!([
                "and",
                ["=", "payload.status", "paid"],
                ["<", "payload.total", 10]
            ]),
            false,
        ),
        (
            &order,
            json!([
                "or",
                ["=", "payload.status", "open"],
                ["exists", "payload.note"]
            ]),
            true,
        ),
        (
            &order,
            json!([
                "or",
                ["=", "payload.status", "open"],
                ["exists", "payload.zzz"]
            ]),
            false,
        ),
        (
            &order,
            json!(["not", ["or", ["=", "payload.status", "open"]]]),
            true,
        ),
        (
            &order,
            json!(["not", ["not", ["exists", "payload.note"]]]),
            true,
        ),
    ];
    for (e, where_, expected) in cases {
        assert_eq!(
            cond(where_.clone()).matches(e),
            *expected,
            "{where_} on {}",
            e.payload.get()
        );
    }
}

#[test]
fn payloads_that_do_not_parse_have_no_fields() {
    // Deeper than serde_json reads into a Value (128), yet valid JSON text.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let raw = RawValue::from_string(deep).expect("raw JSON is held at any depth");
    let mut e = event("{}", None);
    e.payload = raw;
    assert_eq!(field_value(&payload(&[]), &e), None);
    assert!(!cond(json!(["exists", "payload[0]"])).matches(&e));
    assert!(!cond(json!(["!=", "payload[0]", 1])).matches(&e));
    // The whole payload exists all the same.
    assert!(cond(json!(["exists", "payload"])).matches(&e));
}

#[test]
fn directly_built_conditions_are_total() {
    let e = event(r#"{"t":"2024-06-01T10:00:00.000001Z"}"#, None);
    let t = time("2024-06-01T10:00:00.000001Z");
    // A time only holds on timestamp.
    let on = |field| Condition::Compare {
        field,
        op: CompareOp::Eq,
        value: Literal::Time(t),
    };
    assert!(on(DslField::Timestamp).matches(&e));
    assert!(!on(field("payload.t")).matches(&e));
    assert!(!on(DslField::Position).matches(&e));
    // A bool with an order operator holds nowhere; a NaN compares with nothing.
    let e = event(r#"{"b":true,"n":1}"#, None);
    assert!(
        !Condition::Compare {
            field: field("payload.b"),
            op: CompareOp::Ge,
            value: Literal::Bool(true),
        }
        .matches(&e)
    );
    assert!(
        !Condition::Compare {
            field: field("payload.n"),
            op: CompareOp::Ne,
            value: Literal::Number(f64::NAN),
        }
        .matches(&e)
    );
    // Empty `and` / `or` are the identities.
    assert!(Condition::And(vec![]).matches(&e));
    assert!(!Condition::Or(vec![]).matches(&e));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::from),
        (-3i64..4).prop_map(|n| Value::from(n as f64)),
        Just(json!(0.5)),
        prop::sample::select(vec!["", "a", "b", "ab", "1", "é"]).prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn path_segment() -> impl Strategy<Value = PathSegment> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|k| PathSegment::Key(k.into())),
        (0usize..2).prop_map(PathSegment::Index),
    ]
}

fn dsl_field() -> impl Strategy<Value = DslField> {
    prop_oneof![
        Just(DslField::Id),
        Just(DslField::EntityId),
        Just(DslField::EventType),
        Just(DslField::Timestamp),
        Just(DslField::Position),
        Just(DslField::Version),
        prop::collection::vec(path_segment(), 0..3).prop_map(DslField::Payload),
        prop::collection::vec(path_segment(), 0..3).prop_map(DslField::Payload),
        prop::collection::vec(path_segment(), 0..3).prop_map(DslField::Metadata),
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any::<bool>().prop_map(Literal::Bool),
        (-3i64..4).prop_map(|n| Literal::Number(n as f64)),
        Just(Literal::Number(0.5)),
        Just(Literal::Number(42.0)),
        prop::sample::select(vec!["", "a", "b", "ab", "1", "order-1"])
            .prop_map(|s| Literal::String(s.into())),
        Just(Literal::Time(time("2024-06-01T10:00:00.000001Z"))),
        Just(Literal::Time(time("2024-01-01T00:00:00Z"))),
    ]
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ])
}

fn leaf() -> impl Strategy<Value = Condition> {
    prop_oneof![
        (dsl_field(), compare_op(), literal()).prop_map(|(field, op, value)| Condition::Compare {
            field,
            op,
            value
        }),
        (dsl_field(), prop::collection::vec(literal(), 1..4))
            .prop_map(|(field, values)| Condition::In { field, values }),
        (
            dsl_field(),
            prop::sample::select(vec!["", "a", "b", "order"])
        )
            .prop_map(|(field, s)| Condition::Contains {
                field,
                value: s.into(),
            }),
        dsl_field().prop_map(|field| Condition::Exists { field }),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Condition::And),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Condition::Or),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

fn any_event() -> impl Strategy<Value = Event> {
    (json_value(), prop::option::of(json_value()))
        .prop_map(|(p, m)| event(&p.to_string(), m.map(|m| m.to_string()).as_deref()))
}

proptest! {
    #[test]
    fn not_negates(c in condition(), e in any_event()) {
        prop_assert_eq!(
            Condition::Not(Box::new(c.clone())).matches(&e),
            !c.matches(&e)
        );
    }

    #[test]
    fn and_or_are_all_any(cs in prop::collection::vec(condition(), 1..5), e in any_event()) {
        let each: Vec<bool> = cs.iter().map(|c| c.matches(&e)).collect();
        prop_assert_eq!(Condition::And(cs.clone()).matches(&e), each.iter().all(|b| *b));
        prop_assert_eq!(Condition::Or(cs).matches(&e), each.iter().any(|b| *b));
    }

    #[test]
    fn in_is_any_equality(field in dsl_field(), values in prop::collection::vec(literal(), 1..4), e in any_event()) {
        let any_eq = values.iter().any(|v| Condition::Compare {
            field: field.clone(),
            op: CompareOp::Eq,
            value: v.clone(),
        }.matches(&e));
        prop_assert_eq!(Condition::In { field, values }.matches(&e), any_eq);
    }

    #[test]
    fn ne_holds_only_on_a_present_comparable_value(field in dsl_field(), value in literal(), e in any_event()) {
        let ne = Condition::Compare { field: field.clone(), op: CompareOp::Ne, value: value.clone() };
        let eq = Condition::Compare { field: field.clone(), op: CompareOp::Eq, value: value.clone() };
        if ne.matches(&e) {
            prop_assert!(!eq.matches(&e));
            let exists = Condition::Exists { field };
            prop_assert!(exists.matches(&e));
        }
    }

    #[test]
    fn field_names_round_trip(field in dsl_field()) {
        prop_assert_eq!(DslField::parse(&field.name()), Ok(field));
    }
}

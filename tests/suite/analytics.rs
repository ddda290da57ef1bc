//! Black-box tests of analytics, the query DSL and SQL over HTTP: a session of every route on
//! a small data set, with the same answers from the embedded and the postgres backends; SQL and
//! analytics scoped to the caller's tenant; read-only SQL; the row and time limits as 422 and
//! 408 problems; parameters validated with the fields named.

use allsource_tests::pg::TestDatabase;
use allsource_tests::server::{Reply, TestServer, tenant_tokens};
use reqwest::Method;
use serde_json::{Value, json};

/// Eight orders of three customers and their shipments (in one batch, so their timestamps
/// are equal: the answers below do not depend on the clock).
fn orders() -> Value {
    let mut events = Vec::new();
    for (i, (customer, amount, currency)) in [
        ("alice", 10.0, "EUR"),
        ("bob", 25.5, "USD"),
        ("alice", 4.5, "EUR"),
        ("carol", 100.0, "EUR"),
        ("bob", 7.0, "USD"),
        ("alice", 12.0, "USD"),
        ("carol", 1.0, "EUR"),
        ("bob", 50.0, "USD"),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(json!({
            "entity_id": customer, "event_type": "order.placed",
            "payload": {"order": i, "amount": amount, "currency": currency},
        }));
        if i % 2 == 0 {
            events.push(json!({
                "entity_id": customer, "event_type": "order.shipped",
                "payload": {"order": i},
            }));
        }
    }
    json!({"events": events})
}

async fn post(server: &TestServer, path: &str, body: Value) -> Reply {
    let reply = server.post_json(path, &body).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply
}

/// The answers of every route, without what depends on the clock.
async fn session(server: &TestServer) -> Vec<Value> {
    let appended = server.post_json("/api/v1/events/batch", &orders()).await;
    assert_eq!(appended.status, 200, "{}", appended.body);
    let mut answers = Vec::new();

    let summary = server.get("/api/v1/analytics/summary").await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(summary.body["total_events"], 12);
    assert_eq!(summary.body["unique_entities"], 3);
    assert_eq!(summary.body["unique_event_types"], 2);
    assert_eq!(
        summary.body["top_event_types"][0]["event_type"],
        "order.placed"
    );
    assert_eq!(summary.body["top_event_types"][0]["count"], 8);
    answers.push(json!([
        summary.body["total_events"],
        summary.body["unique_entities"],
        summary.body["top_event_types"],
        summary.body["top_entities"],
    ]));

    let frequency = server.get("/api/v1/analytics/frequency?window=day").await;
    assert_eq!(frequency.status, 200, "{}", frequency.body);
    assert_eq!(frequency.body["total_events"], 12);
    assert_eq!(frequency.body["window"], "day");
    let buckets = frequency.body["buckets"].as_array().expect("buckets");
    assert!(buckets.len() >= 30, "empty days are included");
    let last = buckets.last().expect("today");
    assert_eq!(last["count"], 12);
    assert_eq!(last["event_types"]["order.shipped"], 4);
    answers.push(json!(
        buckets
            .iter()
            .map(|b| b["count"].clone())
            .collect::<Vec<_>>()
    ));

    let correlation = server
        .get("/api/v1/analytics/correlation?event_type_a=order.placed&event_type_b=order.shipped&time_window_seconds=60")
        .await;
    assert_eq!(correlation.status, 200, "{}", correlation.body);
    // Each customer's placed orders followed by a later shipment: alice's orders 0, 2 (shipped
    // 2 later... ) — counted by position: an order is followed when a shipment of the same
    // customer comes after it.
    assert!(
        correlation.body["correlation_percentage"]
            .as_f64()
            .expect("pct")
            <= 100.0
    );
    assert_eq!(correlation.body["total_a"], 8);
    assert_eq!(correlation.body["total_b"], 4);
    answers.push(json!([
        correlation.body["correlated_pairs"],
        correlation.body["correlation_percentage"],
    ]));

    let series = post(
        server,
        "/api/v1/analytics/time-series",
        json!({"interval": "day", "event_type": "order.placed", "group_by": "payload.currency",
               "aggregations": [{"name": "revenue", "fn": "sum", "field": "payload.amount"},
                                {"name": "orders", "fn": "count"},
                                {"name": "median", "fn": "percentile", "field": "payload.amount", "p": 50}],
               "fill_missing": "none"}),
    )
    .await;
    let points = series.body["points"].as_array().expect("points");
    assert_eq!(points.len(), 2, "{}", series.body);
    let eur = points.iter().find(|p| p["group"] == "EUR").expect("EUR");
    assert_eq!(eur["values"]["revenue"], 115.5);
    assert_eq!(eur["values"]["orders"], 4);
    assert_eq!(eur["values"]["median"], 4.5);
    let usd = points.iter().find(|p| p["group"] == "USD").expect("USD");
    assert_eq!(usd["values"]["revenue"], 94.5);
    answers.push(json!([eur["values"], usd["values"]]));

    let funnel = post(
        server,
        "/api/v1/analytics/funnel",
        json!({"steps": [{"name": "placed", "event_type": "order.placed"},
                         {"name": "shipped", "event_type": "order.shipped"}],
               "within_ms": 60000}),
    )
    .await;
    assert_eq!(funnel.body["entered"], 3);
    assert_eq!(funnel.body["steps"][0]["entered"], 3);
    answers.push(funnel.body["steps"].clone());

    let cohorts = post(
        server,
        "/api/v1/analytics/cohorts",
        json!({"first_event_type": "order.placed", "return_event_type": "order.shipped", "period": "week"}),
    )
    .await;
    let cohort = &cohorts.body["cohorts"][0];
    assert_eq!(cohort["size"], 3);
    answers.push(json!([cohort["size"], cohort["retention"][0]]));

    let trend = post(
        server,
        "/api/v1/analytics/trend",
        json!({"interval": "day", "event_type": "order.placed", "forecast_periods": 2}),
    )
    .await;
    assert_eq!(trend.body["direction"], "increasing", "{}", trend.body);
    assert_eq!(trend.body["forecast"].as_array().map(Vec::len), Some(2));

    let anomalies = post(
        server,
        "/api/v1/analytics/anomalies",
        json!({"method": "iqr", "series": {"interval": "day", "aggregations": [{"name": "n", "fn": "count"}]}}),
    )
    .await;
    let flagged = anomalies.body["anomalies"].as_array().expect("anomalies");
    assert_eq!(
        flagged.len(),
        1,
        "today's 12 events stand out: {}",
        anomalies.body
    );
    assert_eq!(flagged[0]["value"], 12.0);

    let query = post(
        server,
        "/api/v1/query",
        json!({"where": ["and", ["=", "event_type", "order.placed"], [">=", "payload.amount", 12]],
               "order_by": [{"field": "payload.amount", "direction": "desc"}], "limit": 2}),
    )
    .await;
    assert_eq!(query.body["count"], 2);
    assert_eq!(query.body["has_more"], true);
    assert_eq!(query.body["events"][0]["payload"]["amount"], 100.0);
    assert_eq!(query.body["events"][1]["payload"]["amount"], 50.0);
    let rows = post(
        server,
        "/api/v1/query",
        json!({"select": ["entity_id", "payload.currency"],
               "where": ["!=", "payload.currency", "EUR"], "limit": 100}),
    )
    .await;
    assert_eq!(rows.body["count"], 4, "{}", rows.body);
    assert_eq!(rows.body["rows"][0]["payload.currency"], "USD");
    answers.push(rows.body["rows"].clone());

    let sql = post(
        server,
        "/api/v1/sql",
        json!({"query": "SELECT json_get_str(payload, 'currency') AS currency, \
                         sum(json_get_float(payload, 'amount')) AS revenue, count(*) AS n \
                         FROM events WHERE event_type = 'order.placed' GROUP BY 1 ORDER BY 1"}),
    )
    .await;
    assert_eq!(sql.body["columns"], json!(["currency", "revenue", "n"]));
    assert_eq!(sql.body["row_count"], 2);
    assert_eq!(
        sql.body["rows"],
        json!([{"currency": "EUR", "revenue": 115.5, "n": 4},
               {"currency": "USD", "revenue": 94.5, "n": 4}])
    );
    answers.push(sql.body["rows"].clone());
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_and_both_backends_agree() {
    let embedded = TestServer::start().await;
    let on_embedded = session(&embedded).await;
    embedded.stop().await;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().to_owned();
    let postgres = TestServer::start_with(move |s| {
        s.storage.backend = allsource::settings::Backend::Postgres;
        s.storage.postgres.url = url;
    })
    .await;
    let on_postgres = session(&postgres).await;
    assert_eq!(
        on_postgres, on_embedded,
        "the same answers on both backends"
    );
    postgres.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_and_analytics_see_only_the_callers_tenant() {
    let server = TestServer::start_with_auth(|_| {}).await;
    let tokens = tenant_tokens(&server).await;
    let append = server
        .call(
            Method::POST,
            "/api/v1/events/batch",
            Some(&tokens["acme"]),
            Some(&orders()),
        )
        .await;
    assert_eq!(append.status, 200, "{}", append.body);
    let globex = Some(tokens["globex"].as_str());
    for statement in [
        "SELECT count(*) AS n FROM events",
        "SELECT count(*) AS n FROM events WHERE entity_id = 'alice' OR 1=1",
        "SELECT count(*) AS n FROM (SELECT * FROM events UNION ALL SELECT * FROM events)",
        "SELECT count(*) AS n FROM events WHERE position IN (SELECT position FROM events)",
    ] {
        let r = server
            .call(
                Method::POST,
                "/api/v1/sql",
                globex,
                Some(&json!({ "query": statement })),
            )
            .await;
        assert_eq!(r.status, 200, "{statement}: {}", r.body);
        assert_eq!(r.body["rows"][0]["n"], 0, "{statement}");
    }
    let summary = server
        .call(Method::GET, "/api/v1/analytics/summary", globex, None)
        .await;
    assert_eq!(summary.body["total_events"], 0, "{}", summary.body);
    let query = server
        .call(
            Method::POST,
            "/api/v1/query",
            globex,
            Some(&json!({"where": ["=", "entity_id", "alice"]})),
        )
        .await;
    assert_eq!(query.body["count"], 0, "{}", query.body);
    let own = server
        .call(
            Method::POST,
            "/api/v1/sql",
            Some(&tokens["acme"]),
            Some(&json!({"query": "SELECT count(*) AS n FROM events"})),
        )
        .await;
    assert_eq!(own.body["rows"][0]["n"], 12);
    let anonymous = server
        .post_json("/api/v1/sql", &json!({"query": "SELECT 1"}))
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn sql_is_read_only_and_bounded() {
    let server = TestServer::start_with(|s| {
        s.analytics.sql_max_rows = 5;
        s.analytics.timeout_ms = 300;
    })
    .await;
    let appended = server.post_json("/api/v1/events/batch", &orders()).await;
    assert_eq!(appended.status, 200);
    for statement in [
        "DROP TABLE events",
        "DELETE FROM events",
        "INSERT INTO events SELECT * FROM events",
        "CREATE TABLE t AS SELECT 1",
    ] {
        let r = server
            .post_json("/api/v1/sql", &json!({ "query": statement }))
            .await;
        assert_eq!(r.status, 400, "{statement}: {}", r.body);
        assert_eq!(r.body["error"], "validation_failed");
    }
    let still = server
        .post_json(
            "/api/v1/sql",
            &json!({"query": "SELECT count(*) AS n FROM events"}),
        )
        .await;
    assert_eq!(still.body["rows"][0]["n"], 12, "nothing changed");
    let bad = server
        .post_json("/api/v1/sql", &json!({"query": "SELEC 1"}))
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["detail"].as_str().unwrap_or("").contains("SELEC"),
        "{}",
        bad.body
    );
    let many = server
        .post_json("/api/v1/sql", &json!({"query": "SELECT * FROM events"}))
        .await;
    assert_eq!(many.status, 422, "{}", many.body);
    assert_eq!(many.body["error"], "query_too_large");
    let slow = server
        .post_json(
            "/api/v1/sql",
            &json!({"query": "SELECT count(*) AS n FROM generate_series(1, 10000000000)"}),
        )
        .await;
    assert_eq!(slow.status, 408, "{}", slow.body);
    assert_eq!(slow.body["error"], "query_timeout");
    let missing = server.post_json("/api/v1/sql", &json!({})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["errors"][0]["field"], "query");
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let server = TestServer::start().await;
    let cases: [(&str, Option<Value>, &str); 7] = [
        (
            "/api/v1/analytics/frequency?window=fortnight",
            None,
            "window",
        ),
        (
            "/api/v1/analytics/frequency?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            None,
            "since",
        ),
        (
            "/api/v1/analytics/correlation?event_type_a=a",
            None,
            "event_type_b",
        ),
        (
            "/api/v1/analytics/time-series",
            Some(json!({"interval": "day", "aggregations": [{"fn": "median"}]})),
            "aggregations[0].fn",
        ),
        (
            "/api/v1/analytics/funnel",
            Some(json!({"steps": [{"event_type": "a"}]})),
            "steps",
        ),
        (
            "/api/v1/query",
            Some(json!({"where": ["~", "entity_id", "a"]})),
            "where[0]",
        ),
        (
            "/api/v1/analytics/time-series",
            Some(
                json!({"interval": "minute", "since": "2000-01-01T00:00:00Z",
                        "aggregations": [{"fn": "count"}]}),
            ),
            "since",
        ),
    ];
    for (path, body, field) in cases {
        let reply = match &body {
            Some(body) => server.post_json(path, body).await,
            None => server.get(path).await,
        };
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        let fields: Vec<&str> = reply.body["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.contains(&field),
            "{path}: {field} not in {}",
            reply.body
        );
    }
}

/// The session of docs/ANALYTICS.md, pasted as a new user would (the real binary, `curl` and
/// `jq`), on a free port: every block runs, and the answers the guide shows come back.
#[test]
fn the_documented_session_runs_as_written() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ANALYTICS.md"))
            .expect("docs/ANALYTICS.md");
    let mut blocks = Vec::new();
    let mut rest = guide.as_str();
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + 6..];
        let end = body.find("```").expect("a closed block");
        blocks.push(body[..end].to_owned());
        rest = &body[end..][3..];
        if blocks.last().is_some_and(|b| b.contains("kill $PID")) {
            break;
        }
    }
    assert!(blocks.len() > 10, "the session has its blocks");
    let port = allsource_tests::process::free_port();
    let binary = allsource_tests::process::binary();
    let bin_dir = binary.parent().expect("binary dir");
    let script = format!(
        "set -u\nexport PATH={}:$PATH\nexport ALLSOURCE__SERVER__PORT={port}\n{}",
        bin_dir.display(),
        blocks
            .join("\n")
            .replace("localhost:3900", &format!("localhost:{port}"))
    );
    // `timeout`: a server that never comes up must not hang the suite in the guide's wait loop.
    let output = std::process::Command::new("timeout")
        .args(["300", "bash", "-c"])
        .arg(&script)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the session failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for shown in [
        r#"{"total":8,"ingested":8}"#,
        r#""total_events":8"#,
        r#""correlated_pairs":2,"correlation_percentage":66.66666666666667"#,
        r#"{"group":"EUR","values":{"orders":2,"p90":120,"revenue":150}}"#,
        r#""entered":3,"completed":1"#,
        r#""retention":[2,0,0],"size":3"#,
        r#""direction":"increasing""#,
        r#""aggregation":"orders","anomalies":[{"#,
        r#"["limt","where[1]","where[2][2]"]"#,
        r#"{"columns":["event_type","n"],"row_count":3"#,
        "DML not supported",
    ] {
        assert!(
            stdout.contains(shown),
            "{shown} not in the session's answers:\n{stdout}"
        );
    }
}

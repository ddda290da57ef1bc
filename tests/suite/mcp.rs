//! The MCP server with a real MCP client (the official Rust SDK's, `rmcp`): over streamable
//! HTTP at `/mcp` of a real server, and over stdio with the real binary (`allsource mcp`)
//! as a child process. Every tool is listed with schemas that compile, called, and its
//! answer checked against the REST API's answer for the same question (and against its own
//! output schema); tenant isolation, readonly keys and `--read-only`, tool errors, and the
//! audit records of tool calls.

use std::collections::{BTreeSet, HashMap};

use allsource_tests::process::binary;
use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME, Reply, TestServer};
use reqwest::Method;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ProtocolVersion, ReadResourceRequestParams, Tool,
};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};

type Client = RunningService<RoleClient, ()>;

const SINCE: &str = "2020-01-01T00:00:00Z";
const UNTIL: &str = "2100-01-01T00:00:00Z";

/// An API key of `role`, created by `token` (in the token's tenant).
async fn key(server: &TestServer, token: &str, role: &str) -> String {
    let reply = server
        .call(
            Method::POST,
            "/api/v1/auth/api-keys",
            Some(token),
            Some(&json!({"name": format!("mcp-{role}"), "role": role})),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["key"].as_str().expect("key").to_owned()
}

/// An admin key of a new tenant `id` (created by the operator `root`).
async fn tenant_admin_key(server: &TestServer, root: &str, id: &str) -> String {
    let created = server
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(root),
            Some(&json!({"id": id, "name": id, "tier": "professional"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let username = format!("{id}-admin");
    let password = format!("{id} admin password 123");
    let user = server
        .call(
            Method::POST,
            "/api/v1/auth/users",
            Some(root),
            Some(
                &json!({"username": username, "password": password, "role": "admin",
                         "tenant_id": id}),
            ),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.body);
    let token = server.login(&username, &password).await;
    key(server, &token, "admin").await
}

async fn over_http(server: &TestServer, api_key: Option<&str>) -> Client {
    let mut config = StreamableHttpClientTransportConfig::with_uri(server.url("/mcp"));
    if let Some(api_key) = api_key {
        config = config.custom_headers(HashMap::from([(
            reqwest::header::HeaderName::from_static("x-api-key"),
            reqwest::header::HeaderValue::from_str(api_key).expect("a header value"),
        )]));
    }
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("the MCP handshake over HTTP")
}

async fn over_stdio(server: &TestServer, api_key: &str, extra: &[&str]) -> Client {
    let command = tokio::process::Command::new(binary()).configure(|c| {
        c.arg("mcp")
            .args(["--url", &server.base])
            .args(extra)
            .env("ALLSOURCE_API_KEY", api_key)
            .env_remove("ALLSOURCE_TOKEN")
            .env("RUST_LOG", "warn");
    });
    ().serve(TokioChildProcess::new(command).expect("spawn allsource mcp"))
        .await
        .expect("the MCP handshake over stdio")
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// The structured result of a call that must succeed.
async fn ok(client: &Client, tool: &str, args: Value) -> Value {
    let result = call(client, tool, args.clone()).await;
    assert_ne!(result.is_error, Some(true), "{tool}({args}): {result:?}");
    let text = format!("{result:?}");
    result
        .structured_content
        .unwrap_or_else(|| panic!("{tool}: no structured content: {text}"))
}

/// The text of a call that must fail as a tool error.
async fn tool_error(client: &Client, tool: &str, args: Value) -> String {
    let result = call(client, tool, args.clone()).await;
    assert_eq!(result.is_error, Some(true), "{tool}({args}): {result:?}");
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn names(tools: &[Tool]) -> BTreeSet<String> {
    tools.iter().map(|t| t.name.to_string()).collect()
}

async fn rest(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let reply: Reply = server.call(method, path, Some(token), body.as_ref()).await;
    assert!(
        (200..300).contains(&reply.status),
        "{path}: {} {}",
        reply.status,
        reply.body
    );
    reply.body
}

const WRITING_TOOLS: [&str; 6] = [
    "ingest_event",
    "ingest_batch",
    "register_schema",
    "create_projection",
    "rebuild_projection",
    "backup_create",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_over_http_answers_as_the_rest_api_does() {
    let target = tempfile::tempdir().expect("temp dir");
    let target_path = target.path().to_str().expect("utf-8").to_owned();
    let server = TestServer::start_with_auth(move |s| s.backup.target = target_path).await;
    let root = server.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let admin_key = key(&server, &root, "admin").await;
    let client = over_http(&server, Some(&admin_key)).await;

    // The handshake: our server, a protocol version both sides know.
    let info = client.peer_info().expect("initialized");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("allsource")
    );
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);

    // Every tool is listed, and its schemas are JSON Schemas that compile.
    let tools = client.list_all_tools().await.expect("tools/list");
    let listed = names(&tools);
    for name in [
        "get_stats",
        "quick_stats",
        "sample_events",
        "list_event_types",
        "list_entities",
        "list_schemas",
        "query_events",
        "query_dsl",
        "sql",
        "get_event",
        "reconstruct_state",
        "get_snapshot",
        "event_timeline",
        "analyze_changes",
        "compare_entities",
        "explain_entity",
        "ingest_event",
        "ingest_batch",
        "register_schema",
        "validate_payload",
        "create_projection",
        "rebuild_projection",
        "frequency",
        "summary",
        "correlation",
        "time_series",
        "funnel",
        "cohorts",
        "trend",
        "anomalies",
        "health",
        "storage_stats",
        "compaction_stats",
        "audit_log",
        "backup_list",
        "backup_create",
        "tenant_usage",
        "tenant_quotas",
    ] {
        assert!(listed.contains(name), "{name} is not listed: {listed:?}");
    }
    let mut output_schemas = HashMap::new();
    for tool in &tools {
        let input = Value::Object((*tool.input_schema).clone());
        assert_eq!(input["type"], "object", "{}", tool.name);
        jsonschema::validator_for(&input)
            .unwrap_or_else(|e| panic!("{}: input schema: {e}: {input}", tool.name));
        let output = Value::Object(
            tool.output_schema
                .as_ref()
                .map(|s| (**s).clone())
                .unwrap_or_else(|| panic!("{}: no output schema", tool.name)),
        );
        assert_eq!(output["type"], "object", "{}", tool.name);
        let validator = jsonschema::validator_for(&output)
            .unwrap_or_else(|e| panic!("{}: output schema: {e}: {output}", tool.name));
        output_schemas.insert(tool.name.to_string(), validator);
    }
    // Each answer conforms to its tool's output schema.
    let checked = |tool: &str, value: &Value| {
        let validator = &output_schemas[tool];
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{tool}: {errors:?}\n{value}");
    };

    // Mutate: the answers are the REST receipts; the events read back over REST.
    let first = ok(
        &client,
        "ingest_event",
        json!({"entity_id": "order-1", "event_type": "order.placed",
               "payload": {"status": "new", "total": 10}}),
    )
    .await;
    checked("ingest_event", &first);
    assert_eq!(first["version"], 1, "{first}");
    let event_id = first["event_id"].as_str().expect("an id").to_owned();
    let batch = ok(
        &client,
        "ingest_batch",
        json!({"events": [
            {"entity_id": "order-1", "event_type": "order.paid", "payload": {"status": "paid"}},
            {"entity_id": "order-2", "event_type": "order.placed", "payload": {"status": "new", "total": 7}},
            {"entity_id": "order-1", "event_type": "order.noted", "payload": {"note": "gift"}},
        ]}),
    )
    .await;
    checked("ingest_batch", &batch);
    assert_eq!(batch["ingested"], 3, "{batch}");
    let refused = tool_error(
        &client,
        "ingest_event",
        json!({"entity_id": "order-1", "event_type": "x", "payload": {}, "expected_version": 1}),
    )
    .await;
    assert!(refused.starts_with("409"), "{refused}");

    // Route tools: the same answer as the route.
    let same: Vec<(&str, Value, Method, String, Option<Value>)> = vec![
        ("get_stats", json!({}), Method::GET, "/api/v1/stats".into(), None),
        ("storage_stats", json!({}), Method::GET, "/api/v1/stats".into(), None),
        ("list_event_types", json!({}), Method::GET, "/api/v1/event-types".into(), None),
        ("list_entities", json!({"limit": 10}), Method::GET, "/api/v1/entities?limit=10".into(), None),
        (
            "query_events",
            json!({"entity_id": "order-1", "payload_filter": {"status": "paid"}}),
            Method::GET,
            "/api/v1/events/query?entity_id=order-1&payload_filter=%7B%22status%22%3A%22paid%22%7D".into(),
            None,
        ),
        (
            "query_dsl",
            json!({"where": ["=", "event_type", "order.placed"]}),
            Method::POST,
            "/api/v1/query".into(),
            Some(json!({"where": ["=", "event_type", "order.placed"]})),
        ),
        (
            "sql",
            json!({"query": "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY entity_id"}),
            Method::POST,
            "/api/v1/sql".into(),
            Some(json!({"query": "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY entity_id"})),
        ),
        ("get_event", json!({"event_id": event_id}), Method::GET, format!("/api/v1/events/{event_id}"), None),
        (
            "reconstruct_state",
            json!({"entity_id": "order-1", "include_history": true}),
            Method::GET,
            "/api/v1/entities/order-1/state?include_history=true".into(),
            None,
        ),
        (
            "frequency",
            json!({"window": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-01-03T00:00:00Z"}),
            Method::GET,
            "/api/v1/analytics/frequency?window=day&since=2026-01-01T00:00:00Z&until=2026-01-03T00:00:00Z".into(),
            None,
        ),
        ("summary", json!({"since": SINCE, "until": UNTIL}), Method::GET, format!("/api/v1/analytics/summary?since={SINCE}&until={UNTIL}"), None),
        (
            "correlation",
            json!({"event_type_a": "order.placed", "event_type_b": "order.paid"}),
            Method::GET,
            "/api/v1/analytics/correlation?event_type_a=order.placed&event_type_b=order.paid".into(),
            None,
        ),
        (
            "time_series",
            json!({"interval": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-01-03T00:00:00Z",
                   "aggregations": [{"name": "n", "fn": "count"}]}),
            Method::POST,
            "/api/v1/analytics/time-series".into(),
            Some(json!({"interval": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-01-03T00:00:00Z",
                        "aggregations": [{"name": "n", "fn": "count"}]})),
        ),
        (
            "funnel",
            json!({"steps": [{"event_type": "order.placed"}, {"event_type": "order.paid"}]}),
            Method::POST,
            "/api/v1/analytics/funnel".into(),
            Some(json!({"steps": [{"event_type": "order.placed"}, {"event_type": "order.paid"}]})),
        ),
        (
            "cohorts",
            json!({"first_event_type": "order.placed", "return_event_type": "order.paid",
                   "period": "day", "periods": 2, "since": "2026-01-01T00:00:00Z", "until": "2026-01-03T00:00:00Z"}),
            Method::POST,
            "/api/v1/analytics/cohorts".into(),
            Some(json!({"first_event_type": "order.placed", "return_event_type": "order.paid",
                        "period": "day", "periods": 2, "since": "2026-01-01T00:00:00Z", "until": "2026-01-03T00:00:00Z"})),
        ),
        (
            "trend",
            json!({"interval": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-01-05T00:00:00Z"}),
            Method::POST,
            "/api/v1/analytics/trend".into(),
            Some(json!({"interval": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-01-05T00:00:00Z"})),
        ),
        (
            "anomalies",
            json!({"series": {"interval": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-01-05T00:00:00Z",
                              "aggregations": [{"name": "n", "fn": "count"}]}, "aggregation": "n"}),
            Method::POST,
            "/api/v1/analytics/anomalies".into(),
            Some(json!({"series": {"interval": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-01-05T00:00:00Z",
                                   "aggregations": [{"name": "n", "fn": "count"}]}, "aggregation": "n"})),
        ),
        ("health", json!({}), Method::GET, "/health".into(), None),
        ("compaction_stats", json!({}), Method::GET, "/api/v1/compaction/stats".into(), None),
        ("tenant_quotas", json!({}), Method::GET, "/api/v1/tenants/default/quotas".into(), None),
    ];
    for (tool, args, method, path, body) in same {
        let answer = ok(&client, tool, args).await;
        checked(tool, &answer);
        let expected = rest(&server, &root, method, &path, body).await;
        assert_eq!(answer, expected, "{tool} differs from {path}");
    }

    // Schemas and projections, then the tools that read them.
    let registered = ok(
        &client,
        "register_schema",
        json!({"subject": "order.placed", "schema": {"type": "object", "required": ["status"]}}),
    )
    .await;
    checked("register_schema", &registered);
    assert_eq!(registered["version"], 1, "{registered}");
    let listed = ok(&client, "list_schemas", json!({})).await;
    assert_eq!(
        listed,
        rest(&server, &root, Method::GET, "/api/v1/schemas", None).await
    );
    let validated = ok(
        &client,
        "validate_payload",
        json!({"subject": "order.placed", "payload": {"total": 1}}),
    )
    .await;
    checked("validate_payload", &validated);
    assert_eq!(validated["valid"], false, "{validated}");
    let projection = ok(
        &client,
        "create_projection",
        json!({"name": "event_counter"}),
    )
    .await;
    checked("create_projection", &projection);
    let rebuild = ok(
        &client,
        "rebuild_projection",
        json!({"name": "event_counter"}),
    )
    .await;
    checked("rebuild_projection", &rebuild);
    let snapshot = rest(
        &server,
        &root,
        Method::POST,
        "/api/v1/snapshots",
        Some(json!({"entity_id": "order-1"})),
    )
    .await;
    let latest = ok(&client, "get_snapshot", json!({"entity_id": "order-1"})).await;
    checked("get_snapshot", &latest);
    assert_eq!(latest["version"], snapshot["version"], "{latest}");

    // Operations and tenants.
    let usage = ok(&client, "tenant_usage", json!({})).await;
    checked("tenant_usage", &usage);
    assert_eq!(usage["tenant_id"], "default", "{usage}");
    let backup = ok(&client, "backup_create", json!({"kind": "full"})).await;
    checked("backup_create", &backup);
    let backups = ok(&client, "backup_list", json!({})).await;
    checked("backup_list", &backups);
    assert!(backups["total"].as_u64().is_some(), "{backups}");

    // The derived tools, against what the REST API says.
    let quick = ok(&client, "quick_stats", json!({})).await;
    checked("quick_stats", &quick);
    assert_eq!(quick["total_events"], 4, "{quick}");
    assert_eq!(
        quick["top_event_types"][0]["event_type"], "order.placed",
        "{quick}"
    );
    let sample = ok(&client, "sample_events", json!({"limit": 2})).await;
    checked("sample_events", &sample);
    let newest = rest(
        &server,
        &root,
        Method::GET,
        "/api/v1/events/query?order=desc&limit=2",
        None,
    )
    .await;
    assert_eq!(sample["events"], newest["events"], "{sample}");
    let timeline = ok(&client, "event_timeline", json!({"entity_id": "order-1"})).await;
    checked("event_timeline", &timeline);
    assert_eq!(timeline["count"], 3, "{timeline}");
    assert_eq!(
        timeline["timeline"][2]["keys_set"],
        json!(["note"]),
        "{timeline}"
    );
    let explained = ok(&client, "explain_entity", json!({"entity_id": "order-1"})).await;
    checked("explain_entity", &explained);
    let state = rest(
        &server,
        &root,
        Method::GET,
        "/api/v1/entities/order-1/state",
        None,
    )
    .await;
    assert_eq!(explained["version"], state["version"], "{explained}");
    assert_eq!(explained["first_event"]["event_type"], "order.placed");
    assert_eq!(explained["last_event"]["event_type"], "order.noted");
    let status = explained["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["key"] == "status"))
        .cloned()
        .expect("the key status");
    assert_eq!(status["changes"], 2, "{explained}");
    assert_eq!(status["current"], state["current_state"]["status"]);
    let compared = ok(
        &client,
        "compare_entities",
        json!({"entity_a": "order-1", "entity_b": "order-2"}),
    )
    .await;
    checked("compare_entities", &compared);
    assert_eq!(
        compared["different"]["status"],
        json!({"a": "paid", "b": "new"})
    );
    assert_eq!(compared["only_in_a"], json!({"note": "gift"}));
    assert_eq!(compared["a"]["version"], state["version"]);
    let first_at = rest(
        &server,
        &root,
        Method::GET,
        &format!("/api/v1/events/{event_id}"),
        None,
    )
    .await;
    let changes = ok(
        &client,
        "analyze_changes",
        json!({"entity_id": "order-1", "from": first_at["timestamp"]}),
    )
    .await;
    checked("analyze_changes", &changes);
    assert_eq!(changes["version_from"], 1, "{changes}");
    assert_eq!(changes["version_to"], 3, "{changes}");
    assert_eq!(
        changes["changed"]["status"],
        json!({"from": "new", "to": "paid"})
    );
    assert_eq!(changes["added"], json!({"note": "gift"}));
    assert_eq!(changes["events"].as_array().map(Vec::len), Some(2));

    // Bad input: a tool error that says what to fix; an unknown tool is a protocol error.
    let unknown_arg = tool_error(&client, "query_events", json!({"entity": "order-1"})).await;
    assert!(
        unknown_arg.contains("unknown argument `entity`"),
        "{unknown_arg}"
    );
    let bad = tool_error(&client, "query_events", json!({"limit": 0})).await;
    assert!(bad.starts_with("400"), "{bad}");
    assert!(
        client
            .call_tool(CallToolRequestParams::new("no_such_tool"))
            .await
            .is_err()
    );

    // Resources: the reference, the OpenAPI document, the tenant's schemas.
    let resources = client.list_all_resources().await.expect("resources/list");
    let uris: BTreeSet<String> = resources.iter().map(|r| r.uri.to_string()).collect();
    assert!(uris.contains("allsource://docs/api"), "{uris:?}");
    assert!(
        uris.contains("allsource://schemas/order.placed"),
        "{uris:?}"
    );
    let schema = client
        .read_resource(ReadResourceRequestParams::new(
            "allsource://schemas/order.placed",
        ))
        .await
        .expect("resources/read");
    let text = match &schema.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    let text: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(text["subject"], "order.placed", "{text}");

    // Every call is audited, in the caller's tenant, with the tool.
    let audit = ok(
        &client,
        "audit_log",
        json!({"action": "mcp.tool_call", "limit": 1000}),
    )
    .await;
    checked("audit_log", &audit);
    let audited: BTreeSet<String> = audit["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["resource"].as_str().map(str::to_owned))
        .collect();
    for tool in ["ingest_event", "sql", "explain_entity", "get_event"] {
        assert!(audited.contains(tool), "{tool} not audited: {audited:?}");
    }
    client.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_roles_and_read_only_mode_hold_through_both_transports() {
    binary();
    let server = TestServer::start_with_auth(|_| {}).await;
    let root = server.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let acme = tenant_admin_key(&server, &root, "acme").await;
    let default_event = rest(
        &server,
        &root,
        Method::POST,
        "/api/v1/events",
        Some(json!({"entity_id": "secret-1", "event_type": "secret.kept", "payload": {"x": 1}})),
    )
    .await;
    let default_id = default_event["event_id"].as_str().expect("id").to_owned();

    // /mcp needs a credential like every route.
    let anonymous = server
        .client
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string())
        .send()
        .await
        .expect("POST /mcp");
    assert_eq!(anonymous.status(), 401);
    // Bad input is a problem document that names what is wrong, and changes nothing.
    for (content_type, body, status) in [
        ("application/json", r#"{"id":1,"method":"tools/list"}"#, 400),
        ("application/json", "not json", 400),
        (
            "text/plain",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            415,
        ),
    ] {
        let reply = server
            .client
            .post(server.url("/mcp"))
            .bearer_auth(&root)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST /mcp");
        assert_eq!(reply.status(), status, "{body}");
        let problem: Value = reply.json().await.expect("a problem document");
        assert_eq!(problem["status"], status, "{problem}");
    }

    // Tenant acme over HTTP and over stdio: its own events only.
    for client in [
        over_http(&server, Some(&acme)).await,
        over_stdio(&server, &acme, &[]).await,
    ] {
        ok(
            &client,
            "ingest_event",
            json!({"entity_id": "a-1", "event_type": "acme.thing", "payload": {"y": 2}}),
        )
        .await;
        let mine = ok(&client, "query_events", json!({})).await;
        let types: BTreeSet<&str> = mine["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["event_type"].as_str())
            .collect();
        assert_eq!(types, BTreeSet::from(["acme.thing"]), "{mine}");
        let hidden = tool_error(&client, "get_event", json!({"event_id": default_id})).await;
        assert!(hidden.starts_with("404"), "{hidden}");
        let sql = ok(
            &client,
            "sql",
            json!({"query": "SELECT count(*) AS n FROM events WHERE event_type = 'secret.kept'"}),
        )
        .await;
        assert_eq!(sql["rows"][0]["n"], 0, "{sql}");
        assert_eq!(
            ok(&client, "tenant_usage", json!({})).await["tenant_id"],
            "acme"
        );
        // Another tenant does not exist for this caller.
        let other = tool_error(&client, "tenant_quotas", json!({"id": "default"})).await;
        assert!(other.starts_with("404"), "{other}");
        client.cancel().await.expect("close");
    }

    // A readonly key sees no writing tool; a call to one is refused by the route.
    let readonly = key(&server, &root, "readonly").await;
    for client in [
        over_http(&server, Some(&readonly)).await,
        over_stdio(&server, &readonly, &[]).await,
    ] {
        let listed = names(&client.list_all_tools().await.expect("tools/list"));
        for tool in WRITING_TOOLS {
            assert!(!listed.contains(tool), "{tool} listed for a readonly key");
        }
        assert!(listed.contains("query_events") && listed.contains("explain_entity"));
        let refused = tool_error(
            &client,
            "ingest_event",
            json!({"entity_id": "r", "event_type": "r.x", "payload": {}}),
        )
        .await;
        assert!(refused.starts_with("403"), "{refused}");
        client.cancel().await.expect("close");
    }

    // --read-only with an admin key: the same tools hidden, and refused without a request.
    let admin = key(&server, &root, "admin").await;
    let client = over_stdio(&server, &admin, &["--read-only"]).await;
    let listed = names(&client.list_all_tools().await.expect("tools/list"));
    assert!(!listed.contains("ingest_event") && !listed.contains("backup_create"));
    assert!(listed.contains("audit_log"), "{listed:?}");
    let refused = tool_error(
        &client,
        "ingest_event",
        json!({"entity_id": "r", "event_type": "r.x", "payload": {}}),
    )
    .await;
    assert!(refused.contains("read-only"), "{refused}");
    client.cancel().await.expect("close");
    let count = rest(
        &server,
        &root,
        Method::GET,
        "/api/v1/events/query?entity_id=r",
        None,
    )
    .await;
    assert_eq!(count["count"], 0, "{count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_server_says_when_the_server_is_down() {
    binary();
    let server = TestServer::start().await;
    let base = server.base.clone();
    let dir = server.stop().await;
    let command = tokio::process::Command::new(binary()).configure(|c| {
        c.args(["mcp", "--url", &base]).env("RUST_LOG", "warn");
    });
    let client =
        ().serve(TokioChildProcess::new(command).expect("spawn"))
            .await
            .expect("handshake");
    let down = tool_error(&client, "query_events", json!({})).await;
    assert!(down.contains("nothing answers at"), "{down}");
    client.cancel().await.expect("close");
    drop(dir);
}

/// Whether the Python SDK (`pip install mcp`) is here; CI installs it and sets
/// `ALLSOURCE_REQUIRE_PYTHON_MCP`, elsewhere the test says it did not run.
fn python_mcp() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import mcp"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("ALLSOURCE_REQUIRE_PYTHON_MCP").is_none(),
            "the Python MCP SDK is required here (pip install mcp; .ci/run does)"
        );
        eprintln!("python3 with `mcp` not found: the Python client test did not run (CI runs it)");
    }
    found
}

/// Runs `tests/mcp/client.py` (the official Python SDK's client) and parses what it printed.
async fn python_client(args: Vec<String>) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/mcp/client.py");
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(script)
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finished in time")
    .expect("python3 ran");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_client_works_over_both_transports() {
    if !python_mcp() {
        return;
    }
    let server = TestServer::start_with_auth(|_| {}).await;
    let root = server.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let admin_key = key(&server, &root, "admin").await;
    let binary = binary().to_str().expect("utf-8 path").to_owned();
    for args in [
        vec!["http".to_owned(), server.url("/mcp"), admin_key.clone()],
        vec![
            "stdio".to_owned(),
            binary,
            server.base.clone(),
            admin_key.clone(),
        ],
    ] {
        let seen = python_client(args.clone()).await;
        assert_eq!(seen["server"], "allsource", "{seen}");
        assert_eq!(seen["protocol_version"], "2025-11-25", "{seen}");
        let tools = seen["tools"].as_array().expect("tools");
        assert!(tools.len() >= 38, "{seen}");
        assert_eq!(seen["appended_error"], false, "{seen}");
        // The SDK checked each structured result against the tool's output schema.
        let rest_answer = rest(
            &server,
            &root,
            Method::GET,
            "/api/v1/events/query?entity_id=py-1",
            None,
        )
        .await;
        assert_eq!(seen["queried"], rest_answer, "{args:?}");
        assert_eq!(seen["explained"]["event_count"], rest_answer["count"]);
        assert_eq!(seen["refused_error"], true, "{seen}");
        assert!(
            seen["refused_text"]
                .as_str()
                .is_some_and(|t| t.starts_with("400")),
            "{seen}"
        );
        assert!(
            seen["resources"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("allsource://docs/api"))),
            "{seen}"
        );
    }
}

//! Operations over the real binary: the Prometheus exposition after a known workload (and
//! `promtool check metrics` on it), who may scrape it, and traces exported over OTLP/HTTP to a
//! receiver in the test that decodes what arrives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_tests::process::{ServerProcess, free_port};
use allsource_tests::server::TEST_JWT_SECRET;
use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::Mutex;
use prost::Message;
use serde_json::{Value, json};

/// One sample of the exposition: name, labels (sorted), value.
type Samples = BTreeMap<(String, String), f64>;

/// Parses the text exposition into `(name, "k=v,k=v")` → value.
fn parse_exposition(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let mut pairs: Vec<String> = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| p.replace('"', ""))
                    .collect();
                pairs.sort();
                (name.to_owned(), pairs.join(","))
            }
            None => (series.to_owned(), String::new()),
        };
        samples.insert((name, labels), value.parse().expect("a number"));
    }
    samples
}

/// The value of `name{labels}`; `labels` as `k=v,k=v` in any order.
fn sample(samples: &Samples, name: &str, labels: &str) -> Option<f64> {
    let mut pairs: Vec<&str> = labels.split(',').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    samples.get(&(name.to_owned(), pairs.join(","))).copied()
}

async fn scrape(client: &reqwest::Client, base: &str) -> (u16, String, String) {
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.expect("body"))
}

/// The stored event an append's receipt names.
async fn stored_event(client: &reqwest::Client, base: &str, receipt: &Value) -> Value {
    let id = receipt["event_id"]
        .as_str()
        .expect("a receipt has an event id");
    client
        .get(format!("{base}/api/v1/events/{id}"))
        .send()
        .await
        .expect("read the event")
        .json()
        .await
        .expect("an event document")
}

async fn append(client: &reqwest::Client, base: &str, body: Value) -> u16 {
    client
        .post(format!("{base}/api/v1/events"))
        .json(&body)
        .send()
        .await
        .expect("append")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_scrape_after_a_known_workload_has_the_expected_values_and_passes_promtool() {
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path(), &[]).await;
    let client = reqwest::Client::new();
    let base = &server.base;
    for i in 0..5 {
        let status = append(
            &client,
            base,
            json!({"entity_id": format!("order-{i}"), "event_type": "order.placed", "payload": {"n": i}}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"entity_id": "cart-1", "event_type": "cart.item_added", "payload": {"i": i}}))
        .collect();
    let status = client
        .post(format!("{base}/api/v1/events/batch"))
        .json(&json!({ "events": batch }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    // A version conflict, an unknown route, a bad body.
    let conflict = append(
        &client,
        base,
        json!({"entity_id": "order-0", "event_type": "order.placed", "payload": {}, "expected_version": 7}),
    )
    .await;
    assert_eq!(conflict, 409);
    let unknown = client
        .get(format!("{base}/api/v1/nothing-here"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(unknown, 404);
    let stream = client
        .get(format!("{base}/api/v1/entities/cart-1/events"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(stream, 200);
    // A consumer at position 10 and a group that starts after 12, of 15 events.
    let consumer = client
        .post(format!("{base}/api/v1/consumers"))
        .json(&json!({"consumer_id": "billing"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(consumer, 200);
    let ack = client
        .post(format!("{base}/api/v1/consumers/billing/ack"))
        .json(&json!({"position": 10}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ack, 200);
    let group = client
        .post(format!("{base}/api/v1/consumer-groups"))
        .json(&json!({"group": "workers", "start_position": 12}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(group, 201);

    let (status, content_type, text) = scrape(&client, base).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_exposition(&text);
    let value = |name: &str, labels: &str| {
        sample(&samples, name, labels)
            .unwrap_or_else(|| panic!("{name}{{{labels}}} missing in:\n{text}"))
    };
    let append_route = "method=POST,route=/api/v1/events";
    assert_eq!(
        value(
            "allsource_http_requests_total",
            &format!("{append_route},status=200")
        ),
        5.0
    );
    assert_eq!(
        value(
            "allsource_http_requests_total",
            &format!("{append_route},status=409")
        ),
        1.0
    );
    assert_eq!(
        value(
            "allsource_http_requests_total",
            "method=POST,route=/api/v1/events/batch,status=200"
        ),
        1.0
    );
    assert_eq!(
        value(
            "allsource_http_requests_total",
            "method=GET,route=/api/v1/entities/{entity_id}/events,status=200"
        ),
        1.0,
        "the route template, not the raw path"
    );
    assert_eq!(
        value(
            "allsource_http_requests_total",
            "method=GET,route=unmatched,status=404"
        ),
        1.0
    );
    assert_eq!(
        value(
            "allsource_http_request_errors_total",
            &format!("{append_route},class=client")
        ),
        1.0
    );
    assert_eq!(
        value(
            "allsource_http_request_duration_seconds_count",
            append_route
        ),
        6.0
    );
    assert_eq!(
        value("allsource_problems_total", "code=version_conflict"),
        1.0
    );
    assert_eq!(value("allsource_problems_total", "code=not_found"), 1.0);
    assert_eq!(value("allsource_events", ""), 15.0);
    assert_eq!(value("allsource_entities", ""), 6.0);
    assert_eq!(value("allsource_events_appended_total", ""), 15.0);
    assert_eq!(value("allsource_append_duration_seconds_count", ""), 7.0);
    assert_eq!(value("allsource_commit_group_events_sum", ""), 15.0);
    let groups = value("allsource_commit_group_appends_count", "");
    assert!((1.0..=7.0).contains(&groups), "{groups} groups");
    let fsyncs = value("allsource_wal_fsync_duration_seconds_count", "");
    assert!(
        (1.0..=7.0).contains(&fsyncs),
        "one fsync per written group: {fsyncs}"
    );
    assert!(value("allsource_wal_bytes", "") > 0.0);
    assert_eq!(value("allsource_wal_segments", ""), 1.0);
    assert_eq!(value("allsource_parquet_files", ""), 0.0);
    assert_eq!(
        value(
            "allsource_build_info",
            &format!("version={}", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );
    assert_eq!(value("allsource_projection_lag_events", "stat=count"), 0.0);
    assert_eq!(value("allsource_consumer_lag_events", "stat=count"), 1.0);
    assert_eq!(value("allsource_consumer_lag_events", "stat=max"), 5.0);
    assert_eq!(
        value("allsource_consumer_group_lag_events", "stat=count"),
        1.0
    );
    assert_eq!(
        value("allsource_consumer_group_lag_events", "stat=sum"),
        3.0
    );
    assert!(
        text.contains("# HELP allsource_http_requests_total"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE allsource_http_request_duration_seconds histogram"),
        "{text}"
    );
    // No raw path or entity id is ever a label.
    assert!(
        !text.contains("order-1") && !text.contains("cart-1"),
        "{text}"
    );

    // The scrape itself counts at the next one.
    let (_, _, again) = scrape(&client, base).await;
    assert_eq!(
        sample(
            &parse_exposition(&again),
            "allsource_http_requests_total",
            "method=GET,route=/metrics,status=200"
        ),
        Some(1.0)
    );
    promtool_check(&text);
    server.terminate();
}

/// `promtool check metrics` accepts the exposition (Debian's `prometheus` package; CI installs
/// it and sets `ALLSOURCE_REQUIRE_PROMTOOL`).
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if std::env::var_os("ALLSOURCE_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("promtool not run ({e}); CI runs it");
            return;
        }
        Err(e) => panic!("promtool is required here: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool refused the exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_need_the_metrics_permission_unless_public_or_on_their_own_address() {
    let client = reqwest::Client::new();
    let auth = [
        ("ALLSOURCE__AUTH__ENABLED", "true"),
        ("ALLSOURCE__AUTH__JWT__SECRET", TEST_JWT_SECRET),
    ];

    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path(), &auth).await;
    let (status, _, body) = scrape(&client, &server.base).await;
    assert_eq!(status, 401, "{body}");
    server.terminate();

    let data = tempfile::tempdir().unwrap();
    let mut env = auth.to_vec();
    env.push(("ALLSOURCE__METRICS__PUBLIC", "true"));
    let mut server = ServerProcess::start(data.path(), &env).await;
    let (status, _, body) = scrape(&client, &server.base).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("allsource_build_info"), "{body}");
    server.terminate();

    let data = tempfile::tempdir().unwrap();
    let scrape_port = free_port();
    let listen = format!("127.0.0.1:{scrape_port}");
    let mut env = auth.to_vec();
    env.push(("ALLSOURCE__METRICS__LISTEN", listen.as_str()));
    let mut server = ServerProcess::start(data.path(), &env).await;
    let (status, _, _) = scrape(&client, &server.base).await;
    assert_eq!(status, 401, "the main port still needs a credential");
    let (status, _, body) = scrape(&client, &format!("http://{listen}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("allsource_build_info"), "{body}");
    let other = client
        .get(format!("http://{listen}/api/v1/stats"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(other, 404, "the scrape address serves nothing else");
    server.terminate();

    // Metrics off: 404.
    let data = tempfile::tempdir().unwrap();
    let mut server =
        ServerProcess::start(data.path(), &[("ALLSOURCE__METRICS__ENABLED", "false")]).await;
    let (status, _, body) = scrape(&client, &server.base).await;
    assert_eq!(status, 404, "{body}");
    server.terminate();
}

/// One span as received: (trace id, span id, parent span id, name), ids in hex.
type ReceivedSpan = (String, String, String, String);

/// The spans an OTLP/HTTP receiver got, decoded.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ReceivedSpan>>>);

async fn receive_traces(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut spans = received.0.lock();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push((
                    hex(&span.trace_id),
                    hex(&span.span_id),
                    hex(&span.parent_span_id),
                    span.name,
                ));
            }
        }
    }
    ""
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Two workers: the receiver keeps answering while the test waits for the server to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_continues_its_trace_is_returned_stored_and_exported_over_otlp() {
    let received = Received::default();
    let receiver = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive_traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(
        data.path(),
        &[
            ("ALLSOURCE__TELEMETRY__OTLP__ENDPOINT", endpoint.as_str()),
            ("ALLSOURCE__TELEMETRY__OTLP__BATCH_DELAY_MS", "100"),
            ("ALLSOURCE__LOG__LEVEL", "info,tower_http=debug"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let response = client
        .post(format!("{}/api/v1/events", server.base))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .json(&json!({"entity_id": "traced", "event_type": "t.happened", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let returned = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        returned.starts_with(&format!("00-{trace_id}-")),
        "{returned}"
    );
    assert!(
        !returned.contains(parent),
        "the server's own span: {returned}"
    );
    let receipt: Value = response.json().await.unwrap();

    // The event carries the request's trace context; a client's own traceparent is kept.
    let event: Value = stored_event(&client, &server.base, &receipt).await;
    assert_eq!(
        event["metadata"]["traceparent"],
        returned.as_str(),
        "{event}"
    );
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    let response = client
        .post(format!("{}/api/v1/events", server.base))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .json(&json!({"entity_id": "traced", "event_type": "t.happened", "payload": {}, "metadata": {"traceparent": own, "k": 1}}))
        .send()
        .await
        .unwrap();
    let receipt: Value = response.json().await.unwrap();
    let event: Value = stored_event(&client, &server.base, &receipt).await;
    assert_eq!(event["metadata"], json!({"traceparent": own, "k": 1}));

    // The receiver gets the request span (a child of the caller's), the use case's span under
    // it, and the commit group with its fsync.
    let server_span = returned.split('-').nth(2).unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = received.0.lock().clone();
        let request = spans.iter().find(|(t, s, p, n)| {
            t == trace_id && *s == server_span && p == parent && n == "request"
        });
        let use_case = spans
            .iter()
            .find(|(t, _, p, n)| t == trace_id && *p == server_span && n == "append");
        let group = spans.iter().find(|(_, _, _, n)| n == "commit_group");
        let fsync = group.and_then(|(t, s, _, _)| {
            spans
                .iter()
                .find(|(t2, _, p, n)| t2 == t && p == s && n == "wal_fsync")
        });
        if request.is_some() && use_case.is_some() && fsync.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing (request {request:?}, use case {use_case:?}, fsync {fsync:?}) in {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.terminate();
    // Log lines written inside the request carry its trace id.
    assert!(
        server.log_text().contains(&format!("trace_id={trace_id}")),
        "{}",
        server.log_text()
    );
}

/// Waits until `/metrics` answers `status`, or panics with the log.
async fn wait_scrape_status(server: &ServerProcess, client: &reqwest::Client, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (got, _, _) = scrape(client, &server.base).await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics answered {got}, not {status}:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_log(server: &ServerProcess, text: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.log_text().matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_applies_what_can_change_refuses_bad_settings_and_reports_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("allsource.toml");
    std::fs::write(&config, "[metrics]\npublic = false\n").unwrap();
    let config_arg = config.to_str().unwrap();
    let mut server = ServerProcess::start_with_args(
        data.path(),
        &[
            ("ALLSOURCE__AUTH__ENABLED", "true"),
            ("ALLSOURCE__AUTH__JWT__SECRET", TEST_JWT_SECRET),
        ],
        &["--config", config_arg],
    )
    .await;
    let client = reqwest::Client::new();
    wait_scrape_status(&server, &client, 401).await;

    std::fs::write(
        &config,
        "[metrics]\npublic = true\n[server]\nmax_body_bytes = 1048576\n",
    )
    .unwrap();
    server.hangup();
    wait_scrape_status(&server, &client, 200).await;
    wait_log(&server, "configuration reloaded (SIGHUP)", 1).await;
    wait_log(&server, "need a restart", 1).await;
    assert!(
        server.log_text().contains("server.*"),
        "{}",
        server.log_text()
    );

    // Settings that do not validate change nothing.
    std::fs::write(
        &config,
        "[metrics]\npublic = false\n[storage]\nbackend = \"mongo\"\n",
    )
    .unwrap();
    server.hangup();
    wait_log(
        &server,
        "configuration reload refused; nothing was changed",
        1,
    )
    .await;
    let (status, _, _) = scrape(&client, &server.base).await;
    assert_eq!(status, 200, "a refused reload keeps metrics public");

    std::fs::write(&config, "[metrics]\npublic = false\n").unwrap();
    server.hangup();
    wait_scrape_status(&server, &client, 401).await;
    server.terminate();
}

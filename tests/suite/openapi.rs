//! The OpenAPI document against the real server: it is served with the docs page and its
//! assets, and schemathesis (an OpenAPI-driven fuzzer, PyPI `schemathesis`, installed by
//! `.ci/run`) sends generated requests to every operation of a `--dev` server and checks that
//! none is answered with a 5xx, and that every status and answer body conforms to the document.
//!
//! Only the long-lived streams (`Route::long_lived`: the WebSocket and SSE routes) are left out
//! of the fuzzing: a successful answer never ends, which the fuzzer cannot wait for. Their
//! parameters and problems are checked by the `realtime` tests.

use std::process::Command;
use std::time::Instant;

use allsource_presentation::served_routes;
use allsource_tests::process::ServerProcess;
use serde_json::Value;

/// The schemathesis version `.ci/run` installs (the flags below are its CLI).
const SCHEMATHESIS: &str = "4.32.5";

/// Examples per operation and phase: with ~140 operations, the run stays within about three
/// minutes of a debug build on two cores.
const MAX_EXAMPLES: &str = "6";

fn schemathesis_available() -> bool {
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_and_the_docs_page_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[("ALLSOURCE__DEV", "true")]).await;
    let client = reqwest::Client::new();
    let reply = client
        .get(format!("{}/api-docs/openapi.json", server.base))
        .send()
        .await
        .expect("document");
    assert_eq!(reply.status(), 200);
    let document: Value = reply.json().await.expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let served = served_routes();
    assert_eq!(
        paths
            .values()
            .map(|item| item.as_object().map_or(0, |m| m.len()))
            .sum::<usize>(),
        served.len(),
        "one operation per served route"
    );

    let page = client
        .get(format!("{}/docs", server.base))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    let html = page.text().await.expect("page text");
    // Every asset the page loads is served by this server, from an absolute path of its own.
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/docs/"))
        .collect();
    assert!(assets.len() >= 4, "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for asset in assets {
        let reply = client
            .get(format!("{}{asset}", server.base))
            .send()
            .await
            .expect("asset");
        assert_eq!(reply.status(), 200, "{asset}");
        let body = reply.bytes().await.expect("asset body");
        assert!(!body.is_empty(), "{asset}");
    }
    let initializer = client
        .get(format!("{}/docs/swagger-initializer.js", server.base))
        .send()
        .await
        .expect("initializer")
        .text()
        .await
        .expect("text");
    assert!(
        initializer.contains("/api-docs/openapi.json"),
        "{initializer}"
    );
    let missing = client
        .get(format!("{}/docs/no-such-file.js", server.base))
        .send()
        .await
        .expect("missing asset");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fuzzer_finds_no_server_error_and_every_answer_conforms_to_the_document() {
    assert!(
        schemathesis_available(),
        "schemathesis is required: pip install schemathesis=={SCHEMATHESIS} (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    // `ALLSOURCE__DEV=true` is the setting `--dev` sets: authentication off, every request an
    // admin of tenant `default`.
    let server = ServerProcess::start(
        dir.path(),
        &[
            ("ALLSOURCE__DEV", "true"),
            ("ALLSOURCE__STORAGE__BACKEND", "memory"),
            ("ALLSOURCE__LOG__LEVEL", "warn"),
        ],
    )
    .await;
    let mut command = Command::new("timeout");
    command
        .arg("600")
        .arg("schemathesis")
        .arg("run")
        .arg(format!("{}/api-docs/openapi.json", server.base))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "20261202",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--continue-on-failure",
            "--warnings",
            "off",
            // Nothing kept between runs (and nothing written into the checkout).
            "--generation-database",
            "none",
        ])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "");
    let long_lived: Vec<String> = served_routes()
        .into_iter()
        .filter(|r| r.long_lived)
        .map(|r| r.path.to_owned())
        .collect();
    assert!(!long_lived.is_empty());
    for path in &long_lived {
        command.args(["--exclude-path", path]);
    }
    let started = Instant::now();
    let output = command.output().expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "after {:?}:\n{stdout}\n{stderr}\n--- server log ---\n{}",
        started.elapsed(),
        server.log_text()
    );
    // A failed check is always a failure of this test. A run can also stop an operation with
    // an error of the fuzzer itself: CPython 3.11's parser sometimes raises "AST constructor
    // recursion depth mismatch" while Hypothesis describes a strategy. That one error, and no
    // other, is tolerated (the operations it stopped are reported); anything else fails.
    let failed_checks = stdout.contains("=== FAILURES ===") || stdout.contains("Failures:");
    let errors = stdout.matches("Runtime Error:").count();
    let known_errors = stdout
        .matches("AST constructor recursion depth mismatch")
        .count();
    assert!(!failed_checks, "schemathesis found problems {report}");
    assert!(
        output.status.success() || (errors > 0 && known_errors >= errors),
        "schemathesis failed {report}"
    );
    if errors > 0 {
        eprintln!("schemathesis: {errors} operation(s) stopped by CPython's parser bug");
    }
    // It really tested the operations (a run that tested nothing would pass too).
    let tested = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    assert!(tested > 90, "only {tested} operations tested {report}");
}

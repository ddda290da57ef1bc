//! Backup and restore, black-box: online backups over HTTP while clients append, restored by
//! the real binary (`allsource backup restore`) into a data dir a new server opens with the
//! same events, positions and state-store contents up to the cut; incremental chains;
//! point-in-time restores; a corrupted file failing `verify` (REST and CLI); the routes'
//! access and errors; and a backup to a real local S3-compatible server (moto).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allsource_tests::problem::assert_problem;
use allsource_tests::process::{binary, free_port};
use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer};
use serde_json::{Value, json};

/// Every event of the default tenant, in position order.
async fn all_events(server: &TestServer) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let path = match out.last() {
            Some(e) => format!(
                "/api/v1/events/query?limit=10000&from_position={}",
                e["position"]
            ),
            None => "/api/v1/events/query?limit=10000".to_owned(),
        };
        let reply = server.get(&path).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let page = reply.body["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Appends from four clients until `stop`; returns how many batches each appended.
fn start_appenders(base: &str, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..4)
        .map(|c| {
            let (base, stop) = (base.to_owned(), Arc::clone(&stop));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let events: Vec<Value> = (0..5)
                        .map(|i| {
                            json!({"entity_id": format!("c{c}-{}", (n + i) % 13),
                                   "event_type": "load.appended",
                                   "payload": {"client": c, "n": n, "i": i, "pad": "x".repeat(200)}})
                        })
                        .collect();
                    let r = client
                        .post(format!("{base}/api/v1/events/batch"))
                        .json(&json!({"events": events}))
                        .send()
                        .await
                        .expect("append");
                    assert!(r.status().is_success(), "append answered {}", r.status());
                    n += 1;
                }
                n
            })
        })
        .collect()
}

/// Starts a backup and waits for it to complete; the completed backup.
async fn backup(server: &TestServer, body: Value) -> Value {
    let started = server.post_json("/api/v1/backups", &body).await;
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!(started.body["state"], "running");
    let id = started.body["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(
        started.header("location"),
        Some(format!("/api/v1/backups/{id}").as_str())
    );
    for _ in 0..600 {
        let reply = server.get(&format!("/api/v1/backups/{id}")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        match reply.body["state"].as_str() {
            Some("completed") => return reply.body,
            Some("running") => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("the backup failed: {}", reply.body),
        }
    }
    panic!("the backup did not complete");
}

/// Runs `allsource backup ARGS`; (exit code, stdout as JSON or text, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.arg("backup").args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run allsource backup");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore(from: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let dir = data_dir.to_str().unwrap();
    let mut args = vec![
        "restore",
        "--from",
        from,
        "--data-dir",
        dir,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args, env);
    assert_eq!(code, 0, "restore failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Small segments, so that backups copy sealed Parquet files and read the WAL's tail.
fn settings(target: &Path) -> impl FnOnce(&mut allsource::Settings) {
    let target = target.to_str().unwrap().to_owned();
    move |s: &mut allsource::Settings| {
        s.storage.segment_bytes = 32 * 1024;
        s.backup.target = target;
    }
}

async fn register_schema(server: &TestServer) -> Value {
    let reply = server
        .post_json(
            "/api/v1/schemas",
            &json!({"event_type": "load.appended", "schema": {"type": "object"}}),
        )
        .await;
    assert!(reply.status == 201 || reply.status == 200, "{}", reply.body);
    server.get("/api/v1/schemas").await.body
}

#[tokio::test]
async fn an_online_chain_under_load_restores_the_same_events_positions_and_state() {
    let target = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(settings(target.path())).await;
    let schemas = register_schema(&server).await;
    let stop = Arc::new(AtomicBool::new(false));
    let appenders = start_appenders(&server.base, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let full = backup(&server, json!({"kind": "full"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inc = backup(&server, json!({"kind": "incremental"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for a in appenders {
        assert!(a.await.unwrap() > 0);
    }
    let full_to = full["to_position"].as_u64().unwrap();
    let inc_to = inc["to_position"].as_u64().unwrap();
    assert_eq!(full["kind"], "full");
    assert_eq!(full["from_position"], 1);
    assert_eq!(full["event_count"], full_to);
    assert!(full["checksum"].as_str().unwrap().starts_with("sha256:"));
    assert!(full["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(inc["kind"], "incremental");
    assert_eq!(inc["since_backup"], full["backup_id"]);
    assert_eq!(inc["from_position"].as_u64().unwrap(), full_to + 1);
    assert_eq!(inc["event_count"].as_u64().unwrap(), inc_to - full_to);
    assert!(full_to > 0 && inc_to > full_to, "{full} {inc}");
    let source = all_events(&server).await;
    assert!(
        source.len() as u64 > inc_to,
        "appends went on after the cut"
    );
    let listed = server.get("/api/v1/backups").await;
    assert_eq!(listed.body["total"], 2, "{}", listed.body);
    assert_eq!(listed.body["backups"][0]["backup_id"], full["backup_id"]);
    server.stop().await;

    // The latest: every event up to the incremental's cut, positions unchanged, same state.
    let restored = tempfile::tempdir().unwrap();
    let report = restore(target.path().to_str().unwrap(), restored.path(), &[], &[]);
    assert_eq!(report["to_position"].as_u64(), Some(inc_to), "{report}");
    assert_eq!(
        report["chain"],
        json!([full["backup_id"], inc["backup_id"]])
    );
    let copy = TestServer::start_in(restored, |_| {}).await;
    let events = all_events(&copy).await;
    assert_eq!(events.len() as u64, inc_to);
    assert_eq!(
        events[..],
        source[..inc_to as usize],
        "the same events at the same positions"
    );
    assert_eq!(
        copy.get("/api/v1/schemas").await.body,
        schemas,
        "the same state store"
    );
    // The restored log goes on after the cut.
    let next = copy
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "after", "event_type": "load.appended", "payload": {}}),
        )
        .await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(
        next.body["position"].as_u64(),
        Some(inc_to + 1),
        "{}",
        next.body
    );
    copy.stop().await;

    // Point in time: between the two cuts, by position and by time.
    let at = full_to + (inc_to - full_to) / 2;
    let pit = tempfile::tempdir().unwrap();
    let report = restore(
        target.path().to_str().unwrap(),
        pit.path(),
        &["--to-position", &at.to_string()],
        &[],
    );
    assert_eq!(report["to_position"].as_u64(), Some(at));
    assert_eq!(report["state_from"], full["backup_id"]);
    let copy = TestServer::start_in(pit, |_| {}).await;
    let events = all_events(&copy).await;
    assert_eq!(
        events[..],
        source[..at as usize],
        "stops exactly at the position asked"
    );
    copy.stop().await;

    let when = source[at as usize - 1]["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let pit = tempfile::tempdir().unwrap();
    let report = restore(
        target.path().to_str().unwrap(),
        pit.path(),
        &["--to-time", &when],
        &[],
    );
    let last = report["to_position"].as_u64().unwrap();
    assert!(last >= at, "{report}");
    for e in &source[..last as usize] {
        assert!(e["timestamp"].as_str().unwrap() <= when.as_str());
    }
    assert!(source[last as usize]["timestamp"].as_str().unwrap() > when.as_str());

    // Before the full backup's cut there is no state that old: refused, or events only.
    let early = tempfile::tempdir().unwrap();
    let dir = early.path().join("data");
    let (code, _, err) = cli(
        &[
            "restore",
            "--from",
            target.path().to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
            "--to-position",
            "1",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--events-only"), "{err}");
    assert!(!dir.exists(), "nothing half-restored is left");
    // A data dir that holds anything is refused.
    let (code, _, err) = cli(
        &[
            "restore",
            "--from",
            target.path().to_str().unwrap(),
            "--data-dir",
            target.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");

    // The CLI lists the chain.
    let (code, out, err) = cli(
        &[
            "list",
            "--from",
            target.path().to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["total"], 2);
}

#[tokio::test]
async fn a_corrupted_file_fails_verify() {
    let target = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(settings(target.path())).await;
    for i in 0..50 {
        let r = server
            .post_json(
                "/api/v1/events",
                &json!({"entity_id": format!("e{}", i % 3), "event_type": "t", "payload": {"i": i}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let full = backup(&server, json!({"kind": "full"})).await;
    let id = full["backup_id"].as_str().unwrap();
    let ok = server
        .post_json(&format!("/api/v1/backups/{id}/verify"), &json!({}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["ok"], true, "{}", ok.body);
    assert!(ok.body["files_checked"].as_u64().unwrap() >= 2);

    // Flip one byte in the middle of an events file.
    let victim = std::fs::read_dir(target.path().join(id))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("events-"))
        .expect("an events file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();

    let bad = server
        .post_json(&format!("/api/v1/backups/{id}/verify"), &json!({}))
        .await;
    assert_eq!(bad.status, 200, "{}", bad.body);
    assert_eq!(bad.body["ok"], false, "{}", bad.body);
    let problems = bad.body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{}", bad.body);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        problems[0].as_str().unwrap().contains(&name),
        "{}",
        bad.body
    );
    server.stop().await;

    let (code, out, _) = cli(
        &[
            "verify",
            "--from",
            target.path().to_str().unwrap(),
            "--backup",
            id,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(code, 3, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false);
    // A restore refuses the damaged backup and leaves nothing behind.
    let restored = tempfile::tempdir().unwrap();
    let dir = restored.path().join("data");
    let (code, _, err) = cli(
        &[
            "restore",
            "--from",
            target.path().to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains(&name), "{err}");
    assert!(!dir.exists());
}

#[tokio::test]
async fn the_routes_refuse_bad_requests_and_need_an_operator() {
    let target = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(settings(target.path())).await;
    let bad = server
        .post_json("/api/v1/backups", &json!({"kind": "partial"}))
        .await;
    assert_problem(&bad, 400, "validation_failed");
    let bad = server
        .post_json("/api/v1/backups", &json!({"kind": "full", "extra": 1}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let none = server
        .post_json("/api/v1/backups", &json!({"kind": "incremental"}))
        .await;
    assert_problem(&none, 409, "conflict");
    let missing = server
        .get("/api/v1/backups/0193a1b2-0000-7000-8000-000000000000")
        .await;
    assert_problem(&missing, 404, "not_found");
    let missing = server
        .post_json("/api/v1/backups/..%2F..%2Fetc/verify", &json!({}))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    server.stop().await;

    // Without a target: 409 naming the setting.
    let server = TestServer::start().await;
    let refused = server
        .post_json("/api/v1/backups", &json!({"kind": "full"}))
        .await;
    assert_problem(&refused, 409, "conflict");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("backup.target")
    );
    server.stop().await;

    // The memory backend has nothing durable to back up.
    let server = TestServer::start_with(|s| {
        s.storage.backend = allsource::settings::Backend::Memory;
        s.backup.target = "/nonexistent-backups".into();
    })
    .await;
    let refused = server
        .post_json("/api/v1/backups", &json!({"kind": "full"}))
        .await;
    assert_problem(&refused, 409, "conflict");
    server.stop().await;

    // A tenant's own admin may not: backups hold every tenant's data.
    let target = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_auth(settings(target.path())).await;
    let tokens = allsource_tests::server::tenant_tokens(&server).await;
    let acme = tokens["acme"].clone();
    let login = server
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}),
        )
        .await;
    let root = login.body["access_token"].as_str().unwrap().to_owned();
    let refused = server
        .call(reqwest::Method::GET, "/api/v1/backups", Some(&acme), None)
        .await;
    assert_problem(&refused, 403, "forbidden");
    let listed = server
        .call(reqwest::Method::GET, "/api/v1/backups", Some(&root), None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let anonymous = server.get("/api/v1/backups").await;
    assert_eq!(anonymous.status, 401);
    server.stop().await;
}

/// `moto_server` on a free port, or `None` (a loud skip; CI sets `ALLSOURCE_REQUIRE_MOTO=1`).
fn start_moto() -> Option<(std::process::Child, u16)> {
    let port = free_port();
    match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => Some((child, port)),
        Err(e) => {
            assert!(
                std::env::var("ALLSOURCE_REQUIRE_MOTO").as_deref() != Ok("1"),
                "moto_server is required (pip install 'moto[server]'): {e}"
            );
            eprintln!("SKIPPED: moto_server is not installed (pip install 'moto[server]'): {e}");
            None
        }
    }
}

#[tokio::test]
async fn backups_go_to_an_s3_compatible_server_and_restore_from_it() {
    let Some((mut moto, port)) = start_moto() else {
        return;
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client
            .put(format!("{endpoint}/backups"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "moto_server did not start or create the bucket");
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("ALLSOURCE__BACKUP__S3_ENDPOINT", endpoint.as_str()),
        ("ALLSOURCE__BACKUP__S3_ALLOW_HTTP", "true"),
    ];
    let server = TestServer::start_with(|s| {
        s.storage.segment_bytes = 32 * 1024;
        s.backup.target = "s3://backups/nightly".into();
        s.backup.s3_endpoint = endpoint.clone();
        s.backup.s3_allow_http = true;
        s.backup.s3_region = "us-east-1".into();
        s.backup.s3_access_key_id = "testing".into();
        s.backup.s3_secret_access_key = "testing".into();
    })
    .await;
    let schemas = register_schema(&server).await;
    let stop = Arc::new(AtomicBool::new(false));
    let appenders = start_appenders(&server.base, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full = backup(&server, json!({"kind": "full"})).await;
    stop.store(true, Ordering::Relaxed);
    for a in appenders {
        a.await.unwrap();
    }
    let id = full["backup_id"].as_str().unwrap();
    let verified = server
        .post_json(&format!("/api/v1/backups/{id}/verify"), &json!({}))
        .await;
    assert_eq!(verified.body["ok"], true, "{}", verified.body);
    let source = all_events(&server).await;
    server.stop().await;

    let restored = tempfile::tempdir().unwrap();
    let report = restore("s3://backups/nightly", restored.path(), &[], &env);
    let to = full["to_position"].as_u64().unwrap();
    assert_eq!(report["to_position"].as_u64(), Some(to));
    let copy = TestServer::start_in(restored, |_| {}).await;
    assert_eq!(all_events(&copy).await[..], source[..to as usize]);
    assert_eq!(copy.get("/api/v1/schemas").await.body, schemas);
    copy.stop().await;
    let _ = moto.kill();
    let _ = moto.wait();
}

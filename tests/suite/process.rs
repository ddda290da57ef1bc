//! Tests of the real `allsource` binary as a child process: crash cycles with SIGKILL while
//! clients append, a graceful SIGTERM, and the command line.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allsource_tests::process::{ServerProcess, binary};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// What a receipt said: entity, version, position.
pub(crate) type Ack = (String, u64, u64);

#[derive(Default, Clone)]
pub(crate) struct Ledger {
    /// Every acknowledged event by id.
    pub(crate) acked: HashMap<String, Ack>,
    /// Every batch sent (acknowledged or not), by its ids.
    pub(crate) attempted: Vec<Vec<String>>,
}

fn pseudo_random(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos() as u64);
    nanos % bound
}

/// Appends from `clients` concurrent clients until `stop`, recording every acknowledgement.
pub(crate) fn start_clients(
    base: &str,
    clients: usize,
    ledger: &Arc<Mutex<Ledger>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let base = base.to_owned();
            let ledger = Arc::clone(ledger);
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let size = if n.is_multiple_of(3) { 3 } else { 1 };
                    let events: Vec<Value> = (0..size)
                        .map(|i| {
                            json!({
                                "id": uuid::Uuid::new_v4().to_string(),
                                "entity_id": format!("entity-{}", (c as u64 + n + i) % 6),
                                "event_type": "crash.test",
                                "payload": {"client": c, "n": n, "pad": "p".repeat(200)},
                            })
                        })
                        .collect();
                    let ids: Vec<String> = events
                        .iter()
                        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    ledger.lock().attempted.push(ids);
                    let sent = client
                        .post(format!("{base}/api/v1/events/batch"))
                        .json(&json!({"events": events}))
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    if response.status() != 200 {
                        break;
                    }
                    let Ok(body) = response.json::<Value>().await else {
                        break;
                    };
                    let mut ledger = ledger.lock();
                    for r in body["events"].as_array().into_iter().flatten() {
                        let ack = (
                            r["entity_id"].as_str().unwrap_or_default().to_owned(),
                            r["version"].as_u64().unwrap_or(0),
                            r["position"].as_u64().unwrap_or(0),
                        );
                        ledger
                            .acked
                            .insert(r["event_id"].as_str().unwrap_or_default().to_owned(), ack);
                    }
                }
            })
        })
        .collect()
}

/// Reads everything the server has, by paging.
async fn read_all(base: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut all = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let mut url = format!("{base}/api/v1/events/query?limit=10000");
        if let Some(c) = cursor {
            url.push_str(&format!("&from_position={c}"));
        }
        let page: Value = client
            .get(url)
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return all;
        }
        cursor = events.last().and_then(|e| e["position"].as_u64());
        all.extend(events);
    }
}

/// Every acknowledged event is there exactly once with its version and position; versions are
/// gapless; positions increase; every batch is whole or absent.
pub(crate) async fn verify(base: &str, ledger: &Ledger) -> u64 {
    let all = read_all(base).await;
    let mut by_id: HashMap<String, Ack> = HashMap::new();
    for e in &all {
        let id = e["id"].as_str().expect("id").to_owned();
        let ack = (
            e["entity_id"].as_str().expect("entity").to_owned(),
            e["version"].as_u64().expect("version"),
            e["position"].as_u64().expect("position"),
        );
        assert!(
            by_id.insert(id.clone(), ack).is_none(),
            "event {id} appears twice"
        );
    }
    let positions: Vec<u64> = all.iter().filter_map(|e| e["position"].as_u64()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions strictly increase"
    );
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &all {
        versions
            .entry(e["entity_id"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(e["version"].as_u64().unwrap_or(0));
    }
    for (entity, v) in &versions {
        assert_eq!(
            v,
            &(1..=v.len() as u64).collect::<Vec<_>>(),
            "{entity}: versions gapless"
        );
    }
    for (id, ack) in &ledger.acked {
        assert_eq!(
            by_id.get(id),
            Some(ack),
            "acknowledged event {id} is there with the acknowledged version and position"
        );
    }
    for batch in &ledger.attempted {
        let present = batch.iter().filter(|id| by_id.contains_key(*id)).count();
        assert!(
            present == 0 || present == batch.len(),
            "batch {batch:?} is partly present ({present})"
        );
    }
    positions.last().copied().unwrap_or(0)
}

/// Several cycles of: start the real binary, append from 8 clients, SIGKILL it; then check
/// every acknowledged event after each restart.
pub(crate) async fn crash_cycles(extra_env: &[(&str, &str)], expect_parquet: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut env = vec![("ALLSOURCE__STORAGE__DURABILITY", "fsync")];
    env.extend_from_slice(extra_env);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut last_position = 0;
    for cycle in 0..4 {
        let mut server = ServerProcess::start(&data, &env).await;
        {
            let ledger = ledger.lock().clone();
            let now = verify(&server.base, &ledger).await;
            assert!(now >= last_position, "cycle {cycle}: positions went back");
            last_position = now;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked_before = ledger.lock().acked.len();
        let clients = start_clients(&server.base, 8, &ledger, &stop);
        tokio::time::sleep(Duration::from_millis(300 + pseudo_random(400))).await;
        // On a loaded machine the first acknowledgements can take longer: the kill must land
        // while appends are acknowledged, not before any was — and, to seal segments, after
        // enough of them whatever the machine's speed.
        let wanted = acked_before + if expect_parquet { 60 } else { 1 };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while ledger.lock().acked.len() < wanted && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.kill9();
        stop.store(true, Ordering::Release);
        for c in clients {
            let _ = c.await;
        }
        assert!(
            !ledger.lock().acked.is_empty(),
            "cycle {cycle}: clients got acknowledgements"
        );
    }
    let server = ServerProcess::start(&data, &env).await;
    let ledger = ledger.lock().clone();
    verify(&server.base, &ledger).await;
    let fresh: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/events", server.base))
        .json(&json!({"entity_id": "after", "event_type": "t", "payload": {}}))
        .send()
        .await
        .expect("append")
        .json()
        .await
        .expect("json");
    let max_acked = ledger.acked.values().map(|a| a.2).max().unwrap_or(0);
    assert!(
        fresh["position"].as_u64().unwrap_or(0) > max_acked,
        "positions continue after restarts"
    );
    if expect_parquet {
        let stats: Value = reqwest::get(format!("{}/api/v1/stats", server.base))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        assert!(
            stats["storage"]["parquet_files"].as_u64().unwrap_or(0) > 0,
            "segments were sealed into Parquet during the cycles: {stats}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_cycles() {
    crash_cycles(&[], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_cycles_while_sealing_parquet() {
    // About 300 WAL bytes per event: 4 cycles of at least 60 events fill several segments.
    crash_cycles(&[("ALLSOURCE__STORAGE__SEGMENT_BYTES", "16384")], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_appends_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let env = [("ALLSOURCE__STORAGE__DURABILITY", "fsync")];
    let mut server = ServerProcess::start(&data, &env).await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&server.base, 4, &ledger, &stop);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    })
    .await
    .expect("terminate");
    assert!(
        status.0.success(),
        "exit status {:?}\n{}",
        status.0,
        status.1.log_text()
    );
    assert!(status.1.log_text().contains("shut down cleanly"));
    stop.store(true, Ordering::Release);
    for c in clients {
        let _ = c.await;
    }
    let server = ServerProcess::start(&data, &env).await;
    let ledger = ledger.lock().clone();
    assert!(!ledger.acked.is_empty());
    verify(&server.base, &ledger).await;
}

#[test]
fn help_explains_the_commands_and_flags() {
    let top = Command::new(binary()).arg("--help").output().expect("run");
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    for word in ["serve", "repair", "bench"] {
        assert!(text.contains(word), "{word} in\n{text}");
    }
    let serve = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("run");
    assert!(serve.status.success());
    let text = String::from_utf8_lossy(&serve.stdout);
    for flag in ["--config", "--dev", "--port", "--data-dir", "ALLSOURCE__"] {
        assert!(text.contains(flag), "{flag} in\n{text}");
    }
}

#[test]
fn the_create_user_example_of_the_help_works_as_pasted() {
    let help = Command::new(binary())
        .args(["admin", "create-user", "--help"])
        .output()
        .expect("run");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    let example = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains("| allsource admin create-user"))
        .unwrap_or_else(|| panic!("an example in\n{text}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = binary().parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let pasted = Command::new("sh")
        .args(["-c", example])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("ALLSOURCE__STORAGE__BACKEND")
        .output()
        .expect("run the example");
    assert!(
        pasted.status.success(),
        "{example}\n{}",
        String::from_utf8_lossy(&pasted.stderr)
    );
    let user: Value = serde_json::from_slice(&pasted.stdout).expect("the created user as JSON");
    assert_eq!(user["username"], "alice");
    assert_eq!(user["role"], "admin");
    assert!(dir.path().join("data/state").is_dir());
}

#[test]
fn invalid_settings_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(binary())
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("ALLSOURCE__STORAGE__BACKEND", "mongo")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("storage.backend") && stderr.contains("embedded, memory, postgres"),
        "{stderr}"
    );
    let output = Command::new(binary())
        .args(["serve", "--config", "/nonexistent/allsource.toml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

/// Runs `command` to its end, or kills it after `within` (a server that should have refused to
/// start must not hang the test).
fn run_to_end(command: &mut Command, within: Duration) -> std::process::Output {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().expect("wait").is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("output")
}

#[test]
fn an_invalid_log_filter_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (var, key) in [
        ("ALLSOURCE__LOG__LEVEL", "log.level"),
        ("RUST_LOG", "RUST_LOG"),
    ] {
        let output = run_to_end(
            Command::new(binary())
                .args(["serve", "--port", "0", "--data-dir"])
                .arg(dir.path())
                .env("ALLSOURCE__AUTH__ENABLED", "false")
                .env_remove("RUST_LOG")
                .env(var, "verbose"),
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && output.status.code().is_some(),
            "{var}=verbose must stop the start: {:?}\n{stderr}",
            output.status
        );
        assert!(
            stderr.contains(&format!("invalid setting {key}:"))
                && stderr.contains("\"verbose\" is not a level")
                && stderr.contains("trace, debug, info, warn, error, off"),
            "{stderr}"
        );
    }
}

#[test]
fn an_io_error_names_each_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `wal` is a file where the store needs a directory.
    std::fs::write(dir.path().join("wal"), b"not a directory").expect("write");
    let output = run_to_end(
        Command::new(binary())
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(dir.path())
            .env("ALLSOURCE__AUTH__ENABLED", "false"),
        Duration::from_secs(20),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("an error line in\n{stderr}"));
    assert!(error.contains("wal"), "{error}");
    // One I/O error, printed once (not once by a message that embeds it and again as its
    // cause).
    assert_eq!(error.matches("os error").count(), 1, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_refuses_a_data_dir_in_use_by_a_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &[("ALLSOURCE__STORAGE__DURABILITY", "fsync")]).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let r = client
            .post(format!("{}/api/v1/events", server.base))
            .json(&json!({"entity_id": "r", "event_type": "t", "payload": {"i": i, "pad": "q".repeat(100)}}))
            .send()
            .await
            .expect("append");
        assert_eq!(r.status(), 200);
    }
    // Damage the live WAL, so that a repair would cut it if it ran.
    let segment = std::fs::read_dir(data.join("wal"))
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&segment, &bytes).expect("write");
    let files = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files(&data.join("wal"));

    let refused = run_to_end(
        Command::new(binary())
            .args(["repair", "--data-dir"])
            .arg(&data),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "repair ran on a live data dir: {stderr}"
    );
    assert!(
        stderr.contains("in use by a running AllSource process")
            && stderr.contains("stop the server")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&segment).expect("read"),
        bytes,
        "the WAL is untouched"
    );
    assert_eq!(files(&data.join("wal")), before, "no file set aside");
    // The server goes on serving.
    let r = client
        .get(format!("{}/api/v1/entities/r/events", server.base))
        .send()
        .await
        .expect("read");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_data_dir_is_created_if_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("nested/deeper/data");
    let server = ServerProcess::start(&data, &[]).await;
    assert!(data.join("wal").is_dir());
    let health: Value = reqwest::get(format!("{}/health", server.base))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(health["storage"]["backend"], "embedded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_wal_refuses_to_start_until_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server =
        ServerProcess::start(&data, &[("ALLSOURCE__STORAGE__DURABILITY", "fsync")]).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let r = client
            .post(format!("{}/api/v1/events", server.base))
            .json(&json!({"entity_id": "c", "event_type": "t", "payload": {"i": i, "pad": "q".repeat(100)}}))
            .send()
            .await
            .expect("append");
        assert_eq!(r.status(), 200);
    }
    assert!(server.terminate().success());
    let segment = std::fs::read_dir(data.join("wal"))
        .expect("wal dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&segment, &bytes).expect("write");

    let refused = Command::new(binary())
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(&data)
        .env("ALLSOURCE__AUTH__ENABLED", "false")
        .output()
        .expect("run");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("corrupt") && stderr.contains("allsource repair --data-dir"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&segment).expect("read"),
        bytes,
        "the refusal changed nothing"
    );

    let repaired = Command::new(binary())
        .args(["repair", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(
        repaired.status.success(),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    assert!(String::from_utf8_lossy(&repaired.stdout).contains(".corrupt-"));

    let server = ServerProcess::start(&data, &[]).await;
    let stream: Value = client
        .get(format!("{}/api/v1/entities/c/events", server.base))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let count = stream["count"].as_u64().expect("count");
    assert!(
        (1..5).contains(&count),
        "the events before the corruption remain: {count}"
    );
}

//! `allsource admin ...` over HTTP: the real binary as a child process against a real server
//! (in process, on port 0), for every command group: what it prints in table and json form,
//! what it changes on the server, and its exit codes for a server that is down, a refused or
//! missing credential, an unknown resource and a conflict. `tail` follows appends made while
//! it runs. `admin backups` creates, lists, shows and verifies backups of a server with a
//! backup target (restoring is offline: `tests/suite/backup.rs`).

use std::process::Stdio;
use std::time::Duration;

use allsource_tests::process::{binary, free_port};
use allsource_tests::server::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

/// What a run of the CLI gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// [`admin`] that must succeed, and its standard output as JSON.
async fn admin_json(base: &str, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Value {
    admin(base, token, args, stdin).await.ok().json()
}

/// Runs `allsource admin <args>` against `base`, with the token (if any) in `ALLSOURCE_TOKEN`.
async fn admin(base: &str, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = tokio::process::Command::new(binary());
    command
        .arg("admin")
        .args(args)
        .env("ALLSOURCE_URL", base)
        .env_remove("ALLSOURCE_TOKEN")
        .env_remove("ALLSOURCE_OUTPUT")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("ALLSOURCE_TOKEN", token);
    }
    let mut child = command.spawn().expect("spawn allsource admin");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the CLI finished in time")
        .expect("the CLI ran");
    Run {
        code: out.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn append(server: &TestServer, entity: &str, event_type: &str, n: u64) {
    let reply = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": entity, "event_type": event_type, "payload": {"n": n}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_users_and_keys_are_administered_with_a_token() {
    binary();
    let server = TestServer::start_with_auth(|_| {}).await;
    let base = server.base.clone();
    let root = server.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let root = Some(root.as_str());

    // Tenants: create (table), a second create is a conflict, list (json), show, update.
    let created = admin(
        &base,
        root,
        &[
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme Corp",
            "--tier",
            "professional",
        ],
        None,
    )
    .await
    .ok();
    assert!(
        created.stdout.lines().next().unwrap().starts_with("id:"),
        "{}",
        created.stdout
    );
    assert!(created.stdout.contains("Acme Corp"), "{}", created.stdout);
    assert!(created.stdout.contains("tier:") && created.stdout.contains("professional"));
    let again = admin(&base, root, &["tenants", "create", "acme"], None).await;
    assert_eq!(again.code, 6, "{}", again.stderr);
    assert!(again.stderr.contains("409"), "{}", again.stderr);
    assert!(
        again.stdout.is_empty(),
        "errors go to stderr: {}",
        again.stdout
    );
    let list = admin(&base, root, &["tenants", "list", "--output", "json"], None)
        .await
        .ok();
    let list = list.json();
    let ids: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"acme") && ids.contains(&"default"), "{ids:?}");
    let table = admin(&base, root, &["tenants", "list"], None).await.ok();
    assert!(table.stdout.starts_with("ID "), "{}", table.stdout);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("acme ") && l.contains("professional")),
        "{}",
        table.stdout
    );
    let missing = admin(&base, root, &["tenants", "show", "nope"], None).await;
    assert_eq!(missing.code, 5, "{}", missing.stderr);
    assert!(missing.stderr.starts_with("error: "), "{}", missing.stderr);
    assert!(
        !missing.stderr.contains("Http {"),
        "no debug dump: {}",
        missing.stderr
    );
    admin(
        &base,
        root,
        &["tenants", "update", "acme", "--name", "Acme Inc"],
        None,
    )
    .await
    .ok();
    let shown = server
        .call(reqwest::Method::GET, "/api/v1/tenants/acme", root, None)
        .await;
    assert_eq!(shown.body["name"], "Acme Inc");

    // Quotas: set one, make one unlimited; read back through the server.
    admin(
        &base,
        root,
        &[
            "tenants",
            "set-quotas",
            "acme",
            "--max-api-keys",
            "7",
            "--max-pipelines",
            "unlimited",
        ],
        None,
    )
    .await
    .ok();
    let quotas = admin_json(
        &base,
        root,
        &["tenants", "quotas", "acme", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(quotas["quotas"]["max_api_keys"], 7, "{quotas}");
    assert_eq!(quotas["quotas"]["max_pipelines"], Value::Null, "{quotas}");
    let bad = admin(
        &base,
        root,
        &["tenants", "set-quotas", "acme", "--max-api-keys", "many"],
        None,
    )
    .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let stats = admin_json(
        &base,
        root,
        &["tenants", "stats", "acme", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(stats["tenant_id"], "acme", "{stats}");

    // Users: created with the password on stdin, listed, logged in with.
    let user = admin_json(
        &base,
        root,
        &[
            "users",
            "create",
            "--username",
            "acme-ops",
            "--password-stdin",
            "--role",
            "admin",
            "--tenant",
            "acme",
            "--output",
            "json",
        ],
        Some("a long password 123\n"),
    )
    .await;
    assert_eq!(user["tenant_id"], "acme");
    let user_id = user["id"].as_str().unwrap().to_owned();
    let ops = server.login("acme-ops", "a long password 123").await;
    let users = admin(&base, Some(&ops), &["users", "list"], None)
        .await
        .ok();
    assert!(
        users.stdout.lines().any(|l| {
            l.split_whitespace().take(4).collect::<Vec<_>>()
                == [&user_id, "acme-ops", "acme", "admin"]
        }),
        "{}",
        users.stdout
    );

    // Keys: the new key works as a credential (whoami), then revoked it is refused (exit 4).
    let key = admin_json(
        &base,
        Some(&ops),
        &[
            "keys", "create", "--name", "ci", "--role", "readonly", "--output", "json",
        ],
        None,
    )
    .await;
    let secret = key["key"]
        .as_str()
        .expect("the key is shown once")
        .to_owned();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let me = admin_json(&base, Some(&secret), &["whoami", "--output", "json"], None).await;
    assert_eq!(me["tenant_id"], "acme", "{me}");
    assert_eq!(me["role"], "readonly", "{me}");
    assert_eq!(me["type"], "api_key", "{me}");
    let keys = admin(&base, Some(&ops), &["keys", "list"], None).await.ok();
    assert!(
        keys.stdout
            .lines()
            .any(|l| l.starts_with(&key_id) && l.contains("ci")),
        "{}",
        keys.stdout
    );
    // A readonly key may not manage tenants: 403 is exit 4 too.
    let forbidden = admin(&base, Some(&secret), &["tenants", "create", "x"], None).await;
    assert_eq!(forbidden.code, 4, "{}", forbidden.stderr);
    assert!(
        forbidden.stderr.contains("not allowed (403"),
        "{}",
        forbidden.stderr
    );
    admin(&base, Some(&ops), &["keys", "revoke", &key_id], None)
        .await
        .ok();
    let revoked = admin(&base, Some(&secret), &["whoami"], None).await;
    assert_eq!(revoked.code, 4, "{}", revoked.stderr);
    assert!(
        revoked.stderr.contains("refused the credential (401"),
        "{}",
        revoked.stderr
    );

    // Deactivate: acme's token is refused at once; activate restores it.
    admin(&base, root, &["tenants", "deactivate", "acme"], None)
        .await
        .ok();
    assert_eq!(admin(&base, Some(&ops), &["whoami"], None).await.code, 4);
    admin(&base, root, &["tenants", "activate", "acme"], None)
        .await
        .ok();
    admin(&base, Some(&ops), &["whoami"], None).await.ok();

    // Users delete, then tenant delete.
    let temp = admin_json(
        &base,
        root,
        &[
            "users",
            "create",
            "--username",
            "temp",
            "--password",
            "another long password",
            "--role",
            "readonly",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    let temp_id = temp["id"].as_str().unwrap().to_owned();
    admin(&base, root, &["users", "show", &temp_id], None)
        .await
        .ok();
    admin(&base, root, &["users", "delete", &temp_id], None)
        .await
        .ok();
    assert_eq!(
        admin(&base, root, &["users", "show", &temp_id], None)
            .await
            .code,
        5
    );
    let deleted = admin_json(
        &base,
        root,
        &["tenants", "delete", "acme", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(deleted, json!({"id": "acme", "deleted": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_missing_credentials_and_a_server_that_is_down() {
    binary();
    let server = TestServer::start_with_auth(|_| {}).await;
    let wrong = admin(&server.base, Some("ask_not-a-real-key"), &["stats"], None).await;
    assert_eq!(wrong.code, 4, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("refused the credential (401"),
        "{}",
        wrong.stderr
    );
    assert!(
        wrong.stderr.contains("expired or been revoked"),
        "{}",
        wrong.stderr
    );
    let none = admin(&server.base, None, &["tenants", "list"], None).await;
    assert_eq!(none.code, 4, "{}", none.stderr);
    assert!(none.stderr.contains("ALLSOURCE_TOKEN"), "{}", none.stderr);

    // Nothing listens on this port.
    let down = format!("http://127.0.0.1:{}", free_port());
    for args in [
        &["stats"][..],
        &["tenants", "list"],
        &["tail", "--limit", "1"],
    ] {
        let run = admin(&down, None, args, None).await;
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&down) && run.stderr.contains("cannot be reached"),
            "{}",
            run.stderr
        );
    }
    let bad_url = admin("localhost:3900", None, &["stats"], None).await;
    assert_eq!(bad_url.code, 2, "{}", bad_url.stderr);
    assert!(bad_url.stderr.contains("--url"), "{}", bad_url.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_schemas_projections_consumers_groups_and_compaction() {
    binary();
    let server = TestServer::start().await; // authentication off, as `serve --dev`
    let base = server.base.clone();
    for n in 1..=3 {
        append(&server, "order-1", "order.placed", n).await;
    }
    append(&server, "user-1", "user.signed_up", 0).await;

    let stats = admin_json(&base, None, &["stats", "--output", "json"], None).await;
    assert_eq!(stats["total_events"], 4, "{stats}");
    let table = admin(&base, None, &["stats"], None).await.ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("total_events:") && l.ends_with(" 4")),
        "{}",
        table.stdout
    );

    // Schemas.
    let schema = r#"{"type": "object", "required": ["n"]}"#;
    admin(
        &base,
        None,
        &[
            "schemas",
            "register",
            "order.placed",
            "--schema",
            schema,
            "--enforce",
            "true",
        ],
        None,
    )
    .await
    .ok();
    let list = admin(&base, None, &["schemas", "list"], None).await.ok();
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with("order.placed ") && l.contains("true")),
        "{}",
        list.stdout
    );
    let shown = admin_json(
        &base,
        None,
        &["schemas", "show", "order.placed", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(shown["schema"]["required"], json!(["n"]), "{shown}");
    let refused = server
        .post_json(
            "/api/v1/events",
            &json!({"entity_id": "o", "event_type": "order.placed", "payload": {}}),
        )
        .await;
    assert_eq!(
        refused.status, 422,
        "the schema is enforced: {}",
        refused.body
    );
    admin(
        &base,
        None,
        &[
            "schemas",
            "compatibility",
            "order.placed",
            "--enforce",
            "false",
        ],
        None,
    )
    .await
    .ok();
    let versions = admin_json(
        &base,
        None,
        &["schemas", "versions", "order.placed", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(versions["versions"], json!([1]));
    let bad = admin(
        &base,
        None,
        &["schemas", "register", "x", "--schema", "{nope"],
        None,
    )
    .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_eq!(
        admin(&base, None, &["schemas", "show", "unknown"], None)
            .await
            .code,
        5
    );

    // Projections.
    admin(
        &base,
        None,
        &[
            "projections",
            "create",
            "--definition",
            r#"{"name": "event_counter"}"#,
        ],
        None,
    )
    .await
    .ok();
    let mut counted = Value::Null;
    for _ in 0..200 {
        counted = admin_json(
            &base,
            None,
            &["projections", "state", "event_counter", "--output", "json"],
            None,
        )
        .await;
        if counted["state"]["order.placed"]["count"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted["state"]["order.placed"]["count"], 3, "{counted}");
    let state = admin(
        &base,
        None,
        &["projections", "state", "event_counter"],
        None,
    )
    .await
    .ok();
    assert!(
        state
            .stdout
            .lines()
            .any(|l| l.starts_with("order.placed ") && l.contains(r#"{"count":3}"#)),
        "{}",
        state.stdout
    );
    let one = admin_json(
        &base,
        None,
        &[
            "projections",
            "state",
            "event_counter",
            "--key",
            "user.signed_up",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert_eq!(one["state"]["count"], 1, "{one}");
    let listed = admin(&base, None, &["projections", "list"], None)
        .await
        .ok();
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with("event_counter ")),
        "{}",
        listed.stdout
    );
    admin(&base, None, &["projections", "show", "event_counter"], None)
        .await
        .ok();
    let job = admin_json(
        &base,
        None,
        &[
            "projections",
            "rebuild",
            "event_counter",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert_eq!(job["projection"], "event_counter", "{job}");
    let again = admin(
        &base,
        None,
        &[
            "projections",
            "create",
            "--definition",
            r#"{"name": "event_counter"}"#,
        ],
        None,
    )
    .await;
    assert_eq!(again.code, 6, "{}", again.stderr);

    // Consumers: create, poll its events (the cursor does not move), ack, delete.
    admin(
        &base,
        None,
        &["consumers", "create", "orders", "--filter", "order.*"],
        None,
    )
    .await
    .ok();
    let events = admin(&base, None, &["consumers", "events", "orders"], None)
        .await
        .ok();
    let lines: Vec<&str> = events.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", events.stdout);
    assert!(
        lines[0].starts_with("1  ") && lines[0].contains("order.placed  order-1  v1"),
        "{}",
        lines[0]
    );
    admin(
        &base,
        None,
        &["consumers", "ack", "orders", "--position", "2"],
        None,
    )
    .await
    .ok();
    let consumer = admin_json(
        &base,
        None,
        &["consumers", "show", "orders", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(consumer["cursor_position"], 2, "{consumer}");
    let polled = admin_json(
        &base,
        None,
        &["consumers", "events", "orders", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(polled["count"], 1, "{polled}");
    let consumers = admin(&base, None, &["consumers", "list"], None).await.ok();
    assert!(
        consumers
            .stdout
            .lines()
            .any(|l| l.starts_with("orders ") && l.contains("order.*")),
        "{}",
        consumers.stdout
    );
    let past = admin(
        &base,
        None,
        &["consumers", "ack", "orders", "--position", "999"],
        None,
    )
    .await;
    assert_eq!(past.code, 6, "{}", past.stderr);
    assert!(past.stderr.contains("position"), "{}", past.stderr);
    let deleted = admin_json(
        &base,
        None,
        &["consumers", "delete", "orders", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(deleted, json!({"consumer_id": "orders", "deleted": true}));
    assert_eq!(
        admin(&base, None, &["consumers", "show", "orders"], None)
            .await
            .code,
        5
    );

    // Consumer groups (created over HTTP; the CLI reads and manages them).
    let created = server
        .post_json(
            "/api/v1/consumer-groups",
            &json!({"group": "billing", "event_type_filters": ["order.*"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let groups = admin(&base, None, &["consumer-groups", "list"], None)
        .await
        .ok();
    assert!(
        groups.stdout.lines().any(|l| l.starts_with("billing ")),
        "{}",
        groups.stdout
    );
    let group_stats = admin_json(
        &base,
        None,
        &["consumer-groups", "stats", "billing", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(group_stats["lag"], 3, "{group_stats}");
    admin(&base, None, &["consumer-groups", "parked", "billing"], None)
        .await
        .ok();
    admin(
        &base,
        None,
        &["consumer-groups", "replay-parked", "billing"],
        None,
    )
    .await
    .ok();
    admin(&base, None, &["consumer-groups", "delete", "billing"], None)
        .await
        .ok();
    assert_eq!(
        admin(&base, None, &["consumer-groups", "show", "billing"], None)
            .await
            .code,
        5
    );

    // Compaction (embedded backend).
    let compaction = admin_json(
        &base,
        None,
        &["compaction", "stats", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(compaction["backend"], "embedded", "{compaction}");
    let triggered = admin_json(
        &base,
        None,
        &["compaction", "trigger", "--output", "json"],
        None,
    )
    .await;
    assert!(triggered.get("compacted").is_some(), "{triggered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_created_listed_shown_and_verified() {
    binary();
    let target = tempfile::tempdir().expect("temp dir");
    let target_path = target.path().to_str().expect("utf-8 path").to_owned();
    let server = TestServer::start_with(move |s| s.backup.target = target_path).await;
    let base = server.base.clone();
    for n in 1..=5 {
        append(&server, &format!("order-{}", n % 2), "order.placed", n).await;
    }

    // Without --wait: the running job at once (202), or already finished.
    let started = admin_json(
        &base,
        None,
        &["backups", "create", "--output", "json"],
        None,
    )
    .await;
    let full = started["backup_id"].as_str().expect("an id").to_owned();
    assert_eq!(started["kind"], "full", "{started}");
    assert!(
        ["running", "completed"].contains(&started["state"].as_str().unwrap_or("")),
        "{started}"
    );
    // Show until it has completed.
    let mut shown = Value::Null;
    for _ in 0..300 {
        shown = admin_json(
            &base,
            None,
            &["backups", "show", &full, "--output", "json"],
            None,
        )
        .await;
        if shown["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown["state"], "completed", "{shown}");
    assert_eq!(shown["to_position"], 5, "{shown}");
    assert_eq!(shown["event_count"], 5, "{shown}");

    // With --wait: the finished backup; an incremental one continues the full one.
    append(&server, "order-9", "order.paid", 6).await;
    let incremental = admin_json(
        &base,
        None,
        &[
            "backups",
            "create",
            "--kind",
            "incremental",
            "--wait",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert_eq!(incremental["state"], "completed", "{incremental}");
    assert_eq!(incremental["since_backup"], full.as_str(), "{incremental}");
    assert_eq!(incremental["from_position"], 6, "{incremental}");
    assert_eq!(incremental["to_position"], 6, "{incremental}");
    let incremental_id = incremental["backup_id"].as_str().expect("an id").to_owned();

    // The list, as JSON and as a table.
    let listed = admin_json(&base, None, &["backups", "list", "--output", "json"], None).await;
    assert_eq!(listed["total"], 2, "{listed}");
    let ids: Vec<&str> = listed["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter_map(|b| b["backup_id"].as_str())
        .collect();
    assert_eq!(ids, [full.as_str(), incremental_id.as_str()], "{listed}");
    let table = admin(&base, None, &["backups", "list"], None).await.ok();
    let header = table.stdout.lines().next().unwrap_or("");
    assert!(
        header.starts_with("ID") && header.contains("STATE") && header.contains("EVENTS"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(&full) && l.contains(" full ") && l.contains(" completed ")),
        "{}",
        table.stdout
    );

    // Verify: intact, then with a flipped byte (exit 1, the problem printed).
    let report = admin_json(
        &base,
        None,
        &["backups", "verify", &full, "--output", "json"],
        None,
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    let victim = std::fs::read_dir(target.path().join(&full))
        .expect("the backup's directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("events-"))
        .expect("an events file");
    let mut bytes = std::fs::read(&victim).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&victim, bytes).expect("write");
    let damaged = admin(
        &base,
        None,
        &["backups", "verify", &full, "--output", "json"],
        None,
    )
    .await;
    assert_eq!(damaged.code, 1, "stderr: {}", damaged.stderr);
    assert_eq!(damaged.json()["ok"], false, "{}", damaged.stdout);
    assert!(damaged.stderr.contains("damaged"), "{}", damaged.stderr);

    // Unknown backup (5), a full backup with a base (usage, 2).
    let unknown = admin(&base, None, &["backups", "show", "no-such-backup"], None).await;
    assert_eq!(unknown.code, 5, "stderr: {}", unknown.stderr);
    let usage = admin(
        &base,
        None,
        &[
            "backups",
            "create",
            "--kind",
            "full",
            "--since-backup",
            &full,
        ],
        None,
    )
    .await;
    assert_eq!(usage.code, 2, "stderr: {}", usage.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_replayed_and_live_events_until_its_limit() {
    binary();
    let server = TestServer::start_with_auth(|_| {}).await;
    let root = server.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let auth = |body: Value| {
        let server = &server;
        let root = root.clone();
        async move {
            let reply = server
                .call(
                    reqwest::Method::POST,
                    "/api/v1/events",
                    Some(&root),
                    Some(&body),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    };
    auth(json!({"entity_id": "order-1", "event_type": "order.placed", "payload": {"n": 1}})).await;
    auth(json!({"entity_id": "user-1", "event_type": "user.signed_up", "payload": {"n": 2}})).await;

    // Replays after position 0 (the two above), then live: whatever the timing, the four
    // matching events arrive once each, in order.
    let base = server.base.clone();
    let token = root.clone();
    let tail = tokio::spawn(async move {
        admin(
            &base,
            Some(&token),
            &[
                "tail",
                "--from-position",
                "0",
                "--limit",
                "3",
                "--output",
                "json",
            ],
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    auth(json!({"entity_id": "order-2", "event_type": "order.placed", "payload": {"n": 3}})).await;
    auth(json!({"entity_id": "order-3", "event_type": "order.placed", "payload": {"n": 4}})).await;
    let run = tail.await.unwrap().ok();
    let events: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3], "{}", run.stdout);
    assert_eq!(events[2]["entity_id"], "order-2");

    // Filters and the table form: only order events, one line each.
    let filtered = admin(
        &server.base,
        Some(&root),
        &[
            "tail",
            "--from-position",
            "0",
            "--filter",
            "order.*",
            "--limit",
            "3",
        ],
        None,
    )
    .await
    .ok();
    let lines: Vec<&str> = filtered.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", filtered.stdout);
    assert!(
        lines.iter().all(|l| l.contains("  order.placed  ")),
        "{}",
        filtered.stdout
    );
    assert!(
        lines[2].starts_with("4  ") && lines[2].contains("order-3  v1  {\"n\":4}"),
        "{}",
        lines[2]
    );
    let entity = admin(
        &server.base,
        Some(&root),
        &[
            "tail",
            "--from-position",
            "0",
            "--entity",
            "order-3",
            "--limit",
            "1",
            "--output",
            "json",
        ],
        None,
    )
    .await
    .ok();
    assert_eq!(
        serde_json::from_str::<Value>(entity.stdout.trim()).unwrap()["position"],
        4,
        "{}",
        entity.stdout
    );

    // A bad filter is refused (exit 6); a refused credential at the handshake is exit 4.
    let bad = admin(
        &server.base,
        Some(&root),
        &["tail", "--filter", "", "--limit", "1"],
        None,
    )
    .await;
    assert_eq!(bad.code, 6, "{}", bad.stderr);
    let refused = admin(
        &server.base,
        Some("ask_wrong"),
        &["tail", "--limit", "1"],
        None,
    )
    .await;
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("refused the credential"),
        "{}",
        refused.stderr
    );
}

/// The `sh` blocks of docs/OPERATIONS.md, "The admin CLI", pasted as an operator would (the
/// real binary, `curl`, `jq`, a `serve --dev` server on a free port): every command succeeds.
#[test]
fn the_documented_session_runs_as_written() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/OPERATIONS.md"
    ))
    .expect("docs/OPERATIONS.md");
    let start = guide.find("\n## The admin CLI\n").expect("the section");
    let section = &guide[start + 1..];
    let section = section[3..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 3]);
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find("```sh\n") {
        let body = &rest[at + 6..];
        let end = body.find("```").expect("a closed block");
        blocks.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    assert!(blocks.len() >= 8, "the session has its blocks");
    assert!(
        blocks.last().is_some_and(|b| b.contains("kill $PID")),
        "it stops the server"
    );
    let port = free_port();
    let binary = binary();
    let bin_dir = binary.parent().expect("binary dir");
    let script = format!(
        "set -eu\nexport PATH={}:$PATH\nexport ALLSOURCE__SERVER__PORT={port}\n{}",
        bin_dir.display(),
        blocks
            .join("\n")
            .replace("localhost:3900", &format!("localhost:{port}"))
            .replace("127.0.0.1:3900", &format!("127.0.0.1:{port}"))
    );
    let output = std::process::Command::new("timeout")
        .args(["300", "bash", "-c"])
        .arg(&script)
        .env_remove("ALLSOURCE_URL")
        .env_remove("ALLSOURCE_TOKEN")
        .env_remove("ALLSOURCE_OUTPUT")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the session failed: {stdout}\n{stderr}"
    );
    for shown in [
        "exit 3",
        "id:                             acme",
        r#"{"position":1,"event_type":"order.placed"}"#,
        "order.placed  {\"count\":1}",
        "orders-projection  order.*",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }
}

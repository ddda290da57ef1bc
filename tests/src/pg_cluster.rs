//! A PostgreSQL primary with a streaming-replication standby of its own, for the standby-read
//! tests: `initdb` and `pg_basebackup` into a temporary directory, both servers on free ports
//! of 127.0.0.1, from the binaries `pg_config --bindir` names (Debian's PostgreSQL server
//! package). PostgreSQL refuses to run as root, so when the tests run as root the servers run
//! as the `postgres` user.
//!
//! One pair per test binary, started by the first test that asks ([`ReplicatedPair::shared`])
//! and stopped when the test binary exits. Each test makes its own database on the primary
//! ([`ReplicatedPair::database`]), which replication brings to the standby.
//!
//! Without the binaries the tests are skipped loudly, unless `ALLSOURCE_REQUIRE_POSTGRES=1`.
#![allow(unsafe_code)] // geteuid, chown and atexit, for the servers' user and their stop at exit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::pg::TestDatabase;
use crate::process::free_port;

/// A running primary and its standby.
pub struct ReplicatedPair {
    pub primary_port: u16,
    pub standby_port: u16,
}

/// A test's database on the primary, and the same database's URL on the standby.
pub struct ReplicatedDatabase {
    pub primary: TestDatabase,
    pub standby_url: String,
}

/// A started server: the binaries' directory, its data directory, and the user it runs as.
struct Running {
    bindir: PathBuf,
    data: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// The servers to stop when the test binary exits.
static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

extern "C" fn stop_running_clusters() {
    let Ok(running) = RUNNING.lock() else { return };
    // Every server first, then the directories: the pair's servers share one root.
    for server in running.iter().rev() {
        let mut stop = command(&server.bindir, "pg_ctl", server.run_as);
        stop.arg("-D")
            .arg(&server.data)
            .args(["stop", "-m", "immediate", "-w"]);
        let _ = stop.output();
    }
    for server in running.iter() {
        if let Some(root) = server.data.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

fn required() -> bool {
    std::env::var("ALLSOURCE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

fn command(bindir: &Path, program: &str, run_as: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(bindir.join(program));
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    command
}

/// Runs `command`, panicking with its output when it fails.
fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `postgres` user's ids, when running as root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("the postgres user exists (Debian's PostgreSQL server package)")
    };
    Some((id("-u"), id("-g")))
}

fn server_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bindir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    bindir.join("pg_basebackup").exists().then_some(bindir)
}

impl ReplicatedPair {
    /// The test binary's pair, started on first use; `None` (after a loud message) when the
    /// PostgreSQL server binaries are missing and PostgreSQL is not required.
    pub async fn shared() -> Option<&'static ReplicatedPair> {
        static PAIR: OnceCell<Option<ReplicatedPair>> = OnceCell::const_new();
        PAIR.get_or_init(|| async {
            tokio::task::spawn_blocking(Self::start)
                .await
                .expect("start the replicated pair")
        })
        .await
        .as_ref()
    }

    fn start() -> Option<Self> {
        let Some(bindir) = server_bindir() else {
            assert!(
                !required(),
                "PostgreSQL is required (ALLSOURCE_REQUIRE_POSTGRES=1) but its server binaries \
                 (pg_config --bindir, with pg_basebackup) are missing"
            );
            let _ = std::io::stderr().lock().write_all(
                b"\n\n*** SKIPPING the standby tests: no PostgreSQL server binaries \
                  (pg_config --bindir).\n\n",
            );
            return None;
        };
        let run_as = server_user();
        let root = tempfile::Builder::new()
            .prefix("allsource-pg-pair-")
            .tempdir()
            .expect("tempdir")
            .keep();
        if let Some((uid, gid)) = run_as {
            let path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
                .expect("a path without NUL");
            // SAFETY: `path` is a valid NUL-terminated string.
            let changed = unsafe { libc::chown(path.as_ptr(), uid, gid) };
            assert_eq!(changed, 0, "chown {}", root.display());
        }
        let primary_dir = root.join("primary");
        let standby_dir = root.join("standby");
        let primary_port = free_port();
        let standby_port = free_port();
        // SAFETY: registering a plain `extern "C" fn` without arguments.
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| unsafe {
            libc::atexit(stop_running_clusters);
        });

        let mut initdb = command(&bindir, "initdb", run_as);
        initdb.arg("-D").arg(&primary_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb");
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {primary_port}\n\
             unix_socket_directories = '{}'\nwal_level = replica\nmax_wal_senders = 4\n\
             fsync = off\nshared_buffers = 32MB\nmax_connections = 200\n",
            root.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(primary_dir.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .expect("configure the primary");
        start_server(&bindir, run_as, &primary_dir, "primary");
        RUNNING.lock().expect("lock").push(Running {
            bindir: bindir.clone(),
            data: primary_dir.clone(),
            run_as,
        });

        let mut basebackup = command(&bindir, "pg_basebackup", run_as);
        basebackup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&standby_dir)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        run(basebackup, "pg_basebackup");
        std::fs::OpenOptions::new()
            .append(true)
            .open(standby_dir.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(format!("\nport = {standby_port}\n").as_bytes()))
            .expect("configure the standby");
        start_server(&bindir, run_as, &standby_dir, "standby");
        RUNNING.lock().expect("lock").push(Running {
            bindir: bindir.clone(),
            data: standby_dir.clone(),
            run_as,
        });
        Some(Self {
            primary_port,
            standby_port,
        })
    }

    /// The URL of database `name` on the primary.
    pub fn primary_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.primary_port)
    }

    /// The URL of database `name` on the standby.
    pub fn standby_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.standby_port)
    }

    /// A fresh database on the primary, once the standby has it too.
    pub async fn database(&self) -> ReplicatedDatabase {
        let primary = TestDatabase::create_on(&self.primary_url("postgres")).await;
        let standby_url = self.standby_url(primary.name());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match PgConnection::connect(&standby_url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    break;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the standby never got database {}: {e}",
                        primary.name()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        ReplicatedDatabase {
            primary,
            standby_url,
        }
    }

    /// Pauses (`true`) or resumes the standby's WAL replay: a standby that falls behind.
    pub async fn pause_replay(&self, paused: bool) {
        let mut conn = PgConnection::connect(&self.standby_url("postgres"))
            .await
            .expect("connect to the standby");
        let statement = if paused {
            "SELECT pg_wal_replay_pause()::text"
        } else {
            "SELECT pg_wal_replay_resume()::text"
        };
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect("pause or resume replay");
        let _ = conn.close().await;
    }
}

fn start_server(bindir: &Path, run_as: Option<(u32, u32)>, data: &Path, what: &str) {
    let mut start = command(bindir, "pg_ctl", run_as);
    start
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(data.with_extension("log"))
        .args(["-w", "-t", "60", "start"]);
    let output = start.output().expect("run pg_ctl start");
    if !output.status.success() {
        let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
        panic!(
            "starting the {what} failed: {}\n{}\n{log}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

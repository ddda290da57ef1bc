//! `ServerProcess`: the real `allsource` binary as a child process, for tests that kill it for
//! real (SIGKILL), stop it with SIGTERM, or check its command line.
//!
//! The binary is built once per test run with the same cargo and profile as the tests (cargo
//! sets `CARGO` for the tests it runs); `ALLSOURCE_BIN` overrides the path. It is built by
//! `cargo build --workspace --tests --bins`, with the features `cargo test --workspace`
//! unifies: after that command only the binary itself is linked, where `-p allsource` alone
//! would resolve other features and rebuild dependencies in the middle of the test run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of the `allsource` binary, building it first if needed.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("ALLSOURCE_BIN") {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/suite-xxxx → target/<profile>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test executable lives in target/<profile>/deps")
                .to_path_buf();
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "--workspace", "--tests", "--bins"]);
            // The variables cargo sets for a test process (the package's name, manifest dir,
            // ...) are not this build's: build scripts that watch them (ring's does) would
            // see them changed and rebuild half the dependencies.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || name.starts_with("CARGO_CRATE_")
                    || name.starts_with("CARGO_BIN_")
                    || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"]
                        .contains(&name.as_ref())
                {
                    build.env_remove(name.as_ref());
                }
            }
            if release {
                build.arg("--release");
            }
            let status = build
                .status()
                .expect("run cargo build for the allsource binary");
            assert!(status.success(), "building the allsource binary failed");
            let binary = profile_dir.join(format!("allsource{}", std::env::consts::EXE_SUFFIX));
            assert!(binary.exists(), "{} was not built", binary.display());
            binary
        })
        .clone()
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `allsource serve` child process.
pub struct ServerProcess {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    /// The server's stdout and stderr (deleted with this value).
    log: tempfile::NamedTempFile,
}

impl ServerProcess {
    /// Starts `allsource serve` on `data_dir` with extra environment variables, and waits until
    /// it is ready.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(data_dir, env, &[]).await
    }

    /// [`start`](Self::start) with more arguments for `serve` (e.g. `--config FILE`).
    pub async fn start_with_args(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut last_error = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let log = tempfile::Builder::new()
                .prefix(&format!("allsource-{port}-{attempt}-"))
                .suffix(".log")
                .tempfile()
                .expect("log file");
            let log_file = log.reopen().expect("log file");
            let mut command = Command::new(binary());
            command
                .args(["serve", "--port", &port.to_string(), "--data-dir"])
                .arg(data_dir)
                .args(args)
                .env("ALLSOURCE__LOG__LEVEL", "info")
                // Tests that are not about authentication run without it; `env` may turn it on.
                .env("ALLSOURCE__AUTH__ENABLED", "false")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file);
            for (k, v) in env {
                command.env(k, v);
            }
            let child = command.spawn().expect("spawn allsource");
            let mut server = Self {
                child: Some(child),
                port,
                base: format!("http://127.0.0.1:{port}"),
                log,
            };
            match server.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return server,
                Err(e) => {
                    last_error = format!("{e}\n--- server log ---\n{}", server.log_text());
                    server.kill9();
                }
            }
        }
        panic!("allsource did not start: {last_error}");
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("exited early with {status}"));
            }
            if let Ok(r) = client
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err("not ready in time".into())
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `within` for the process to exit by itself (a failpoint's abort); `None` if
    /// it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGHUP (configuration reload).
    #[allow(unsafe_code)]
    pub fn hangup(&self) {
        let child = self.child.as_ref().expect("running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: `kill` only sends a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGHUP);
        }
    }

    /// SIGTERM, then waits for the exit.
    #[allow(unsafe_code)]
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: `kill` only sends a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("allsource did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

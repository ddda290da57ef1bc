//! The docs page in a real browser: Debian's Chromium, headless, opens `/docs` of a `--dev`
//! server, runs Swagger UI (whose assets the binary serves: this machine's network reaches no
//! CDN, so a page that needed one would render nothing), and must show the API's operations;
//! a screenshot is kept as an artifact (`target/tmp/artifacts/docs-page.png`).
//!
//! CI installs Chromium (`apt-get install chromium`) and sets `ALLSOURCE_REQUIRE_CHROMIUM`;
//! elsewhere the test says that it did not run.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allsource_tests::cdp::{CHROMIUM, HEADLESS, chromium_available};
use allsource_tests::process::ServerProcess;

/// What a browser run printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `url` with `args` in a fresh profile, with the network features
/// that would call out (and fail on a closed network) turned off; JavaScript gets up to 15 s
/// of virtual time to render. Its output goes to files (a DOM dump is larger than a pipe's
/// buffer, and a browser blocked on a full pipe never exits).
fn chromium(profile: &Path, url: &str, args: &[&str]) -> Run {
    let out_path = profile.join("stdout.txt");
    let err_path = profile.join("stderr.txt");
    let mut child = Command::new(CHROMIUM)
        .args(HEADLESS)
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--window-size=1280,1600",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.join("profile").display()
        ))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start chromium");
    // Bounded: a browser that hangs fails the test instead of the CI run.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium did not finish in 90 s:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    Run {
        success: status.success(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docs_page_renders_every_operation_in_a_real_browser() {
    if !chromium_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path(), &[("ALLSOURCE__DEV", "true")]).await;
    let url = format!("{}/docs", server.base);
    let profile = tempfile::tempdir().expect("profile dir");

    // The DOM after Swagger UI has run: the document's title and the operations, by path.
    let dom_run = {
        let (profile, url) = (profile.path().to_owned(), url.clone());
        tokio::task::spawn_blocking(move || chromium(&profile, &url, &["--dump-dom"]))
            .await
            .expect("chromium task")
    };
    let (dom, log) = (&dom_run.stdout, &dom_run.stderr);
    assert!(dom_run.success, "chromium failed:\n{log}");
    assert!(
        dom.contains("AllSource"),
        "the document's title is shown:\n{dom}\n{log}"
    );
    for path in [
        "/api/v1/events",
        "/api/v1/entities/{entity_id}/state",
        "/metrics",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "the operation {path} is rendered:\n{log}"
        );
    }
    let operations = dom.matches("class=\"opblock opblock-").count();
    assert!(operations >= 50, "{operations} operations rendered:\n{log}");
    // What the page's scripts logged: nothing went wrong.
    for line in log.lines().filter(|l| l.contains("CONSOLE")) {
        assert!(
            !line.contains("Uncaught") && !line.contains("Failed to load"),
            "the page logged an error: {line}"
        );
    }

    // The screenshot, kept for people to look at.
    let shot = artifacts().join("docs-page.png");
    let _ = std::fs::remove_file(&shot);
    let shot_run = {
        let (profile, url, arg) = (
            profile.path().to_owned(),
            url.clone(),
            format!("--screenshot={}", shot.display()),
        );
        tokio::task::spawn_blocking(move || chromium(&profile, &url, &[&arg]))
            .await
            .expect("chromium task")
    };
    assert!(shot_run.success, "chromium failed:\n{}", shot_run.stderr);
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // A blank page compresses to a few kilobytes; a rendered one does not.
    assert!(
        png.len() > 30_000,
        "{} bytes: the page looks blank",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

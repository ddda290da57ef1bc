//! A headless Chromium driven through the Chrome DevTools Protocol, for the browser tests:
//! open a page at a size, run JavaScript in it, type and press keys as a user would (real
//! input events), wait for a condition, take screenshots, and collect everything the page
//! logged as an error (uncaught exceptions, `console.error`, failed loads, CSP violations).
//!
//! The protocol is JSON over one WebSocket; the few commands used here are sent directly
//! (the `tokio-tungstenite` client the other black-box tests use), which keeps the test build
//! free of a browser-automation crate and its code generator.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where Debian's package puts the browser.
pub const CHROMIUM: &str = "chromium";

/// Headless, in a container, and with the features that would call out (and fail on a closed
/// network) turned off: the flags of every browser run of the tests.
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
];

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Replies = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Whether Chromium is installed; without it, a test says it did not run, unless
/// `ALLSOURCE_REQUIRE_CHROMIUM` is set (CI), when it fails.
pub fn chromium_available() -> bool {
    let found = Command::new(CHROMIUM)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("ALLSOURCE_REQUIRE_CHROMIUM").is_none(),
            "chromium is required here (apt-get install chromium; .ci/run does)"
        );
        eprintln!("chromium not found: the browser test did not run (CI runs it)");
    }
    found
}

/// A running headless Chromium with a fresh profile.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    sink: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    replies: Replies,
    /// Every event the browser sent: `{"method", "params", "sessionId"}`.
    events: Arc<Mutex<Vec<Value>>>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl Browser {
    /// Starts Chromium headless, with the network features that would call out turned off,
    /// and connects to its DevTools endpoint.
    pub async fn launch() -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let child = Command::new(CHROMIUM)
            .args(HEADLESS)
            .args(["--remote-debugging-port=0", "--remote-allow-origins=*"])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("data").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chromium");
        let endpoint = devtools_endpoint(&profile.path().join("data"));
        let (socket, _) = tokio_tungstenite::connect_async(&endpoint)
            .await
            .expect("connect to DevTools");
        let (sink, mut stream) = socket.split();
        let replies: Replies = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let reader = {
            let (replies, events) = (replies.clone(), events.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = value.get("id").and_then(Value::as_u64) {
                        if let Some(reply) = replies.lock().remove(&id) {
                            let _ = reply.send(value);
                        }
                    } else {
                        events.lock().push(value);
                    }
                }
            })
        };
        Self {
            child,
            _profile: profile,
            sink: tokio::sync::Mutex::new(sink),
            replies,
            events,
            next_id: AtomicU64::new(1),
            reader,
        }
    }

    /// Sends one command (to a page when `session` is given) and returns its `result`.
    ///
    /// # Panics
    /// When the browser answers with an error or not within [`COMMAND_TIMEOUT`].
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.replies.lock().insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::Text(command.to_string().into()))
            .await
            .expect("send a DevTools command");
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer in {COMMAND_TIMEOUT:?}"))
            .expect("the browser closed the connection");
        if let Some(error) = reply.get("error") {
            panic!("{method} failed: {error}");
        }
        reply["result"].clone()
    }

    /// A new tab of `width` × `height` CSS pixels (`mobile`: a phone's viewport and touch).
    pub async fn new_page(&self, width: u32, height: u32, mobile: bool) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        let page = Page {
            browser: self,
            session,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the DevTools WebSocket URL the browser writes into its profile once it listens.
fn devtools_endpoint(data_dir: &Path) -> String {
    let file = data_dir.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{port}{path}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete'", "the page loads")
            .await;
    }

    /// The value of a JavaScript expression (promises awaited).
    ///
    /// # Panics
    /// When it throws.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("{expression} threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Waits up to 15 s until `condition` (a JavaScript expression) is truthy; returns its
    /// value. `what` says what is awaited, for the failure message.
    pub async fn wait_for(&self, condition: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        let guarded =
            format!("(() => {{ try {{ return ({condition}); }} catch (e) {{ return null; }} }})()");
        loop {
            let value = self.eval(&guarded).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let text = self
                    .eval("document.body ? document.body.innerText.slice(0, 3000) : ''")
                    .await;
                panic!(
                    "timed out waiting until {what} ({condition}).\nThe page shows:\n{}\nLogged errors: {:#?}",
                    text.as_str().unwrap_or_default(),
                    self.errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `selector` names (after scrolling it into view).
    pub async fn click(&self, selector: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const el = document.querySelector({sel}); if (!el) return false; \
                 el.scrollIntoView({{block: 'center'}}); el.click(); return true; }})()",
                sel = json!(selector)
            ))
            .await;
        assert_eq!(found, json!(true), "no element {selector} to click");
    }

    /// Focuses `selector`, empties it, and types `text` with the browser's text input.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const el = document.querySelector({sel}); if (!el) return false; \
                 el.focus(); if (el.select) el.select(); return true; }})()",
                sel = json!(selector)
            ))
            .await;
        assert_eq!(found, json!(true), "no element {selector} to type into");
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Presses a key (`Enter`, `Tab`, `Home`, `End`, `ArrowRight`, ...) on the focused element.
    pub async fn press(&self, key: &str) {
        let code = match key {
            "Enter" => 13,
            "Tab" => 9,
            "Home" => 36,
            "End" => 35,
            "ArrowLeft" => 37,
            "ArrowRight" => 39,
            "Escape" => 27,
            other => panic!("no key code for {other}"),
        };
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
                       "nativeVirtualKeyCode": code}),
            )
            .await;
            if kind == "rawKeyDown" && key == "Enter" {
                self.call(
                    "Input.dispatchKeyEvent",
                    json!({"type": "char", "key": "Enter", "text": "\r", "unmodifiedText": "\r"}),
                )
                .await;
            }
        }
    }

    /// A PNG of the whole page (beyond the viewport), written to `path`.
    pub async fn screenshot(&self, path: &Path) -> PathBuf {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        std::fs::write(path, &png).expect("write the screenshot");
        path.to_owned()
    }

    /// Everything this page logged as an error so far: uncaught exceptions, `console.error`
    /// and `console.assert` failures, and the browser's own error entries (a failed load, a
    /// refused request, a Content Security Policy violation).
    pub fn errors(&self) -> Vec<String> {
        self.browser
            .events
            .lock()
            .iter()
            .filter(|e| e["sessionId"].as_str() == Some(self.session.as_str()))
            .filter_map(|e| {
                let params = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(format!(
                        "uncaught: {}",
                        params["exceptionDetails"]["exception"]["description"]
                            .as_str()
                            .or(params["exceptionDetails"]["text"].as_str())
                            .unwrap_or("?")
                    )),
                    "Runtime.consoleAPICalled"
                        if matches!(params["type"].as_str(), Some("error" | "assert")) =>
                    {
                        Some(format!("console.{}: {}", params["type"], params["args"]))
                    }
                    "Log.entryAdded" if params["entry"]["level"] == "error" => Some(format!(
                        "log: {} {}",
                        params["entry"]["text"].as_str().unwrap_or("?"),
                        params["entry"]["url"].as_str().unwrap_or("")
                    )),
                    _ => None,
                }
            })
            .collect()
    }
}

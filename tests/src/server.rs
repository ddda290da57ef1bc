//! `TestServer`: the real `Application` (the same code `allsource serve` runs) started
//! in-process on port 0 with a temporary data dir.

use std::collections::HashMap;
use std::time::Duration;

use allsource::{Application, Settings};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and a client for it.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    dir: Option<tempfile::TempDir>,
}

/// The signing secret of [`TestServer::start_with_auth`].
pub const TEST_JWT_SECRET: &str = "test-secret-0123456789-0123456789-0123456789";
/// The bootstrap admin of [`TestServer::start_with_auth`].
pub const ADMIN_USERNAME: &str = "root";
pub const ADMIN_PASSWORD: &str = "root password for tests";

/// Turns authentication on with the test secret and bootstrap admin.
pub fn enable_auth(settings: &mut Settings) {
    settings.auth.enabled = true;
    settings.auth.jwt.secret = TEST_JWT_SECRET.into();
    settings.auth.bootstrap_admin.username = ADMIN_USERNAME.into();
    settings.auth.bootstrap_admin.password = ADMIN_PASSWORD.into();
}

/// With this environment variable set, every test server seals a WAL segment every 4 KiB and
/// caches no block, so that nearly every read of an event goes to its Parquet file:
/// `ALLSOURCE_TEST_COLD_READS=1 cargo test --workspace --test suite`.
pub const COLD_READS: &str = "ALLSOURCE_TEST_COLD_READS";

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestServer {
    /// Embedded backend, durability `none`, default limits.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with settings adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, adjust).await
    }

    /// With authentication on: a signing secret ([`TEST_JWT_SECRET`], kid `default`) and the
    /// bootstrap admin [`ADMIN_USERNAME`] / [`ADMIN_PASSWORD`] of tenant `default`.
    pub async fn start_with_auth(adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::start_with(|settings| {
            enable_auth(settings);
            adjust(settings);
        })
        .await
    }

    /// Starts on an existing data dir (for restarts).
    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::for_tests(dir.path());
        settings.storage.durability = allsource::settings::Durability::None;
        if std::env::var_os(COLD_READS).is_some() {
            settings.storage.segment_bytes = 4096;
            settings.storage.cache_bytes = 0;
        }
        adjust(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("build the application");
        let base = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let server = Self {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            dir: Some(dir),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..400 {
            if let Ok(r) = self.client.get(self.url("/health/ready")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server never became ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Reply {
        read(self.client.get(self.url(path)).send().await.expect("GET")).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        read(
            self.client
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: String) -> Reply {
        read(
            self.client
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    /// A request with an optional `Authorization: Bearer` token and optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        read(request.send().await.expect("request")).await
    }

    /// Logs in (the login must succeed): the access token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let reply = self
            .post_json(
                "/api/v1/auth/login",
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Stops gracefully and gives back the data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("clean shutdown");
        }
        self.dir.take().expect("the data dir is kept until stop")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads a response whole; a non-JSON body becomes a JSON string.
pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

/// Logs in as the bootstrap admin, creates the tenants `acme` and `globex` (professional) with
/// a developer each (`acme-dev`, `globex-dev`), and returns their access tokens by tenant.
pub async fn tenant_tokens(server: &TestServer) -> HashMap<&'static str, String> {
    let root = server.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let mut tokens = HashMap::new();
    for tenant in ["acme", "globex"] {
        let r = server
            .call(
                reqwest::Method::POST,
                "/api/v1/tenants",
                Some(&root),
                Some(&json!({"id": tenant, "tier": "professional"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = server
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/users",
                Some(&root),
                Some(&json!({"username": format!("{tenant}-dev"), "password": "a long password 123", "role": "developer", "tenant_id": tenant})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    tokens.insert(
        "acme",
        server.login("acme-dev", "a long password 123").await,
    );
    tokens.insert(
        "globex",
        server.login("globex-dev", "a long password 123").await,
    );
    tokens
}

//! `GET /console` (the web console's page) and `GET /console/{*file}` (its scripts and style).
//!
//! The console is plain ES modules and one style sheet under `presentation/console/`,
//! compiled into the binary here with `include_bytes!`: there is no build step, nothing is
//! downloaded at build time, and the page loads nothing from elsewhere (its Content Security
//! Policy allows this origin only). The routes are public, like `/docs`: the files describe
//! no one's data; the console signs in and calls the REST API with the user's credential,
//! so tenancy, roles, quotas and policies hold as for any client.
//!
//! Adding a file to the console: put it under `presentation/console/` and add it to
//! [`ASSETS`]; a unit test fails when a file there is not served.

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::access::Access::Public;
use crate::access::AuthMode;
use crate::error::ApiError;
use crate::extract::PathParam;
use crate::routes::{Route, Routes};

/// The console routes.
pub fn routes() -> Routes {
    Routes::new()
        .add(
            Route::get("/console", Public)
                .summary("The web console")
                .media_type("text/html"),
            page,
        )
        .add(
            Route::get("/console/{*file}", Public)
                .summary("A script or style sheet of the web console")
                .media_type("*/*"),
            asset,
        )
}

/// One file of the console.
struct Asset {
    /// Its path under `/console/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../console/", $path)),
        }
    };
}

/// Every file the console is made of, but the page itself.
const ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("chart.js", JS),
    asset!("console.css", CSS),
    asset!("pages/overview.js", JS),
    asset!("pages/entities.js", JS),
    asset!("pages/tail.js", JS),
    asset!("pages/query.js", JS),
    asset!("pages/analytics.js", JS),
    asset!("pages/schemas.js", JS),
    asset!("pages/projections.js", JS),
    asset!("pages/consumers.js", JS),
    asset!("pages/admin.js", JS),
];

/// The page, as written (authentication on).
const PAGE: &str = include_str!("../../console/index.html");
/// What the page says about authentication; the console skips signing in when it is off.
const AUTH_ON: &str = r#"<meta name="allsource-auth" content="on">"#;
const AUTH_OFF: &str = r#"<meta name="allsource-auth" content="off">"#;

/// Scripts, styles, connections (the API and its WebSocket) and images from this origin only;
/// no framing, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn page_for(auth: &AuthMode) -> &'static str {
    static PAGE_AUTH_OFF: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| PAGE.replacen(AUTH_ON, AUTH_OFF, 1));
    match auth {
        AuthMode::Disabled => PAGE_AUTH_OFF.as_str(),
        AuthMode::Enabled(_) => PAGE,
    }
}

fn headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        // The files change with the binary: revalidate rather than keep a stale console.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// `GET /console`.
pub async fn page(State(state): State<AppState>) -> Response {
    (headers("text/html; charset=utf-8"), page_for(&state.auth)).into_response()
}

/// `GET /console/{*file}`: one of [`ASSETS`], or the page for `index.html`; else 404.
pub async fn asset(
    State(state): State<AppState>,
    PathParam(file): PathParam,
) -> Result<Response, ApiError> {
    if file.is_empty() || file == "index.html" {
        return Ok(page(State(state)).await);
    }
    let found = ASSETS
        .iter()
        .find(|a| a.path == file)
        .ok_or_else(|| ApiError::not_found(format!("the console has no file {file:?}")))?;
    Ok((headers(found.content_type), found.body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `presentation/console/` is served, and every served file exists.
    #[test]
    fn every_console_file_is_served() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read the console dir") {
                let path = entry.expect("a dir entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&root).expect("under the root");
                    on_disk.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.retain(|p| p != "index.html");
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served, "presentation/console/ and ASSETS differ");
    }

    /// The page tells the console whether to ask for a sign-in.
    #[test]
    fn the_page_says_whether_authentication_is_on() {
        assert!(
            PAGE.contains(AUTH_ON),
            "index.html declares authentication on"
        );
        let off = page_for(&AuthMode::Disabled);
        assert!(off.contains(AUTH_OFF) && !off.contains(AUTH_ON));
    }

    /// Every module the page and the shell import is one that is served.
    #[test]
    fn every_import_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in text.lines().filter(|l| l.contains(" from \"")) {
                let target = line
                    .split(" from \"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .expect("an import target");
                let mut parts: Vec<&str> = if dir.is_empty() {
                    Vec::new()
                } else {
                    dir.split('/').collect()
                };
                for part in target.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        other => parts.push(other),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    served.contains(&resolved.as_str()),
                    "{} imports {target}, which is not served",
                    a.path
                );
            }
        }
    }
}
